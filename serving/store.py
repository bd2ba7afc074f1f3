"""The service's database: the queries on the platforms' data (SQLAlchemy 2 Core; the tables
are in `serving/tables.py`).

SQLite (WAL, busy timeout) is the embedded default, PostgreSQL comes by URL. Every query on a
platform's data takes the `Platform` as an argument, so isolation shows in each signature. A
state change and its audit row commit in one transaction (`_write`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy.engine import Connection, Engine

from serving.tables import api_keys, audit_log, batches, cases, platforms, users
from serving.tables import decisions as decisions  # re-exported for the officers' modules

DEFAULT_URL = "sqlite:///var/knockoff.db"
ROLES = ("officer", "supervisor", "admin")
KEY_PREFIX = "ko_"
PLATFORM_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")  # a path segment as it is
_HASHER = PasswordHasher()  # argon2id with the library's recommended parameters


class StoreError(Exception):
    """A request the data does not allow (unknown name, duplicate, bad role): says why."""


class QueueFull(StoreError):
    """The platform already has the maximum number of queued batches."""


class IdempotencyConflict(StoreError):
    """The Idempotency-Key was used before with another body."""


@dataclass(frozen=True)
class Platform:
    id: int
    name: str


@dataclass(frozen=True)
class Batch:
    id: str
    platform_id: int
    status: str
    format: str
    upload_path: str
    body_sha256: str
    idempotency_key: str | None
    rows: int | None
    scored: int | None
    rejected: int | None
    flagged: int | None
    model_version: str | None
    error: str | None
    attempts: int
    submitted_at: datetime
    finished_at: datetime | None


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were written as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def database_url(url: str | None = None) -> str:
    return url or os.environ.get("KNOCKOFF_DATABASE_URL") or DEFAULT_URL


def connect(url: str | None = None) -> Engine:
    """An engine on the database, created and migrated to the newest schema if needed."""
    from serving.migrations import upgrade

    url = database_url(url)
    shown = "URL"
    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
        engine = _sqlite_engine(url) if url.startswith("sqlite") else sa.create_engine(
            url, pool_pre_ping=True)
        upgrade(engine)
    except (sa.exc.ArgumentError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise StoreError(f"cannot open the database {shown}: {str(exc).splitlines()[0]}"
                         ) from None
    return engine


def _sqlite_engine(url: str) -> Engine:
    path = sa.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # connections stay open (the pool outgrows the API thread pool): opening one runs PRAGMAs
    engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_size=48, max_overflow=16)

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see on_begin)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON",
                       "synchronous=NORMAL"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        # writers take the lock up front: a deferred transaction that upgrades to a writer
        # fails with "database is locked" instead of waiting for the busy timeout
        mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """One write transaction (the change and its audit rows)."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        yield conn


def _audit(conn: Connection, actor: str, action: str, entity: str, entity_id: object,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
           platform_id: int | None = None) -> None:
    conn.execute(audit_log.insert().values(
        at=now(), actor=actor, action=action, entity=entity, entity_id=str(entity_id),
        platform_id=platform_id, before=before, after=after))


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_platform(engine: Engine, name: str, actor: str) -> str:
    """Create a platform with a new API key; returns the key (shown once, stored hashed)."""
    if not PLATFORM_NAME.fullmatch(name):
        raise StoreError(f"platform name {name!r}: use 1 to 100 letters, digits, '_' or '-' "
                         "(it appears in URLs such as /v1/sellers/NAME/...)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = _key_hash(key)
    with _write(engine) as conn:
        if conn.scalar(sa.select(platforms.c.id).where(platforms.c.name == name)) is not None:
            raise StoreError(f"platform {name!r} already exists")
        pid = conn.execute(platforms.insert().values(name=name, created_at=now())
                           ).inserted_primary_key[0]
        conn.execute(api_keys.insert().values(platform_id=pid, lookup=digest[:16],
                                              key_sha256=digest, created_at=now()))
        _audit(conn, actor, "platform.add", "platform", name, after={"name": name},
               platform_id=pid)
    return key


def list_platforms(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(platforms).order_by(platforms.c.name)).mappings()
        return [{"platform": r["name"], "created_at": _utc(r["created_at"]),
                 "revoked": r["revoked_at"] is not None} for r in rows]


def revoke_platform(engine: Engine, name: str, actor: str) -> None:
    """Revoke a platform and all its keys (they answer 401 from now on)."""
    with _write(engine) as conn:
        pid = conn.scalar(sa.select(platforms.c.id).where(platforms.c.name == name))
        if pid is None:
            raise StoreError(f"no platform named {name!r}")
        at = now()
        conn.execute(platforms.update().where(platforms.c.id == pid).values(revoked_at=at))
        conn.execute(api_keys.update().where(api_keys.c.platform_id == pid,
                                             api_keys.c.revoked_at.is_(None)
                                             ).values(revoked_at=at))
        _audit(conn, actor, "platform.revoke", "platform", name, {"revoked": False},
               {"revoked": True}, pid)


def platform_for_key(engine: Engine, key: str) -> Platform | None:
    """The platform an API key belongs to, or None (compared in constant time)."""
    digest = _key_hash(key)
    query = (sa.select(platforms.c.id, platforms.c.name, api_keys.c.key_sha256)
             .join(api_keys, api_keys.c.platform_id == platforms.c.id)
             .where(api_keys.c.lookup == digest[:16], api_keys.c.revoked_at.is_(None),
                    platforms.c.revoked_at.is_(None)))
    with engine.connect() as conn:
        for row in conn.execute(query):
            if hmac.compare_digest(row.key_sha256, digest):
                return Platform(row.id, row.name)
    return None


def platform_named(engine: Engine, name: str) -> Platform | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(platforms.c.id, platforms.c.name)
                           .where(platforms.c.name == name)).first()
    return Platform(row.id, row.name) if row else None


def add_user(engine: Engine, name: str, role: str, password: str, actor: str) -> None:
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 100 or not password:
        raise StoreError("a user needs a name (1 to 100 characters) and a non-empty password")
    with _write(engine) as conn:
        if conn.scalar(sa.select(users.c.id).where(users.c.name == name)) is not None:
            raise StoreError(f"user {name!r} already exists")
        uid = conn.execute(users.insert().values(
            name=name, role=role, password_hash=_HASHER.hash(password), created_at=now())
        ).inserted_primary_key[0]
        _audit(conn, actor, "user.add", "user", uid, after={"name": name, "role": role})


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(users).order_by(users.c.name)).mappings()
        return [{"user": r["name"], "role": r["role"], "created_at": _utc(r["created_at"]),
                 "disabled": r["disabled_at"] is not None} for r in rows]


def disable_user(engine: Engine, name: str, actor: str) -> None:
    with _write(engine) as conn:
        uid = conn.scalar(sa.select(users.c.id).where(users.c.name == name))
        if uid is None:
            raise StoreError(f"no user named {name!r}")
        conn.execute(users.update().where(users.c.id == uid).values(disabled_at=now()))
        _audit(conn, actor, "user.disable", "user", uid, {"disabled": False}, {"disabled": True})


def verify_user(engine: Engine, name: str, password: str) -> dict[str, Any] | None:
    """The enabled user with this password, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name,
                                                  users.c.disabled_at.is_(None))).mappings().first()
    if row is None:
        return None
    try:
        _HASHER.verify(row["password_hash"], password)
    except VerificationError:
        return None
    return {"id": row["id"], "user": row["name"], "role": row["role"]}


def _batch(row: Any) -> Batch:
    values = {name: row[name] for name in Batch.__dataclass_fields__}
    values["submitted_at"] = _utc(values["submitted_at"])
    values["finished_at"] = _utc(values["finished_at"])
    return Batch(**values)


def _batch_query(platform: Platform) -> sa.Select[Any]:
    return sa.select(batches).where(batches.c.platform_id == platform.id)


def batch_by_key(engine: Engine, platform: Platform, key: str) -> Batch | None:
    with engine.connect() as conn:
        row = conn.execute(_batch_query(platform).where(batches.c.idempotency_key == key)
                           ).mappings().first()
    return _batch(row) if row else None


def create_batch(engine: Engine, platform: Platform, batch_id: str, fmt: str, upload_path: str,
                 body_sha256: str, idempotency_key: str | None, max_queued: int
                 ) -> tuple[Batch, bool]:
    """Queue a batch; returns (batch, created). An Idempotency-Key seen before with the same
    body gives back that batch (created False); with another body it is a conflict."""
    with _write(engine) as conn:
        if idempotency_key is not None:
            row = conn.execute(_batch_query(platform).where(
                batches.c.idempotency_key == idempotency_key)).mappings().first()
            if row is not None:
                if not hmac.compare_digest(row["body_sha256"], body_sha256):
                    raise IdempotencyConflict("Idempotency-Key already used with another body")
                return _batch(row), False
        queued = conn.scalar(sa.select(sa.func.count()).select_from(batches).where(
            batches.c.platform_id == platform.id, batches.c.status == "queued"))
        if queued >= max_queued:
            raise QueueFull(f"{queued} batches already queued (limit {max_queued}); "
                            "retry when some are done")
        values = {"id": batch_id, "platform_id": platform.id, "status": "queued",
                  "format": fmt, "upload_path": upload_path, "body_sha256": body_sha256,
                  "idempotency_key": idempotency_key, "attempts": 0, "submitted_at": now()}
        conn.execute(batches.insert().values(**values))
        _audit(conn, f"platform:{platform.name}", "batch.submit", "batch", batch_id,
               after={"status": "queued"}, platform_id=platform.id)
        row = conn.execute(batches.select().where(batches.c.id == batch_id)).mappings().one()
    return _batch(row), True


def get_batch(engine: Engine, platform: Platform, batch_id: str) -> Batch | None:
    with engine.connect() as conn:
        row = conn.execute(_batch_query(platform).where(batches.c.id == batch_id)
                           ).mappings().first()
    return _batch(row) if row else None


def list_batches(engine: Engine, platform: Platform, limit: int, after: str | None
                 ) -> tuple[list[Batch], str | None]:
    """Newest first; `after` is the cursor (the last batch id of the previous page)."""
    query = _batch_query(platform).order_by(batches.c.seq.desc()).limit(limit + 1)
    with engine.connect() as conn:
        if after is not None:
            seq = conn.scalar(sa.select(batches.c.seq).where(
                batches.c.platform_id == platform.id, batches.c.id == after))
            if seq is None:
                raise StoreError(f"unknown cursor {after!r}")
            query = query.where(batches.c.seq < seq)
        rows = [_batch(r) for r in conn.execute(query).mappings()]
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


def known_batches(engine: Engine, ids: list[str]) -> set[str]:
    """Which of `ids` are batches (of any platform)."""
    if not ids:
        return set()
    with engine.connect() as conn:
        return {row.id for row in conn.execute(
            sa.select(batches.c.id).where(batches.c.id.in_(ids)))}


def queued_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(batches)
                               .where(batches.c.status == "queued")) or 0)


def claim_batch(engine: Engine, owner: str, lease_seconds: float) -> Batch | None:
    """Lease the oldest queued batch, or one whose worker's lease expired."""
    at = now()
    with _write(engine) as conn:
        row = conn.execute(
            sa.select(batches).where(sa.or_(
                batches.c.status == "queued",
                sa.and_(batches.c.status == "scoring", batches.c.lease_expires_at < at)))
            .order_by(batches.c.seq).limit(1).with_for_update(skip_locked=True)
        ).mappings().first()
        if row is None:
            return None
        conn.execute(batches.update().where(batches.c.seq == row["seq"]).values(
            status="scoring", lease_owner=owner, attempts=row["attempts"] + 1,
            lease_expires_at=at + timedelta(seconds=lease_seconds)))
        _audit(conn, f"worker:{owner}", "batch.claim", "batch", row["id"],
               {"status": row["status"], "lease_owner": row["lease_owner"]},
               {"status": "scoring", "lease_owner": owner}, row["platform_id"])
        row = conn.execute(batches.select().where(batches.c.seq == row["seq"])).mappings().one()
    return _batch(row)


def renew_lease(engine: Engine, batch_id: str, owner: str, lease_seconds: float) -> bool:
    """Heartbeat: extend the lease; False when another worker took the batch over."""
    with _write(engine) as conn:
        done = conn.execute(batches.update().where(
            batches.c.id == batch_id, batches.c.lease_owner == owner,
            batches.c.status == "scoring",
        ).values(lease_expires_at=now() + timedelta(seconds=lease_seconds)))
    return done.rowcount == 1


def _end_batch(conn: Connection, batch_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Move a batch this worker holds out of `scoring`, with its audit row."""
    row = conn.execute(sa.select(batches.c.platform_id).where(
        batches.c.id == batch_id, batches.c.lease_owner == owner,
        batches.c.status == "scoring")).first()
    if row is None:
        return False
    conn.execute(batches.update().where(batches.c.id == batch_id).values(
        lease_owner=None, lease_expires_at=None, **values))
    _audit(conn, f"worker:{owner}", f"batch.{values['status']}", "batch", batch_id,
           {"status": "scoring"}, {k: v for k, v in values.items() if k != "finished_at"},
           row.platform_id)
    return True


def finish_batch(engine: Engine, batch_id: str, owner: str, counts: dict[str, Any],
                 new_cases: Iterable[Sequence[dict[str, Any]]]) -> bool:
    """Insert the batch's cases (given in chunks) and mark it done, in one transaction. Cases a
    killed earlier attempt may have left are replaced: a batch scored twice has one case per
    listing."""
    with _write(engine) as conn:
        if not _end_batch(conn, batch_id, owner,
                          {"status": "done", "finished_at": now(), "error": None, **counts}):
            return False  # the lease went to another worker: nothing was changed
        conn.execute(cases.delete().where(cases.c.batch_id == batch_id))
        for chunk in new_cases:
            if chunk:
                conn.execute(cases.insert(), list(chunk))
    return True


def fail_batch(engine: Engine, batch_id: str, owner: str, error: str) -> bool:
    with _write(engine) as conn:
        return _end_batch(conn, batch_id, owner,
                          {"status": "failed", "finished_at": now(), "error": error})


def release_batch(engine: Engine, batch_id: str, owner: str) -> bool:
    """Give a batch back to the queue (e.g. no champion to score it with yet)."""
    with _write(engine) as conn:
        return _end_batch(conn, batch_id, owner, {"status": "queued"})


def count_cases(engine: Engine, platform: Platform, batch_id: str) -> dict[str, int]:
    """Cases per kind for one of the platform's batches (and listings with several cases)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(cases.c.kind, sa.func.count(),
                                      sa.func.count(sa.distinct(cases.c.listing_id)))
                            .where(cases.c.platform_id == platform.id,
                                   cases.c.batch_id == batch_id).group_by(cases.c.kind)).all()
    return {kind: n for kind, n, _ in rows} | {
        "duplicates": sum(n - distinct for _, n, distinct in rows)}
