"""`knockoff score --engine dask`: the batch's partitions scored on a Dask cluster with the same
`build_features` and `Scorer` as the local engine.

Each worker process loads the bundle once (`worker_scorer`, cached per process) and scores a
partition at a time through `Scorer.scored`, the local engine's streaming query, sunk to its
own `part-*.parquet`: a worker holds one partition (1M rows by default) and the aggregate rows
that partition joins, whatever the batch size."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features.cluster import (
    contract_columns,
    dask_client,
    nan_totals,
    part_name,
    publishing_folders,
    rejects_folder,
    run_parts,
)
from features.distributed import Part, checked_part, shuffled_batch
from features.outputs import refuse_overwriting_inputs
from serving.scorer import Scorer
from serving.tracking import DEFAULT_MODEL

_SCORERS: dict[tuple[str, str, int], Scorer] = {}


def worker_scorer(ref: str, version: str, threads: int) -> Scorer:
    """The scorer of `ref` (reporting `version`), loaded once per worker process."""
    key = (ref, version, threads)
    if key not in _SCORERS:
        _SCORERS[key] = replace(Scorer.load(ref, threads=threads), model_version=version)
    return _SCORERS[key]


def worker_reference(model: str, scorer: Scorer, local_cluster: bool) -> str:
    """What workers load: the bundle folder already here for a local cluster; on a remote one
    the same registry reference, an alias pinned to the version resolved here (it may move
    while the batch is scored)."""
    if local_cluster or Path(model).is_dir():  # a folder: on a shared filesystem for a cluster
        return str(scorer.bundle.path)
    return f"models:/{scorer.model_version}" if model.startswith("models:/") else model


def _score_part(number: int, part: Part, files: list[str], duplicates: pl.DataFrame,
                aggregates: Any, ref: tuple[str, str], threads: int, now: datetime,
                folders: tuple[Path, Path]) -> dict[str, Any]:
    scorer = worker_scorer(*ref, threads)
    good, rejects, nan = checked_part(part, files, duplicates, scorer.state.currency, now)
    counts = {"scored": 0, "flagged": 0}

    def count(batch: pl.DataFrame) -> None:
        counts["scored"] += batch.height
        counts["flagged"] += int(batch["flagged"].sum())

    scorer.scored(good.lazy(), aggregates, on_batch=count).sink_parquet(
        folders[0] / part_name(number), compression="zstd")
    rejects.sort("row_number").write_parquet(folders[1] / part_name(number))
    return {**counts, "valid": good.height, "rejected": rejects.height, "nan": nan}


def score_catalog_dask(
    source: str | Path, out: str | Path, *, model: str = DEFAULT_MODEL,
    scheduler: str | None = None, threads: int = 1, partition_rows: int | None = None,
    scorer: Scorer | None = None,
) -> dict[str, object]:
    """Score `source` on the cluster: `out/part-*.parquet` and `out.rejects/part-*.parquet`,
    the local engine's rows in the same order, published only when every part is written.
    `threads`: onnxruntime threads per worker task."""
    started, out, source = time.perf_counter(), Path(out), str(source)
    scorer = scorer or Scorer.load(model, threads=threads)  # fails here, not on every worker
    ref = (worker_reference(model, scorer, scheduler is None), scorer.model_version)
    now = datetime.now(UTC)
    with dask_client(scheduler) as client:
        options = {"target_rows": partition_rows} if partition_rows else {}
        batch = shuffled_batch(client, source, scorer.state, now, **options)
        _, absent, extra = contract_columns(batch.parts)
        targets = (rejects_folder(out), out)
        if "://" not in source:
            refuse_overwriting_inputs(targets, source, [Path(f) for f in batch.files])
        with publishing_folders(*targets) as (rejects_tmp, out_tmp):
            counts = run_parts(client, batch, _score_part, ref, threads, now,
                               (out_tmp, rejects_tmp))
            total = {k: sum(c[k] for c in counts) for k in ("scored", "flagged", "valid",
                                                              "rejected")}
            if total["scored"] != total["valid"]:
                raise RuntimeError(f"{source}: scored {total['scored']} rows of "
                                   f"{total['valid']} valid ones")
    return {
        "scored": total["scored"], "rejected": total["rejected"], "flagged": total["flagged"],
        "rows": total["scored"] + total["rejected"], "model_version": scorer.model_version,
        "threshold": scorer.threshold, "out": str(out), "rejects": str(rejects_folder(out)),
        "ignored_columns": extra, "absent_columns": absent,
        "nan_as_missing": nan_totals(counts), "engine": "dask", "partitions": len(batch.parts),
        "seconds": {"total": round(time.perf_counter() - started, 2)},
    }
