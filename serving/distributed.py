"""`knockoff score --engine dask`: the batch's partitions scored on a Dask cluster with the same
`build_features` and `Scorer` as the local engine.

The bundle's files are sent to every worker once; each worker process writes them to its
temp folder and loads the bundle once (`worker_scorer`, cached per process) and scores a
partition at a time through `Scorer.scored`, the local engine's streaming query, sunk to its
own `part-*.parquet`: a worker holds one partition (1M rows by default) and the aggregate rows
that partition joins, whatever the batch size.

A bundle with schema variants is planned per file as the local engine plans it
(`serving.variants`): a pass over every partition's optional columns finds which ones each
file fills, each file gets the variant `Variants.pick` chooses, its partitions carry the
columns that variant lacks (nulled on their valid rows before the aggregates and the
features) and are scored by that variant."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from features.cluster import (
    contract_columns,
    dask_client,
    nan_totals,
    part_name,
    publishing_folders,
    rejects_folder,
    run_parts,
)
from features.distributed import PARTITION_ROWS, Part, checked_part, filled_columns, list_parts
from features.outputs import publishing, refuse_overwriting_inputs, rejects_path
from features.shuffle import PartAggregates, scratch_folder, shuffled_batch
from serving.scorer import CHUNK_ROWS, Scorer, score_catalog
from serving.tracking import DEFAULT_MODEL
from serving.variants import (
    GROUPS,
    SchemaPlan,
    Variants,
    absent_columns,
    groups_not_fed,
)

_SCORERS: dict[tuple[str, str, int], Scorer] = {}


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle's files as bytes, sent to the workers once (no shared filesystem or registry
    access needed there), with the model version the driver resolved."""

    digest: str
    files: dict[str, bytes]
    version: str

    @classmethod
    def of(cls, scorer: Scorer) -> ShippedBundle:
        root = scorer.bundle.path
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                 if p.is_file()}
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return cls(digest.hexdigest()[:16], files, scorer.model_version)


def worker_scorer(shipped: ShippedBundle, threads: int) -> Scorer:
    """The shipped bundle's scorer, written to this machine's temp folder and loaded once per
    worker process."""
    key = (shipped.digest, shipped.version, threads)
    if key not in _SCORERS:
        folder = Path(tempfile.gettempdir()) / "knockoff-bundles" / shipped.digest
        if not folder.exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{shipped.digest}.", dir=folder.parent))
            for name, data in shipped.files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(data)
            try:
                staging.rename(folder)
            except OSError:  # another worker process wrote it first
                shutil.rmtree(staging, ignore_errors=True)
        _SCORERS[key] = replace(Scorer.load(str(folder), threads=threads),
                                model_version=shipped.version)
    return _SCORERS[key]


@dataclass(frozen=True)
class PlannedParts:
    """The partitions of a bundle with variants, each carrying the input columns its file's
    variant lacks; `keys[i]`: the variant of file number i; `plan`: the summary's side."""

    parts: list[Part]
    keys: tuple[str, ...]
    plan: SchemaPlan


def plan_parts(client: Any, parts: list[Part], variants: Variants) -> PlannedParts:
    """Each file's variant, picked as `serving.variants.plan_catalog` picks it: an optional
    file's optional columns are gathered over its partitions, then `groups_not_fed`."""
    found = client.gather(client.map(filled_columns, parts, columns=absent_columns(GROUPS),
                                     pure=False))
    files = list(dict.fromkeys(p.file for p in parts))
    filled: list[dict[str, bool]] = [{} for _ in files]
    for part, columns in zip(parts, found, strict=True):
        for column, any_value in columns.items():
            filled[part.index][column] = filled[part.index].get(column, False) or any_value
    picked = [variants.pick(groups_not_fed(sent)) for sent in filled]
    hidden = [absent_columns(v.absent) for v in picked]
    plan = SchemaPlan(pl.LazyFrame(),  # the rows stay on the cluster
                      {f: v.key for f, v in zip(files, picked, strict=True)},
                      {v.key: v.bundle.threshold for v in picked})
    return PlannedParts([replace(p, hidden=hidden[p.index]) for p in parts],
                        tuple(v.key for v in picked), plan)


def _score_part(number: int, part: Part, files: list[str], duplicates: pl.DataFrame,
                aggregates: PartAggregates, shipped: ShippedBundle, threads: int, now: datetime,
                folders: tuple[Path, Path], keys: Sequence[str]) -> dict[str, Any]:
    scorer = worker_scorer(shipped, threads)
    if keys:
        scorer = scorer.with_variant(keys[part.index])
    good, rejects, nan = checked_part(part, files, duplicates, scorer.state.currency, now)
    counts = {"scored": 0, "flagged": 0}

    def count(batch: pl.DataFrame) -> None:
        counts["scored"] += batch.height
        counts["flagged"] += int(batch["flagged"].sum())

    with pl.Config(streaming_chunk_size=CHUNK_ROWS):  # the local engine's batches
        scorer.scored(good.lazy(), aggregates.read(), on_batch=count).sink_parquet(
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
    now = datetime.now(UTC)
    with dask_client(scheduler) as client:
        parts = list_parts(source, partition_rows or PARTITION_ROWS)
        planned = plan_parts(client, parts, scorer.variants) if scorer.variants else None
        if planned is not None:
            parts = planned.parts
        _, absent, extra = contract_columns(parts)
        targets = (rejects_folder(out), out)
        if "://" not in source:
            refuse_overwriting_inputs(targets, source,
                                      [Path(f) for f in dict.fromkeys(p.file for p in parts)])
        with publishing_folders(*targets) as (rejects_tmp, out_tmp), \
                scratch_folder(out) as scratch:
            batch = shuffled_batch(client, parts, scorer.state, now, scratch)
            shipped = client.scatter(ShippedBundle.of(scorer), broadcast=True)
            counts = run_parts(client, batch, _score_part, shipped, threads, now,
                               (out_tmp, rejects_tmp), planned.keys if planned else ())
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
        "nan_as_missing": nan_totals(counts),
        **(planned.plan.summary() if planned else {}),
        "engine": "dask", "partitions": len(batch.parts), "shuffle_bytes": batch.shuffle_bytes,
        "seconds": {"total": round(time.perf_counter() - started, 2)},
    }


def score_upload(upload: Path, out: Path, scorer: Scorer, threads: int, dask_rows: int,
                 scheduler: str | None) -> dict[str, object]:
    """The service worker's scoring: the local engine, or the Dask engine for a Parquet upload
    of more than `dask_rows` rows (0: never), its parts then joined into `out` and its rejects
    beside it, the files the local engine writes (published together, rejects first)."""
    if not dask_rows or upload.suffix.lower() not in (".parquet", ".pq") or \
            pq.ParquetFile(upload).metadata.num_rows <= dask_rows:
        return score_catalog(upload, out, scorer=scorer, threads=threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dask-", dir=out.parent) as tmp:
        parts = Path(tmp) / "scores"
        summary = score_catalog_dask(upload, parts, scorer=scorer, scheduler=scheduler,
                                     threads=threads)
        with publishing(rejects_path(out), out) as (rejects_tmp, out_tmp):
            pl.scan_parquet(rejects_folder(parts) / "*.parquet").sink_parquet(rejects_tmp)
            pl.scan_parquet(parts / "*.parquet").sink_parquet(out_tmp)
    return {**summary, "out": str(out), "rejects": str(rejects_path(out))}
