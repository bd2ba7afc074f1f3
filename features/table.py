"""The `knockoff features` job: a catalog in, the feature table and its rejects out."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from features.catalog import read_catalog
from features.contract import LABEL, CatalogError
from features.outputs import (
    output_format,
    publishing,
    refuse_overwriting_inputs,
    rejects_path,
    write_frame,
)
from features.pipeline import build_features
from features.sources import first_line
from features.state import DEFAULT_CURRENCY, FeatureState, StateError, fit_state


def feature_table(
    source: str | Path,
    out: str | Path,
    *,
    state_dir: str | Path | None = None,
    fmt: str | None = None,
) -> dict[str, object]:
    """Validate `source`, build its features and write them (ids + features + label if any).

    With `state_dir` holding a saved state, that state is used; otherwise the state is fitted
    on `source` (and saved to `state_dir` when given). The table and its rejects appear only
    when both are complete. Returns counts for the summary line."""
    started = time.perf_counter()
    out = Path(out)
    fmt = output_format(out, fmt)
    state_path = Path(state_dir) if state_dir is not None else None
    fitted_here = state_path is None or not (state_path / "state.json").exists()
    state = None if fitted_here else _load_state(state_path)  # type: ignore[arg-type]
    catalog = read_catalog(source, currency=DEFAULT_CURRENCY if state is None else state.currency)
    refuse_overwriting_inputs((out, rejects_path(out)), source, catalog.files)
    if state is None:
        state = fit_state(catalog.rows, currency=DEFAULT_CURRENCY)
        if state_path is not None:
            state.save(state_path)
    keep = ("listing_id", "seller_id", "listed_at", "category")
    if LABEL in catalog.present_columns:
        keep += (LABEL,)
    # rejects renamed first: whoever finds the table finds its rejects complete beside it
    with publishing(rejects_path(out), out) as (rejects_tmp, out_tmp):
        write_frame(build_features(catalog.rows, state, keep=keep), out_tmp, fmt)
        rejects = catalog.rejects.sort("file", "row_number").collect(engine="streaming")
        write_frame(rejects, rejects_tmp, fmt)
        rows = pl.scan_parquet(out_tmp) if fmt == "parquet" else pl.scan_csv(out_tmp)
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
        "nan_as_missing": catalog.nan_as_missing,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _load_state(folder: Path) -> FeatureState:
    """A saved state, or a clear error when its files are damaged (bad JSON, missing keys,
    unreadable tables)."""
    try:
        return FeatureState.load(folder)
    except StateError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError,
            pl.exceptions.PolarsError) as exc:
        raise CatalogError(f"{folder}: not a usable feature state ({type(exc).__name__}: "
                           f"{first_line(exc)}); refit it by removing the folder") from None
