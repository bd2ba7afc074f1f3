"""Drift against the model that scored the batch (`schema`: the main model or a schema
variant), and among the flagged listings: how many were flagged in the batch and in the
reference, their scores' PSI against the reference's flagged listings, and the batch's and the
reference's flag rates (null for batches scored by a bundle whose reference has no flagged
population).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("schema", sa.String(200)), ("flagged_rows", sa.BigInteger),
           ("flagged_reference_rows", sa.BigInteger), ("flagged_score_psi", sa.Float),
           ("flag_rate", sa.Float), ("reference_flag_rate", sa.Float))


def upgrade() -> None:
    with op.batch_alter_table("batch_drift") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_drift") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
