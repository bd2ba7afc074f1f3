"""Drift of every scored batch, counted while the batch is scored, stored for the officers'
dashboard (never shown to platforms: the batch object of the API is fixed by the contract).

`serving.drift.BatchDrift` is the scorer's observer (`Scorer.observer`): each streaming batch's
features and scores are binned on the reference cut points saved in the bundle, over all
listings and over the flagged ones, and only the bin counts are kept, so measuring drift reads
nothing twice and holds a few numbers per feature whatever the batch size. The worker writes
the `DriftReport` to `batch_drift` (one row per batch) while it still holds the batch's lease,
just before the transaction that marks it done: a batch scored again after a crash replaces its
row, a worker that lost the lease writes nothing, and a done batch always has the row of the
attempt that finished it.

Batches scored on Dask are binned on the workers' own scorers, which carry no observer: for
them only the scores' PSI (all and flagged) is measured, from the scores file's `score` column.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from serving.drift import MIN_FLAGGED, PSI_WARNING, SCORE, TOP, BatchDrift, DriftReport, ranked
from serving.store import _utc, _write, now
from serving.tables import batch_drift, batches, platforms


def batch_report(monitor: BatchDrift | None, scores: Path, scored: int) -> DriftReport | None:
    """The batch's drift once it is scored; the scores file's `score` column is read only when
    the observer saw fewer rows than were scored (the Dask engine)."""
    if monitor is None:
        return None
    if not monitor.rows["all", SCORE] and scored:
        monitor.add_scores(pl.read_parquet(scores, columns=["score"])["score"].to_numpy())
    return monitor.report()


def _flagged_columns(report: DriftReport) -> dict[str, Any]:
    f = report.flagged
    return {"flagged_rows": None if f is None else f.rows,
            "flagged_score_psi": None if f is None else f.score_psi,
            "flag_rate": None if f is None else f.flag_rate,
            "reference_flag_rate": None if f is None else f.reference_flag_rate}


def save_drift(engine: Engine, batch_id: str, owner: str, model_version: str,
               report: DriftReport) -> bool:
    """Store (or replace) the batch's drift if `owner` still holds the batch's lease; False
    (nothing written) when another worker took it over."""
    with _write(engine) as conn:
        held = conn.execute(sa.select(batches.c.platform_id).where(
            batches.c.id == batch_id, batches.c.lease_owner == owner,
            batches.c.status == "scoring")).first()
        if held is None:
            return False
        conn.execute(batch_drift.delete().where(batch_drift.c.batch_id == batch_id))
        conn.execute(batch_drift.insert().values(
            batch_id=batch_id, platform_id=held.platform_id, model_version=model_version,
            rows=report.rows, score_psi=report.score_psi,
            feature_psi={k: round(v, 6) for k, v in report.psi.items()},
            warning=report.warning, computed_at=now(), **_flagged_columns(report)))
    return True


def drift_panel(engine: Engine, days: int = 30) -> dict[str, Any]:
    """The dashboard's drift: each platform's done batches of the last `days` days (oldest
    first) with their scores' PSI (all listings, flagged ones), and the newest batch's most
    drifted features (batch aggregates left out)."""
    query = (sa.select(batch_drift, platforms.c.name.label("platform"))
             .join(batches, batches.c.id == batch_drift.c.batch_id)
             .join(platforms, platforms.c.id == batch_drift.c.platform_id)
             .where(batches.c.status == "done",
                    batch_drift.c.computed_at >= now() - timedelta(days=days))
             .order_by(batch_drift.c.computed_at, batch_drift.c.batch_id))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(row["platform"], []).append({
            "batch_id": row["batch_id"], "at": _utc(row["computed_at"]).isoformat(),
            "score_psi": row["score_psi"], "flagged_score_psi": row["flagged_score_psi"],
            "flagged_rows": row["flagged_rows"], "warning": row["warning"],
            "model_version": row["model_version"]})
    latest = rows[-1] if rows else None
    return {
        "threshold": PSI_WARNING, "min_flagged": MIN_FLAGGED, "series": series,
        "latest": None if latest is None else {
            "platform": latest["platform"], "batch_id": latest["batch_id"],
            "model_version": latest["model_version"], "rows": latest["rows"],
            "score_psi": latest["score_psi"], "warning": latest["warning"],
            "flagged_score_psi": latest["flagged_score_psi"],
            "flagged_rows": latest["flagged_rows"], "flag_rate": latest["flag_rate"],
            "reference_flag_rate": latest["reference_flag_rate"],
            "top_features": [{"feature": k, "psi": v}
                             for k, v in ranked(latest["feature_psi"])[:TOP]]},
    }
