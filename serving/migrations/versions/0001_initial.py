"""The first schema: platforms and keys, users, batches, cases, decisions, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


def _platform() -> sa.Column:
    return sa.Column("platform_id", sa.Integer, sa.ForeignKey("platforms.id"), nullable=False,
                     index=True)


def upgrade() -> None:
    op.create_table(
        "platforms", _id(),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False), sa.Column("revoked_at", TS))
    op.create_table(
        "api_keys", _id(), _platform(),
        sa.Column("lookup", sa.String(16), nullable=False, index=True),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False), sa.Column("revoked_at", TS))
    op.create_table(
        "users", _id(),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False), sa.Column("disabled_at", TS))
    _batches()
    _cases()
    op.create_table(
        "decisions", _id(),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("review", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("decided_at", TS, nullable=False))
    op.create_table(
        "audit_log", _id(),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("entity", sa.String(20), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("platform_id", sa.Integer),
        sa.Column("before", sa.JSON), sa.Column("after", sa.JSON))


def _batches() -> None:
    op.create_table(
        "batches",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True), _platform(),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("upload_path", sa.String(500), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("rows", sa.BigInteger), sa.Column("scored", sa.BigInteger),
        sa.Column("rejected", sa.BigInteger), sa.Column("flagged", sa.BigInteger),
        sa.Column("model_version", sa.String(100)),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_expires_at", TS),
        sa.Column("submitted_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.UniqueConstraint("platform_id", "idempotency_key"))


def _cases() -> None:
    op.create_table(
        "cases", _id(), _platform(),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("listing_id", sa.String(200), nullable=False),
        sa.Column("seller_id", sa.String(200)),
        sa.Column("title", sa.Text), sa.Column("description", sa.Text),
        sa.Column("brand", sa.String(200)), sa.Column("category", sa.String(300)),
        sa.Column("price", sa.Float), sa.Column("list_price", sa.Float),
        sa.Column("currency", sa.String(3)), sa.Column("listed_at", TS),
        sa.Column("image_hashes", sa.JSON), sa.Column("ships_from", sa.String(10)),
        sa.Column("seller_registered_at", TS), sa.Column("seller_country", sa.String(10)),
        sa.Column("seller_rating", sa.Float), sa.Column("seller_review_count", sa.BigInteger),
        sa.Column("seller_verified", sa.Boolean), sa.Column("seller_contact_hash", sa.String(200)),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("claimed_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("batch_id", "listing_id"))
    op.create_index("ix_cases_seller", "cases", ["platform_id", "seller_id"])


def downgrade() -> None:
    for table in ("audit_log", "decisions", "cases", "batches", "users", "api_keys", "platforms"):
        op.drop_table(table)
