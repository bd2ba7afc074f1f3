"""Records for regulators and for retraining: decisions as CSV, decided labels as Parquet, and
the dashboard's figures (queue size and age, decisions per day, flag precision per model
version and from the audit sample, officers' agreement on double-reviewed cases, the population's
flag precision and recall estimates, each platform's drift)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from serving.estimates import flag_estimates
from serving.monitoring import drift_panel
from serving.store import _utc, cases, decisions, now, platforms, users

CSV_COLUMNS = ("decision_id", "case_id", "platform", "listing_id", "seller_id", "kind",
               "model_version", "score", "review", "verdict", "reason_code", "note", "officer",
               "decided_at")


def _decided(since: datetime | None) -> sa.Select[Any]:
    query = (sa.select(decisions.c.id.label("decision_id"), decisions.c.case_id,
                       platforms.c.name.label("platform"), cases.c.listing_id, cases.c.seller_id,
                       cases.c.kind, cases.c.model_version, cases.c.score, decisions.c.review,
                       decisions.c.verdict, decisions.c.reason_code, decisions.c.note,
                       users.c.name.label("officer"), decisions.c.decided_at)
             .join(cases, cases.c.id == decisions.c.case_id)
             .join(platforms, platforms.c.id == cases.c.platform_id)
             .join(users, users.c.id == decisions.c.user_id).order_by(decisions.c.id))
    return query if since is None else query.where(decisions.c.decided_at >= since)


def decisions_csv(engine: Engine, since: datetime | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    with engine.connect() as conn:
        for row in conn.execute(_decided(since)).mappings():
            values = dict(row)
            values["decided_at"] = _utc(values["decided_at"]).isoformat()
            writer.writerow(values[c] for c in CSV_COLUMNS)
    return out.getvalue()


def labels(engine: Engine, since: datetime | None) -> bytes:
    """First decisions that are labels (counterfeit or genuine) as Parquet."""
    query = _decided(since).where(decisions.c.review == 1,
                                  decisions.c.verdict.in_(("counterfeit", "genuine")))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    frame = pl.DataFrame(
        {"listing_id": [r["listing_id"] for r in rows],
         "platform": [r["platform"] for r in rows],
         "is_counterfeit": [r["verdict"] == "counterfeit" for r in rows],
         "decided_at": [_utc(r["decided_at"]) for r in rows],
         "model_version": [r["model_version"] for r in rows],
         "kind": [r["kind"] for r in rows]},
        schema={"listing_id": pl.String, "platform": pl.String, "is_counterfeit": pl.Boolean,
                "decided_at": pl.Datetime("us", "UTC"), "model_version": pl.String,
                "kind": pl.String})
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _every_day(counts: list[Any], today: date, days: int) -> list[dict[str, Any]]:
    """Decisions per day over the last `days` days, days without any included as 0."""
    found = {_day(d): n for d, n in counts}
    span = [today - timedelta(days=i) for i in range(days - 1, -1, -1)]
    return [{"day": d.isoformat(), "decisions": found.get(d, 0)} for d in span]


def dashboard(engine: Engine, days: int = 14) -> dict[str, Any]:
    since = now() - timedelta(days=days)
    first = decisions.alias("first")
    second = decisions.alias("second")
    with engine.connect() as conn:
        queue = conn.execute(sa.select(cases.c.kind, sa.func.count(),
                                       sa.func.min(cases.c.created_at))
                             .where(cases.c.status.in_(("open", "claimed")))
                             .group_by(cases.c.kind)).all()
        per_day = conn.execute(sa.select(sa.func.date(decisions.c.decided_at).label("day"),
                                         sa.func.count()).where(decisions.c.decided_at >= since)
                               .group_by("day").order_by("day")).all()
        precision = conn.execute(
            sa.select(cases.c.kind, cases.c.model_version,
                      sa.func.sum(sa.case((decisions.c.verdict == "counterfeit", 1), else_=0)),
                      sa.func.count())
            .join(cases, cases.c.id == decisions.c.case_id)
            .where(decisions.c.review == 1, decisions.c.verdict.in_(("counterfeit", "genuine")))
            .group_by(cases.c.kind, cases.c.model_version)
            .order_by(cases.c.kind, cases.c.model_version)).all()
        pairs = conn.execute(sa.select(first.c.verdict, second.c.verdict)
                             .join(second, sa.and_(second.c.case_id == first.c.case_id,
                                                   second.c.review == 2))
                             .where(first.c.review == 1)).all()
    at = now()
    return {
        "queue": [{"kind": k, "open": n, "oldest_hours": (at - _utc(oldest)).total_seconds()
                   / 3600} for k, n, oldest in queue],
        "per_day": _every_day(per_day, at.date(), days),
        "precision": [{"kind": k, "model_version": v, "counterfeit": int(c or 0), "decided": n,
                       "precision": (c or 0) / n} for k, v, c, n in precision],
        "agreement": {"double_reviewed": len(pairs),
                      "agreed": sum(a == b for a, b in pairs),
                      "share": sum(a == b for a, b in pairs) / len(pairs) if pairs else None},
        "estimates": [e.as_dict() for e in flag_estimates(engine)],  # unbiased, with intervals
        "drift": drift_panel(engine),
    }
