"""The service's tables (SQLAlchemy 2 Core): what the Alembic migrations create.

Only `serving.store` and the service's own query modules use them; schema changes are new
revisions under `serving/migrations/versions/`.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ts = sa.DateTime(timezone=True)
platforms = sa.Table(
    "platforms", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", ts, nullable=False),
    sa.Column("revoked_at", ts),
)
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("platform_id", sa.ForeignKey("platforms.id"), nullable=False),
    sa.Column("lookup", sa.String(16), nullable=False, index=True),
    sa.Column("key_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", ts, nullable=False),
    sa.Column("revoked_at", ts),
)
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", ts, nullable=False),
    sa.Column("disabled_at", ts),
)
batches = sa.Table(
    "batches", metadata,
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("platform_id", sa.ForeignKey("platforms.id"), nullable=False, index=True),
    sa.Column("status", sa.String(10), nullable=False, index=True),
    sa.Column("format", sa.String(10), nullable=False),
    sa.Column("upload_path", sa.String(500), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("rows", sa.BigInteger), sa.Column("scored", sa.BigInteger),
    sa.Column("rejected", sa.BigInteger), sa.Column("flagged", sa.BigInteger),
    sa.Column("model_version", sa.String(100)),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_expires_at", ts),
    sa.Column("submitted_at", ts, nullable=False),
    sa.Column("finished_at", ts),
    sa.UniqueConstraint("platform_id", "idempotency_key"),
)
CASE_SNAPSHOT = (  # the listing as submitted, copied onto its case
    ("seller_id", sa.String(200)), ("title", sa.Text), ("description", sa.Text),
    ("brand", sa.String(200)), ("category", sa.String(300)), ("price", sa.Float),
    ("list_price", sa.Float), ("currency", sa.String(3)), ("listed_at", ts),
    ("image_hashes", sa.JSON), ("ships_from", sa.String(10)),
    ("seller_registered_at", ts), ("seller_country", sa.String(10)),
    ("seller_rating", sa.Float), ("seller_review_count", sa.BigInteger),
    ("seller_verified", sa.Boolean), ("seller_contact_hash", sa.String(200)),
)
cases = sa.Table(
    "cases", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("platform_id", sa.ForeignKey("platforms.id"), nullable=False, index=True),
    sa.Column("batch_id", sa.String(32), nullable=False),
    sa.Column("listing_id", sa.String(200), nullable=False),
    *(sa.Column(name, kind) for name, kind in CASE_SNAPSHOT),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # flag | audit
    sa.Column("status", sa.String(10), nullable=False),  # open | claimed | decided
    sa.Column("claimed_by", sa.ForeignKey("users.id")),
    sa.Column("created_at", ts, nullable=False),
    sa.UniqueConstraint("batch_id", "listing_id"),
)
decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("case_id", sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("review", sa.Integer, nullable=False),  # 1 = first decision, 2 = second review
    sa.Column("verdict", sa.String(20), nullable=False),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("decided_at", ts, nullable=False),
)
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", ts, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("entity", sa.String(20), nullable=False),
    sa.Column("entity_id", sa.String(200), nullable=False),
    sa.Column("platform_id", sa.Integer),
    sa.Column("before", sa.JSON), sa.Column("after", sa.JSON),
)
batch_drift = sa.Table(  # one row per scored batch (serving.monitoring)
    "batch_drift", metadata,
    sa.Column("batch_id", sa.ForeignKey("batches.id"), primary_key=True),
    sa.Column("platform_id", sa.ForeignKey("platforms.id"), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("score_psi", sa.Float, nullable=False),
    sa.Column("feature_psi", sa.JSON, nullable=False),  # {feature: PSI}
    sa.Column("warning", sa.Boolean, nullable=False),
    sa.Column("computed_at", ts, nullable=False),
    sa.Column("schema", sa.String(200)),  # the model measured against: full or a variant
    # among the flagged listings (null: a bundle whose reference has no flagged population;
    # flagged_score_psi also when the batch flagged nothing)
    sa.Column("flagged_rows", sa.BigInteger),
    sa.Column("flagged_reference_rows", sa.BigInteger),
    sa.Column("flagged_score_psi", sa.Float),
    sa.Column("flag_rate", sa.Float),
    sa.Column("reference_flag_rate", sa.Float),
    sa.Index("ix_batch_drift_platform", "platform_id", "computed_at"),
)
