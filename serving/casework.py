"""The officers' work on cases: the queue, claims, decisions, bulk decisions, second reviews,
four-eyes takedowns and the notices they create (SQLAlchemy Core, next to `serving.store`).

Every change and its audit rows commit in one transaction (`store._write`). Claims and
decisions are conditional UPDATEs, so two officers never hold or decide one case: the second
gets `Conflict` (HTTP 409), never a lost decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from serving import dsa, store
from serving.store import _audit, _utc, _write, cases, decisions, now, platforms, users

VERDICTS = ("counterfeit", "genuine", "needs_info")
_meta = sa.MetaData()  # tables of migration 0002 (foreign keys are declared there)
ts = sa.DateTime(timezone=True)
second_reviews = sa.Table(
    "second_reviews", _meta, sa.Column("case_id", sa.Integer, primary_key=True),
    sa.Column("requested_by", sa.Integer), sa.Column("first_user_id", sa.Integer),
    sa.Column("requested_at", ts), sa.Column("done_at", ts))
takedowns = sa.Table(
    "takedowns", _meta, sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("platform_id", sa.Integer), sa.Column("seller_id", sa.String(200)),
    sa.Column("note", sa.Text), sa.Column("status", sa.String(10)),
    sa.Column("requested_by", sa.Integer), sa.Column("requested_at", ts),
    sa.Column("approved_by", sa.Integer), sa.Column("approved_at", ts))
notices = sa.Table(
    "notices", _meta, sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("platform_id", sa.Integer), sa.Column("listing_id", sa.String(200)),
    sa.Column("seller_id", sa.String(200)), sa.Column("decided_at", ts),
    sa.Column("statement", sa.JSON))


class NotFound(store.StoreError):
    """No such case, seller, takedown or cursor (HTTP 404)."""


class Conflict(store.StoreError):
    """The case or takedown is not in a state that allows this (HTTP 409)."""


@dataclass(frozen=True)
class Officer:
    id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason_code: str
    note: str = ""


@dataclass(frozen=True)
class QueueFilter:
    status: str = "open"
    kind: str = "flag"
    platform: str | None = None
    brand: str | None = None
    category: str | None = None
    seller: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    model_version: str | None = None


CASE_COLUMNS = ("id", "platform_id", "batch_id", "listing_id", "seller_id", "score", "reasons",
                "model_version", "kind", "status", "brand", "category", "price", "title",
                "created_at", "claimed_by")


def _cursor(row: Any, kind: str) -> str:
    return str(row["id"]) if kind == "audit" else f"{row['score']!r}_{row['id']}"


def _after(query: sa.Select[Any], after: str, kind: str) -> sa.Select[Any]:
    """Keyset paging: flags by score (highest first) then waiting time, audit cases oldest
    first; the cursor is the last row's position, never an offset."""
    try:
        if kind == "audit":
            return query.where(cases.c.id > int(after))
        score, case_id = after.split("_")
        s, i = float(score), int(case_id)
    except ValueError:
        raise NotFound(f"unknown cursor {after!r}") from None
    # the `score <= s` bound lets the (status, kind, score, id) index start at the cursor
    return query.where(cases.c.score <= s,
                       sa.or_(cases.c.score < s, sa.and_(cases.c.score == s, cases.c.id > i)))


def list_cases(engine: Engine, where: QueueFilter, limit: int, after: str | None = None
               ) -> tuple[list[dict[str, Any]], str | None]:
    query = (sa.select(*(cases.c[c] for c in CASE_COLUMNS), platforms.c.name.label("platform"))
             .join(platforms, platforms.c.id == cases.c.platform_id)
             .where(cases.c.status == where.status, cases.c.kind == where.kind))
    for column, value in (("brand", where.brand), ("category", where.category),
                          ("seller_id", where.seller), ("model_version", where.model_version)):
        if value:
            query = query.where(cases.c[column] == value)
    if where.platform:
        query = query.where(platforms.c.name == where.platform)
    if where.min_score is not None:
        query = query.where(cases.c.score >= where.min_score)
    if where.max_score is not None:
        query = query.where(cases.c.score <= where.max_score)
    if after:
        query = _after(query, after, where.kind)
    order = ([cases.c.id] if where.kind == "audit" else [cases.c.score.desc(), cases.c.id])
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query.order_by(*order).limit(limit + 1)).mappings()]
    for row in rows:
        row["created_at"] = _utc(row["created_at"])
    more = len(rows) > limit
    return rows[:limit], _cursor(rows[limit - 1], where.kind) if more else None


def case_row(conn: Connection, case_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(cases, platforms.c.name.label("platform"))
                       .join(platforms, platforms.c.id == cases.c.platform_id)
                       .where(cases.c.id == case_id)).mappings().first()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return dict(row)


def _holder(conn: Connection, user_id: int | None) -> str:
    return conn.scalar(sa.select(users.c.name).where(users.c.id == user_id)) or "someone"


def claim(engine: Engine, case_id: int, who: Officer) -> None:
    """Hold an open case (again, for its holder); Conflict when someone else holds it."""
    with _write(engine) as conn:
        done = conn.execute(cases.update().where(
            cases.c.id == case_id,
            sa.or_(cases.c.status == "open",
                   sa.and_(cases.c.status == "claimed", cases.c.claimed_by == who.id))
        ).values(status="claimed", claimed_by=who.id))
        row = case_row(conn, case_id)
        if done.rowcount != 1:
            if row["status"] == "decided":
                raise Conflict(f"case {case_id} is already decided")
            raise Conflict(f"case {case_id} is claimed by {_holder(conn, row['claimed_by'])}")
        _audit(conn, who.actor, "case.claim", "case", case_id, {"status": "open"},
               {"status": "claimed", "claimed_by": who.name}, row["platform_id"])


def _record(conn: Connection, row: dict[str, Any], who: Officer, verdict: Verdict,
            review: int) -> None:
    """The decision row, its audit row and, for a first `counterfeit`, the platform's notice."""
    at = now()
    conn.execute(decisions.insert().values(
        case_id=row["id"], user_id=who.id, review=review, verdict=verdict.verdict,
        reason_code=verdict.reason_code, note=verdict.note, decided_at=at))
    after = {"status": "decided", "verdict": verdict.verdict,
             "reason_code": verdict.reason_code, "review": review}
    _audit(conn, who.actor, "case.decide" if review == 1 else "case.second_review",
           "case", row["id"], {"status": row["status"]}, after, row["platform_id"])
    if review == 1 and verdict.verdict == "counterfeit":
        statement = dsa.listing_statement(row, verdict, at)
        conn.execute(notices.insert().values(
            platform_id=row["platform_id"], listing_id=row["listing_id"],
            seller_id=row["seller_id"], decided_at=at, statement=statement))


def decide(engine: Engine, case_id: int, who: Officer, verdict: Verdict) -> int:
    """Decide a case (first review), or give the blind second review it was sent to.
    Returns the review number (1 or 2)."""
    with _write(engine) as conn:
        row = case_row(conn, case_id)
        if row["status"] == "decided":
            _second_review(conn, row, who, verdict)
            return 2
        done = conn.execute(cases.update().where(
            cases.c.id == case_id, cases.c.status.in_(("open", "claimed")),
            sa.or_(cases.c.claimed_by.is_(None), cases.c.claimed_by == who.id,
                   cases.c.status == "open")
        ).values(status="decided", claimed_by=who.id))
        if done.rowcount != 1:
            raise Conflict(f"case {case_id} is claimed by {_holder(conn, row['claimed_by'])}")
        _record(conn, row, who, verdict, 1)
    return 1


def _second_review(conn: Connection, row: dict[str, Any], who: Officer, verdict: Verdict
                   ) -> None:
    pending = conn.execute(sa.select(second_reviews).where(
        second_reviews.c.case_id == row["id"], second_reviews.c.done_at.is_(None))).first()
    if pending is None:
        raise Conflict(f"case {row['id']} is already decided")
    if pending.first_user_id == who.id:
        raise Conflict(f"case {row['id']} needs a second review by another officer")
    done = conn.execute(second_reviews.update().where(
        second_reviews.c.case_id == row["id"], second_reviews.c.done_at.is_(None)
    ).values(done_at=now()))
    if done.rowcount != 1:
        raise Conflict(f"case {row['id']} was second-reviewed meanwhile")
    _record(conn, row, who, verdict, 2)


def bulk_decide(engine: Engine, platform: str, seller_id: str, who: Officer,
                verdict: Verdict) -> int:
    """Decide all of a seller's open cases (and those `who` holds): one audit row per case
    and one for the bulk action. Cases other officers hold are left to them."""
    with _write(engine) as conn:
        pid = conn.scalar(sa.select(platforms.c.id).where(platforms.c.name == platform))
        if pid is None:
            raise NotFound(f"no platform {platform!r}")
        mine = sa.or_(cases.c.status == "open",
                      sa.and_(cases.c.status == "claimed", cases.c.claimed_by == who.id))
        ids = list(conn.scalars(sa.select(cases.c.id).where(
            cases.c.platform_id == pid, cases.c.seller_id == seller_id, mine)))
        for case_id in ids:
            row = case_row(conn, case_id)
            conn.execute(cases.update().where(cases.c.id == case_id)
                         .values(status="decided", claimed_by=who.id))
            _record(conn, row, who, verdict, 1)
        _audit(conn, who.actor, "seller.bulk_decide", "seller", f"{platform}/{seller_id}",
               None, {"verdict": verdict.verdict, "reason_code": verdict.reason_code,
                      "cases": ids}, pid)
    return len(ids)


def request_second_review(engine: Engine, case_id: int, who: Officer) -> None:
    with _write(engine) as conn:
        row = case_row(conn, case_id)
        first = conn.scalar(sa.select(decisions.c.user_id).where(
            decisions.c.case_id == case_id, decisions.c.review == 1))
        if row["status"] != "decided" or first is None:
            raise Conflict(f"case {case_id} is not decided yet")
        if conn.scalar(sa.select(second_reviews.c.case_id).where(
                second_reviews.c.case_id == case_id)) is not None:
            raise Conflict(f"case {case_id} already has a second review")
        conn.execute(second_reviews.insert().values(
            case_id=case_id, requested_by=who.id, first_user_id=first, requested_at=now()))
        _audit(conn, who.actor, "case.request_second_review", "case", case_id, None,
               {"second_review": "pending"}, row["platform_id"])


def pending_second_review(engine: Engine, case_id: int) -> int | None:
    """The first decider of a case awaiting its blind second review, else None."""
    with engine.connect() as conn:
        return conn.scalar(sa.select(second_reviews.c.first_user_id).where(
            second_reviews.c.case_id == case_id, second_reviews.c.done_at.is_(None)))


def request_takedown(engine: Engine, platform: str, seller_id: str, who: Officer,
                     note: str) -> int:
    with _write(engine) as conn:
        pid = conn.scalar(sa.select(platforms.c.id).where(platforms.c.name == platform))
        known = pid is not None and conn.scalar(sa.select(cases.c.id).where(
            cases.c.platform_id == pid, cases.c.seller_id == seller_id).limit(1))
        if not known:
            raise NotFound(f"no seller {platform}/{seller_id}")
        tid = conn.execute(takedowns.insert().values(
            platform_id=pid, seller_id=seller_id, note=note, status="pending",
            requested_by=who.id, requested_at=now())).inserted_primary_key[0]
        _audit(conn, who.actor, "takedown.request", "takedown", tid, None,
               {"status": "pending", "seller": f"{platform}/{seller_id}", "note": note}, pid)
    return int(tid)


def approve_takedown(engine: Engine, takedown_id: int, who: Officer) -> None:
    """Four-eyes: a second supervisor approves; only then does the notice reach the platform."""
    with _write(engine) as conn:
        row = conn.execute(sa.select(takedowns).where(takedowns.c.id == takedown_id)
                           ).mappings().first()
        if row is None:
            raise NotFound(f"no takedown {takedown_id}")
        if row["requested_by"] == who.id:
            raise Conflict("a takedown needs a second supervisor: you requested this one")
        at = now()
        done = conn.execute(takedowns.update().where(
            takedowns.c.id == takedown_id, takedowns.c.status == "pending",
            takedowns.c.requested_by != who.id).values(
            status="approved", approved_by=who.id, approved_at=at))
        if done.rowcount != 1:
            raise Conflict(f"takedown {takedown_id} is already {row['status']}")
        conn.execute(notices.insert().values(
            platform_id=row["platform_id"], seller_id=row["seller_id"], decided_at=at,
            statement=dsa.takedown_statement(dict(row), at)))
        _audit(conn, who.actor, "takedown.approve", "takedown", takedown_id,
               {"status": "pending"}, {"status": "approved"}, row["platform_id"])


def list_takedowns(engine: Engine, status: str, limit: int = 100, after: str | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
    """Takedowns of one status, newest first; the cursor is the last takedown id."""
    requester, approver = users.alias("requester"), users.alias("approver")
    query = (sa.select(takedowns, platforms.c.name.label("platform"),
                       requester.c.name.label("requested_by_name"),
                       approver.c.name.label("approved_by_name"))
             .join(platforms, platforms.c.id == takedowns.c.platform_id)
             .join(requester, requester.c.id == takedowns.c.requested_by)
             .outerjoin(approver, approver.c.id == takedowns.c.approved_by)
             .where(takedowns.c.status == status).order_by(takedowns.c.id.desc())
             .limit(limit + 1))
    if after:
        if not after.isdigit():
            raise NotFound(f"unknown cursor {after!r}")
        query = query.where(takedowns.c.id < int(after))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > limit
    return rows[:limit], str(rows[limit - 1]["id"]) if more else None


def list_notices(engine: Engine, platform_id: int | None, limit: int, after: str | None,
                 since: Any = None) -> tuple[list[dict[str, Any]], str | None]:
    """Notices oldest first by id (one platform's, or every platform's for the regulator's
    export); the cursor is the last notice id."""
    query = sa.select(notices).order_by(notices.c.id).limit(limit + 1)
    if platform_id is not None:
        query = query.where(notices.c.platform_id == platform_id)
    if since is not None:
        query = query.where(notices.c.decided_at >= since)
    if after:
        if not after.isdigit():
            raise NotFound(f"unknown cursor {after!r}")
        query = query.where(notices.c.id > int(after))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        row["decided_at"] = _utc(row["decided_at"])
    more = len(rows) > limit
    return rows[:limit], str(rows[limit - 1]["id"]) if more else None


def audit_page(engine: Engine, limit: int, after: str | None
               ) -> tuple[list[dict[str, Any]], str | None]:
    """The append-only audit log, newest first."""
    log = store.audit_log
    query = sa.select(log).order_by(log.c.id.desc()).limit(limit + 1)
    if after:
        if not after.isdigit():
            raise NotFound(f"unknown cursor {after!r}")
        query = query.where(log.c.id < int(after))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        row["at"] = _utc(row["at"])
    more = len(rows) > limit
    return rows[:limit], str(rows[limit - 1]["id"]) if more else None


def next_open_case(engine: Engine, who: Officer, after: dict[str, Any]) -> int | None:
    """Submit & Next: claim the next open case of the flag queue after `after`."""
    where = QueueFilter()
    cursor: str | None = _cursor(after, after["kind"]) if after["kind"] == "flag" else None
    for _ in range(5):  # another officer may claim the one we picked: try the next
        rows, cursor = list_cases(engine, where, 5, cursor)
        for row in rows:
            try:
                claim(engine, row["id"], who)
            except Conflict:
                continue
            return int(row["id"])
        if cursor is None:
            return None
    return None


def case_decisions(conn: Connection, case_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    query = (sa.select(decisions, users.c.name.label("user"))
             .join(users, users.c.id == decisions.c.user_id)
             .where(decisions.c.case_id.in_(list(case_ids))).order_by(decisions.c.id))
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(row["case_id"], []).append(dict(row))
    return found
