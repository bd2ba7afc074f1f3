"""Drift per scored batch: the score's and each feature's PSI against the scoring model's
reference, written by the worker that finishes the batch (one row per batch).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_drift",
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("platform_id", sa.Integer, sa.ForeignKey("platforms.id"), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("score_psi", sa.Float, nullable=False),
        sa.Column("feature_psi", sa.JSON, nullable=False),
        sa.Column("warning", sa.Boolean, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False))
    op.create_index("ix_batch_drift_platform", "batch_drift", ["platform_id", "computed_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_drift_platform", "batch_drift")
    op.drop_table("batch_drift")
