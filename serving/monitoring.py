"""Drift of every scored batch, counted while the batch is scored, stored for the officers'
dashboard (never shown to platforms: the batch object of the API is fixed by the contract).

`serving.drift.BatchDrift` is the scorer's observer (`Scorer.observer`): each streaming batch's
features and scores are binned on the reference cut points saved in the bundle of the model
that scored them (the main model, or the schema variant that fits the upload, each with its own
reference and threshold), over all listings and over the flagged ones, and only the bin counts
are kept, so measuring drift reads nothing twice and holds a few numbers per feature whatever
the batch size. The worker writes the `DriftReport` to `batch_drift` (one row per batch) while
it still holds the batch's lease, just before the transaction that marks it done: a batch
scored again after a crash replaces its row, a worker that lost the lease writes nothing, and
a done batch always has the row of the attempt that finished it.

Batches scored on Dask are scored by the workers' own scorers, which carry no observer: for
them only the scores' PSI (all and flagged) is measured, from the scores file's `score` column.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from serving import tracking
from serving.drift import (
    FLAGGED_WARNING_SHARE,
    MIN_FLAGGED,
    PSI_WARNING,
    TOP,
    BatchDrift,
    DriftReport,
    ranked,
)
from serving.scorer import Scorer
from serving.store import _utc, _write, now
from serving.tables import batch_drift, batches, platforms
from serving.variants import FULL


def batch_report(monitor: BatchDrift, scorer: Scorer, summary: dict[str, Any],
                 scores: Path) -> DriftReport | None:
    """The batch's drift once it is scored. A batch the observer did not see (the Dask
    engine's workers carry none) is measured on its scores file's `score` column, against the
    model its summary names (`schema`: the main model or one schema variant); a Dask batch
    whose files were scored by different variants gets none."""
    if not monitor.scored and summary["scored"]:
        schema = summary.get("schema", FULL)
        if schema == "mixed":
            print("knockoff worker: no drift measured: the batch's files were scored by "
                  "different schema variants on Dask", file=sys.stderr)
            return None
        bundle = scorer.bundle if schema == FULL else scorer.with_variant(schema).bundle
        monitor.add(bundle, None, pl.read_parquet(scores, columns=["score"])["score"].to_numpy())
    return monitor.report()


def _flagged_columns(report: DriftReport) -> dict[str, Any]:
    f = report.flagged
    return {"schema": report.schema, "flagged_rows": None if f is None else f.rows,
            "flagged_reference_rows": None if f is None else f.reference_rows,
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


def track_drift(engine: Engine, batch_id: str, platform_id: int, model_version: str,
                report: DriftReport) -> None:
    """Append a done batch's drift to its model version's service run in MLflow
    (`tracking.log_service_drift`). A tracking server that is down or busy costs the batch
    nothing: said on stderr, the database row stays the record."""
    with engine.connect() as conn:
        platform = conn.scalar(sa.select(platforms.c.name).where(platforms.c.id == platform_id))
    try:
        tracking.log_service_drift(model_version, str(platform), batch_id, report.metrics())
    except Exception as exc:  # noqa: BLE001 - MLflow's errors are many; none may fail a batch
        print(f"knockoff worker: batch {batch_id}'s drift not logged to MLflow: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)


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
            "flagged_reliable": _reliable(row), "warning": row["warning"],
            "model_version": row["model_version"]})
    latest = rows[-1] if rows else None
    return {
        "threshold": PSI_WARNING, "flagged_threshold": PSI_WARNING * FLAGGED_WARNING_SHARE,
        "min_flagged": MIN_FLAGGED, "series": series,
        "latest": None if latest is None else {
            **{k: latest[k] for k in (
                "platform", "batch_id", "model_version", "rows", "score_psi", "warning",
                "schema", "flagged_score_psi", "flagged_rows", "flag_rate",
                "reference_flag_rate")},
            "flagged_reliable": _reliable(latest),
            "top_features": [{"feature": k, "psi": v}
                             for k, v in ranked(latest["feature_psi"])[:TOP]]},
    }


def _reliable(row: dict[str, Any]) -> bool:
    """The flagged listings' PSI is more than noise (`serving.drift.FlaggedDrift.reliable`)."""
    return row["flagged_score_psi"] is not None and min(
        row["flagged_rows"], row["flagged_reference_rows"]) >= MIN_FLAGGED
