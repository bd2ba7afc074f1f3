"""The `knockoff features` job: a catalog in, the feature table and its rejects out."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from features.catalog import output_format, read_catalog, rejects_path, write_frame
from features.contract import LABEL
from features.pipeline import DEFAULT_CURRENCY, FeatureState, build_features, fit_state


def feature_table(
    source: str | Path,
    out: str | Path,
    *,
    state_dir: str | Path | None = None,
    fmt: str | None = None,
) -> dict[str, object]:
    """Validate `source`, build its features and write them (ids + features + label if any).

    With `state_dir` holding a saved state, that state is used; otherwise the state is fitted
    on `source` (and saved to `state_dir` when given). Returns counts for the summary line."""
    started = time.perf_counter()
    out = Path(out)
    fmt = output_format(out, fmt)
    state_path = Path(state_dir) if state_dir is not None else None
    fitted_here = state_path is None or not (state_path / "state.json").exists()
    state = None if fitted_here else FeatureState.load(state_path)  # type: ignore[arg-type]
    catalog = read_catalog(source, currency=DEFAULT_CURRENCY if state is None else state.currency)
    if state is None:
        state = fit_state(catalog.rows, currency=DEFAULT_CURRENCY)
        if state_path is not None:
            state.save(state_path)
    keep = ("listing_id", "seller_id", "listed_at", "category")
    if LABEL not in catalog.absent_columns:
        keep += (LABEL,)
    write_frame(build_features(catalog.rows, state, keep=keep), out, fmt)
    rejects = catalog.rejects.sort("file", "row_number").collect(engine="streaming")
    write_frame(rejects, rejects_path(out), fmt)
    rows = pl.scan_parquet(out) if fmt == "parquet" else pl.scan_csv(out)
    written = rows.select(pl.len()).collect().item()
    return {
        "rows": written + rejects.height,
        "features": written,
        "rejected": rejects.height,
        "out": str(out),
        "rejects": str(rejects_path(out)),
        "state": str(state_path) if state_path is not None else None,
        "state_fitted": fitted_here,
        "ignored_columns": list(catalog.extra_columns),
        "seconds": round(time.perf_counter() - started, 2),
    }
