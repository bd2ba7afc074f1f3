"""Running on a Dask cluster: the client (an existing scheduler, or a LocalCluster started on
demand, never at import), output folders of `part-*.parquet` published all or nothing, and the
`knockoff features --engine dask` job."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features.catalog import read_catalog
from features.contract import LABEL, SCHEMA, CatalogError
from features.distributed import PARTITION_ROWS, Part, _open, checked_part, list_parts
from features.outputs import refuse_overwriting_inputs
from features.pipeline import build_features
from features.shuffle import PartAggregates, ShuffledBatch, scratch_folder, shuffled_batch
from features.state import DEFAULT_CURRENCY, FeatureState, fit_state

LOCAL_WORKERS = 2
WORKER_ENV = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
              "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}


class ClusterError(CatalogError):
    """The scheduler cannot be reached (the command line exits 2 with the message)."""


def _frame_size(frame: pl.DataFrame) -> int:
    return int(frame.estimated_size())


def polars_sizes() -> None:
    """Tell Dask how big a Polars frame is (it would count ~50 bytes, the Python object, and
    neither spill nor report transfers right). Run on the client and on every worker."""
    from dask.sizeof import sizeof

    sizeof.register(pl.DataFrame)(_frame_size)


@contextmanager
def dask_client(scheduler: str | None = None) -> Iterator[Any]:
    """A client of the scheduler at `scheduler`, or of a LocalCluster of two one-thread worker
    processes on 127.0.0.1 (closed on exit)."""
    from distributed import Client, LocalCluster

    polars_sizes()
    if scheduler:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with client:
            client.run(polars_sizes)
            yield client
        return
    with LocalCluster(host="127.0.0.1", processes=True, n_workers=LOCAL_WORKERS,
                      threads_per_worker=1, dashboard_address=":0", env=WORKER_ENV,
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        client.run(polars_sizes)
        yield client


def rejects_folder(out: str | Path) -> Path:
    """`scores/` -> `scores.rejects/` (the contract's rejects folder of the dask engine)."""
    out = Path(out)
    return out.with_name(f"{out.name}.rejects")


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


@contextmanager
def publishing_folders(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary sibling folders to write into, renamed onto `targets` (in that order, an
    existing folder replaced) only when the block completes; removed if it fails."""
    temps: list[Path] = []
    try:
        for target in targets:
            if target.exists() and not target.is_dir():
                raise CatalogError(f"{target}: is a file; the dask engine writes a folder there")
            target.parent.mkdir(parents=True, exist_ok=True)
            temps.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial",
                                               dir=target.parent)))
        yield tuple(temps)
        for temp, target in zip(temps, targets, strict=True):
            old = target.with_name(f".{target.name}.{time.time_ns()}.old")
            if target.exists():
                target.rename(old)
            temp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def contract_columns(parts: list[Part]) -> tuple[set[str], list[str], list[str]]:
    """(contract columns found in some file, contract columns missing from at least one file,
    columns outside the contract), as `read_catalog` reports them."""
    per_file = [set(_open(file).schema_arrow.names) for file in dict.fromkeys(p.file
                                                                                for p in parts)]
    names = set().union(*per_file)
    absent = [c for c in SCHEMA if any(c not in found for found in per_file)]
    return names & set(SCHEMA), absent, sorted(names - set(SCHEMA))


def run_parts(client: Any, batch: ShuffledBatch, task: Callable[..., dict[str, Any]],
              *args: Any) -> list[dict[str, Any]]:
    """`task(part_number, part, files, duplicates, aggregates, *args)` on every partition
    (`aggregates`: where its `PartAggregates` rows are), its counts gathered in order."""
    futures = [client.submit(task, i, part, batch.files, batch.duplicates, agg, *args,
                             pure=False)
               for i, (part, agg) in enumerate(zip(batch.parts, batch.aggregates, strict=True))]
    return list(client.gather(futures))


def _feature_part(number: int, part: Part, files: list[str], duplicates: pl.DataFrame,
                  aggregates: PartAggregates, state: FeatureState, now: datetime,
                  keep: tuple[str, ...], folders: tuple[Path, Path]) -> dict[str, Any]:
    good, rejects, nan = checked_part(part, files, duplicates, state.currency, now)
    build_features(good.lazy(), state, aggregates=aggregates.read(), keep=keep).sink_parquet(
        folders[0] / part_name(number))
    rejects.sort("row_number").write_parquet(folders[1] / part_name(number))
    return {"features": good.height, "rejected": rejects.height, "nan": nan}


def _feature_state(source: str, state_dir: Path | None) -> tuple[FeatureState, bool]:
    if state_dir is not None and (state_dir / "state.json").exists():
        return FeatureState.load(state_dir), False
    if "://" in source:
        raise CatalogError(f"{source}: fitting a feature state reads the catalog on this "
                           "machine; pass --state with a saved state for a remote catalog")
    state = fit_state(read_catalog(source, currency=DEFAULT_CURRENCY).rows,
                      currency=DEFAULT_CURRENCY)
    if state_dir is not None:
        state.save(state_dir)
    return state, True


def feature_table_dask(source: str | Path, out: str | Path, *, scheduler: str | None = None,
                       state_dir: str | Path | None = None,
                       partition_rows: int | None = None) -> dict[str, object]:
    """`knockoff features --engine dask`: the feature table as `out/part-*.parquet`, rejects
    in `out.rejects/`, the same rows and columns as the local engine. The state, when not
    given, is fitted here with the local engine's `fit_state` (streaming)."""
    started, out, source = time.perf_counter(), Path(out), str(source)
    state_path = Path(state_dir) if state_dir is not None else None
    state, fitted = _feature_state(source, state_path)
    now = datetime.now(UTC)
    with dask_client(scheduler) as client:
        parts = list_parts(source, partition_rows or PARTITION_ROWS)
        files = list(dict.fromkeys(p.file for p in parts))
        present, _, extra = contract_columns(parts)
        keep = ("listing_id", "seller_id", "listed_at", "category") + (
            (LABEL,) if LABEL in present else ())
        targets = (rejects_folder(out), out)
        if "://" not in source:
            refuse_overwriting_inputs(targets, source, [Path(f) for f in files])
        with publishing_folders(*targets) as (rejects_tmp, out_tmp), \
                scratch_folder(out) as scratch:
            batch = shuffled_batch(client, parts, state, now, scratch)
            counts = run_parts(client, batch, _feature_part, state, now, keep,
                               (out_tmp, rejects_tmp))
    features, rejected = (sum(c[k] for c in counts) for k in ("features", "rejected"))
    return {
        "rows": features + rejected, "features": features, "rejected": rejected,
        "out": str(out), "rejects": str(rejects_folder(out)),
        "state": str(state_path) if state_path is not None else None, "state_fitted": fitted,
        "ignored_columns": extra, "nan_as_missing": nan_totals(counts),
        "engine": "dask", "partitions": len(batch.parts), "shuffle_bytes": batch.shuffle_bytes,
        "seconds": round(time.perf_counter() - started, 2),
    }


def nan_totals(counts: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for name, n in c["nan"].items():
            total[name] = total.get(name, 0) + n
    return {k: v for k, v in total.items() if v}
