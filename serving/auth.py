"""Officers' authentication: argon2 passwords (`store.verify_user`), a session cookie with a
CSRF token for the pages, bearer tokens for scripts (stored only as sha256), a lockout after
repeated failures, and the roles officer < supervisor < admin.

A platform's API key reaches no officer route: it is answered 403, an unknown token 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from serving import store
from serving.casework import Officer
from serving.store import _utc, _write, now, users

COOKIE = "knockoff_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
RANK = {"officer": 1, "supervisor": 2, "admin": 3}
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
LIFETIME = {"session": timedelta(hours=12), "bearer": timedelta(hours=12)}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

_meta = sa.MetaData()
ts = sa.DateTime(timezone=True)
user_tokens = sa.Table(
    "user_tokens", _meta, sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_sha256", sa.String(64)), sa.Column("user_id", sa.Integer),
    sa.Column("kind", sa.String(10)), sa.Column("csrf", sa.String(64)),
    sa.Column("created_at", ts), sa.Column("expires_at", ts))
login_failures = sa.Table(
    "login_failures", _meta, sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_name", sa.String(100)), sa.Column("at", ts))


class LockedOut(store.StoreError):
    """Too many failed logins for this account in the lockout window (HTTP 429)."""


@dataclass(frozen=True)
class Session:
    officer: Officer
    kind: str  # session | bearer
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(engine: Engine, name: str, password: str) -> Officer | None:
    """The officer for these credentials, None when wrong; LockedOut after
    LOCKOUT_FAILURES failures within LOCKOUT_WINDOW (the password is not even checked)."""
    since = now() - LOCKOUT_WINDOW
    with engine.connect() as conn:
        failures = conn.scalar(sa.select(sa.func.count()).select_from(login_failures).where(
            login_failures.c.user_name == name[:100], login_failures.c.at >= since))
    if failures >= LOCKOUT_FAILURES:
        raise LockedOut("too many failed logins: try again in 15 minutes")
    found = store.verify_user(engine, name, password)
    with _write(engine) as conn:
        if found is None:
            conn.execute(login_failures.insert().values(user_name=name[:100], at=now()))
            store._audit(conn, f"login:{name[:100]}", "user.login_failed", "user", name[:100])
            return None
        conn.execute(login_failures.delete().where(login_failures.c.user_name == name))
    return Officer(found["id"], found["user"], found["role"])


def issue(engine: Engine, officer: Officer, kind: str) -> tuple[str, str]:
    """A new session or bearer token and its CSRF token; only the token's sha256 is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    at = now()
    with _write(engine) as conn:
        conn.execute(user_tokens.insert().values(
            token_sha256=_digest(token), user_id=officer.id, kind=kind, csrf=csrf,
            created_at=at, expires_at=at + LIFETIME[kind]))
        store._audit(conn, officer.actor, f"user.{kind}", "user", officer.id)
    return token, csrf


def revoke(engine: Engine, token: str) -> None:
    with _write(engine) as conn:
        conn.execute(user_tokens.delete().where(user_tokens.c.token_sha256 == _digest(token)))


def lookup(engine: Engine, token: str, kind: str) -> Session | None:
    query = (sa.select(user_tokens.c.csrf, user_tokens.c.expires_at, users.c.id, users.c.name,
                       users.c.role)
             .join(users, users.c.id == user_tokens.c.user_id)
             .where(user_tokens.c.token_sha256 == _digest(token), user_tokens.c.kind == kind,
                    users.c.disabled_at.is_(None)))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or _utc(row.expires_at) < now():
        return None
    return Session(Officer(row.id, row.name, row.role), kind, row.csrf)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return session.kind == "bearer" or (
        sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode()))


def from_request(engine: Engine, request: Request) -> Session | None:
    """The bearer token's or the session cookie's user (None when neither is valid); a
    platform API key is refused with 403."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if token.startswith(store.KEY_PREFIX) and store.platform_for_key(engine, token):
            raise HTTPException(403, "a platform API key cannot reach officer routes")
        return lookup(engine, token, "bearer")
    cookie = request.cookies.get(COOKIE)
    return lookup(engine, cookie, "session") if cookie else None


# named in the OpenAPI schema as the officers' scheme (`POST /v1/auth/token`); the session cookie
# of the pages works too (with the CSRF header on writes)
OFFICER_BEARER = HTTPBearer(auto_error=False, scheme_name="officerToken",
                            description="a token from POST /v1/auth/token")


def requires(engine: Engine, role: str):  # type: ignore[no-untyped-def]
    """A FastAPI dependency: the session of a user of at least `role`. JSON writes with the
    session cookie need the X-CSRF-Token header; bearer tokens need none."""

    def dependency(request: Request, _bearer: Annotated[
            HTTPAuthorizationCredentials | None, Security(OFFICER_BEARER)] = None) -> Session:
        session = from_request(engine, request)  # the bearer token or the session cookie
        if session is None:
            raise HTTPException(401, "log in or send Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        if request.method not in SAFE_METHODS and not csrf_ok(
                session, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, "missing or wrong CSRF token")
        if RANK[session.officer.role] < RANK[role]:
            raise HTTPException(403, f"this needs the {role} role")
        return session

    return Annotated[Session, Depends(dependency)]


def secure_cookie(request: Request) -> bool:
    """Secure only when served over https (uvicorn applies X-Forwarded-Proto from trusted
    proxies, by default 127.0.0.1, to the request's scheme)."""
    return request.url.scheme == "https"
