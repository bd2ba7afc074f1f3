"""The officers' console: sessions and bearer tokens, failed logins, second reviews,
takedowns (four-eyes), notices with their DSA statements, and the queue's indexes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _user(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer, sa.ForeignKey("users.id"), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "user_tokens", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        _user("user_id"), sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False), sa.Column("expires_at", TS, nullable=False))
    op.create_table(
        "login_failures", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_name", sa.String(100), nullable=False),
        sa.Column("at", TS, nullable=False))
    op.create_index("ix_login_failures_user", "login_failures", ["user_name", "at"])
    op.create_table(
        "second_reviews",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), primary_key=True),
        _user("requested_by"), _user("first_user_id"),
        sa.Column("requested_at", TS, nullable=False), sa.Column("done_at", TS))
    op.create_table(
        "takedowns", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform_id", sa.Integer, sa.ForeignKey("platforms.id"), nullable=False),
        sa.Column("seller_id", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        _user("requested_by"), sa.Column("requested_at", TS, nullable=False),
        _user("approved_by", nullable=True), sa.Column("approved_at", TS))
    op.create_table(
        "notices", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform_id", sa.Integer, sa.ForeignKey("platforms.id"), nullable=False),
        sa.Column("listing_id", sa.String(200)), sa.Column("seller_id", sa.String(200)),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("statement", sa.JSON, nullable=False))
    op.create_index("ix_notices_platform", "notices", ["platform_id", "id"])
    op.create_index("ix_cases_queue", "cases", ["status", "kind", "score", "id"])
    op.create_index("ix_cases_contact", "cases", ["platform_id", "seller_contact_hash"])
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])


def downgrade() -> None:
    for name, table in (("ix_decisions_decided_at", "decisions"),
                        ("ix_cases_contact", "cases"), ("ix_cases_queue", "cases")):
        op.drop_index(name, table)
    for table in ("notices", "takedowns", "second_reviews", "login_failures", "user_tokens"):
        op.drop_table(table)
