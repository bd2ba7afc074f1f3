"""Alembic migrations of the service's database, applied programmatically (`upgrade`)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

_PG_LOCK = 0x6B6E6F63  # advisory lock id: one process migrates at a time


def upgrade(engine: Engine) -> None:
    """Create the database's tables or bring them to the newest revision. Runs in one
    transaction under a lock, so processes starting together do not race."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
