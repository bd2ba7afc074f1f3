"""The ONNX batch scorer: any catalog size in bounded memory, scores with reasons.

Seller, image and network aggregates are computed over the whole batch first (one read of the
batch, then group-bys); then one Polars streaming query computes features batch by batch,
scores them with onnxruntime inside the query and writes them through Polars' sink, so the
result is the same as scoring the catalog in one piece."""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray
from tqdm.auto import tqdm

from features.aggregates import BatchAggregates, batch_aggregates
from features.catalog import Catalog, CatalogError, read_catalog
from features.contract import REJECTS_SCHEMA, SCORED_SCHEMA
from features.outputs import (
    output_format,
    publishing,
    refuse_overwriting_inputs,
    rejects_path,
    write_frame,
)
from features.pipeline import ID_COLUMNS, build_features
from features.registry import FEATURE_COLUMNS
from features.state import FeatureState
from serving import tracking
from serving.bundle import Bundle, BundleError
from serving.explain import PathContributions
from serving.reasons import top_reasons
from serving.timing import Clock
from serving.tracking import DEFAULT_MODEL
from serving.variants import (
    SCHEMA_COLUMN,
    VARIANTS_DIR,
    SchemaPlan,
    Variants,
    plan_catalog,
    plan_rows,
    split_scores,
)

CHUNK_ROWS = 100_000  # rows per streaming batch (Polars' morsel size while scoring)


class ModelLoadError(Exception):
    """The model reference cannot be turned into a usable bundle (message says why)."""


@dataclass(frozen=True, eq=False)
class Scorer:
    """A loaded bundle ready to score many batches: load once, call `score` per batch."""

    bundle: Bundle
    state: FeatureState
    model_version: str
    explain: PathContributions
    variants: Variants | None = None  # the bundle's schema variants (serving.variants)
    # sees every scored feature table, its scores and the bundle (main or schema variant) that
    # scored it, e.g. to count drift (serving.drift.BatchDrift)
    observer: Callable[[Bundle, pl.DataFrame, NDArray[np.float64]], None] | None = None

    @classmethod
    def load(cls, ref: str = DEFAULT_MODEL, threads: int = 2) -> Scorer:
        """`ref`: a bundle folder, `runs:/RUN/bundle`, or a registered model
        (`models:/knockoff@champion`, `models:/knockoff/3`)."""
        try:
            folder, model = tracking.download_bundle(ref)
            bundle = Bundle.load(folder, threads=threads)
            state = FeatureState.load(bundle.state_dir)
        except (tracking.RegistryError, BundleError, FileNotFoundError, ValueError) as exc:
            raise ModelLoadError(str(exc)) from None
        if tuple(bundle.features) != FEATURE_COLUMNS:
            raise ModelLoadError(
                f"{folder}: the bundle's features do not match this version of Knockoff's "
                f"features ({len(bundle.features)} vs {len(FEATURE_COLUMNS)}); retrain it"
            )
        version = model.label if model else bundle.spec.get("model_version") or "unregistered"
        explain = PathContributions.from_trees(bundle.trees)
        try:
            variants = (Variants.load(bundle, explain)
                        if (bundle.path / VARIANTS_DIR).is_dir() else None)
        except BundleError as exc:
            raise ModelLoadError(str(exc)) from None
        return cls(bundle, state, str(version), explain, variants)

    def with_variant(self, key: str) -> Scorer:
        """This scorer with the schema variant `key`'s model and threshold only."""
        if self.variants is None:
            raise ModelLoadError(f"{self.bundle.path}: the bundle has no schema variants")
        variant = self.variants.get(key)
        return dataclasses.replace(self, bundle=variant.bundle, explain=variant.explain,
                                   variants=None)

    def plan(self, catalog: Catalog) -> SchemaPlan | None:
        """The catalog's rows prepared for the variant of each file (None: no variants)."""
        return plan_catalog(catalog, self.variants) if self.variants else None

    def keep_columns(self, rows: pl.LazyFrame) -> tuple[str, ...]:
        """The columns a feature table keeps: ids, and each row's schema variant if any."""
        has_schema = SCHEMA_COLUMN in rows.collect_schema().names()
        return ID_COLUMNS + ((SCHEMA_COLUMN,) if has_schema else ())

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def score_features(self, features: pl.DataFrame, explain: bool = True,
                       seconds: dict[str, float] | None = None) -> pl.DataFrame:
        """Scores for a feature table (ids + FEATURE_COLUMNS): the contract's output columns
        plus `reason_features` (which features each reason comes from). `seconds`, if given,
        accumulates the time spent in inference, reasons and assembling the output. Rows
        carrying a schema variant's key (`SchemaPlan.rows`) are scored by that variant."""
        if self.variants is not None and SCHEMA_COLUMN in features.columns:
            return split_scores(features, lambda key, part: self.with_variant(key)
                                .score_features(part, explain, seconds))
        clock = Clock(seconds)
        X = features.select(FEATURE_COLUMNS).to_numpy().astype(np.float32, copy=False)
        try:
            score = self.bundle.predict(X) if len(X) else np.empty(0)
        except BundleError as exc:  # a score NaN or outside 0..1 is never written
            raise ModelLoadError(str(exc)) from None
        flagged = score >= self.threshold
        rows = np.flatnonzero(flagged) if explain else np.empty(0, dtype=np.int64)
        clock.lap("inference")
        words: list[list[str]] = []
        names: list[list[str]] = []
        if rows.size:
            words, names = top_reasons(self.explain(X[rows], self.bundle.threads), X[rows])
        clock.lap("reasons")
        if self.observer is not None:
            self.observer(self.bundle, features, score)
            clock.lap("observer")
        n = len(X)
        scored = pl.DataFrame({
            "listing_id": features["listing_id"], "seller_id": features["seller_id"],
            "score": score, "flagged": flagged,
            "reasons": _scatter_lists(words, rows, n),
            "model_version": pl.repeat(self.model_version, n, eager=True, dtype=pl.String),
            "reason_features": _scatter_lists(names, rows, n),
        }).cast({**SCORED_SCHEMA, "reason_features": pl.List(pl.String)})
        clock.lap("assembly")
        return scored

    def score(
        self, rows: pl.LazyFrame, *, aggregates: BatchAggregates | None = None,
        explain: bool = True,
    ) -> pl.DataFrame:
        """Score validated catalog rows (one batch, in memory; with schema variants, by the
        one that fits the columns null on every row)."""
        if self.variants is not None and aggregates is None:
            rows = plan_rows(rows, self.variants).rows
        features = build_features(rows, self.state, aggregates=aggregates,
                                  keep=self.keep_columns(rows)).collect(engine="in-memory")
        return self.score_features(features, explain)

    def scored(
        self, rows: pl.LazyFrame, aggregates: BatchAggregates, *, reasons_as_text: bool = False,
        on_batch: Callable[[pl.DataFrame], None] | None = None,
        seconds: dict[str, float] | None = None,
    ) -> pl.LazyFrame:
        """A batch of any size as one streaming query: features, then the contract's columns
        scored batch by batch (`reasons` joined with "|" if `reasons_as_text`, as CSV needs;
        `on_batch` sees each scored batch, e.g. to count it). Sink it: the sink pulls batches
        as it writes, so features never run far ahead of scoring and memory stays bounded (a
        Python loop over `collect_batches` let Polars buffer the whole batch's features when
        inference was the slower side: +1.5 GB at 10M rows, growing with the batch)."""

        lock = threading.Lock()  # Polars may call from several threads; score one at a time

        def score_batch(features: pl.DataFrame) -> pl.DataFrame:
            with lock:
                batch = self.score_features(features, seconds=seconds).drop("reason_features")
                if reasons_as_text:
                    batch = batch.with_columns(pl.col("reasons").list.join("|"))
                if on_batch is not None:
                    on_batch(batch)
                return batch

        schema = {**SCORED_SCHEMA, **({"reasons": pl.String} if reasons_as_text else {})}
        return build_features(rows, self.state, aggregates=aggregates,
                              keep=self.keep_columns(rows)).map_batches(
            score_batch, schema=schema, streamable=True)


def _scatter_lists(lists: list[list[str]], rows: NDArray[np.int64], n: int) -> pl.Series:
    """A list column of n rows: lists[i] at rows[i], empty lists elsewhere. Built from Arrow
    offsets (a join of the few explained rows onto every row took 20x longer)."""
    lengths = np.zeros(n, dtype=np.int64)
    lengths[rows] = [len(x) for x in lists]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array([w for x in lists for w in x], type=pa.large_string())
    return pl.Series(pa.LargeListArray.from_arrays(pa.array(offsets), values))


def score_catalog(
    source: str | Path,
    out: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    fmt: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    threads: int = 2,
    progress: bool = False,
    scorer: Scorer | None = None,
) -> dict[str, object]:
    """The `knockoff score` job: validate, aggregate over the whole batch, score in chunks,
    write scores and rejects next to each other. Returns the counts for the summary line."""
    out = Path(out)
    fmt = output_format(out, fmt)
    seconds: dict[str, float] = {}
    clock = Clock(seconds)
    scorer = scorer or Scorer.load(model, threads=threads)
    clock.lap("load_model")
    catalog = read_catalog(source, currency=scorer.state.currency)
    refuse_overwriting_inputs((out, rejects_path(out)), source, catalog.files)
    clock.lap("read_catalog")  # the first pass: row count and duplicate ids
    plan = scorer.plan(catalog)
    rows = plan.rows if plan else catalog.rows
    clock.lap("schema")
    aggregates = batch_aggregates(rows, scorer.state)
    total = int(aggregates.sellers["seller_listings"].sum())
    clock.lap("aggregates")

    counts = {"scored": 0, "flagged": 0}
    bar = tqdm(total=total, unit="row", unit_scale=True, desc="scoring", disable=not progress,
               file=sys.stderr)

    def count(batch: pl.DataFrame) -> None:
        counts["scored"] += batch.height
        counts["flagged"] += int(batch["flagged"].sum())
        bar.update(batch.height)

    # Both files are written under unique temporary names and renamed only when both are
    # complete, rejects first: whoever finds the scores finds their rejects beside them.
    with publishing(rejects_path(out), out) as (rejects_tmp, out_tmp), bar:
        query = scorer.scored(rows, aggregates, reasons_as_text=fmt == "csv", on_batch=count,
                              seconds=seconds)
        _sink(query, out_tmp, fmt, chunk_rows)
        scored, flagged = counts["scored"], counts["flagged"]
        if scored != total:  # every valid row must come out scored; never lose one silently
            raise CatalogError(f"{source}: scored {scored} rows but the batch has {total} "
                               "valid rows")
        # features and writing run inside Polars alongside scoring: they are the rest of this
        clock.lap("scoring")
        rejects = _rejects(catalog, scored)
        write_frame(rejects, rejects_tmp, fmt)
    clock.lap("rejects")
    return {
        "scored": scored, "rejected": rejects.height, "flagged": flagged,
        "rows": scored + rejects.height, "model_version": scorer.model_version,
        "threshold": scorer.threshold, "out": str(out), "rejects": str(rejects_path(out)),
        "ignored_columns": list(catalog.extra_columns),
        "absent_columns": list(catalog.absent_columns),
        "nan_as_missing": catalog.nan_as_missing,
        **(plan.summary() if plan else {}),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _sink(query: pl.LazyFrame, path: Path, fmt: str, chunk_rows: int) -> None:
    """Run the scoring query into Polars' own streaming sink (it pulls batches as it writes)."""
    with pl.Config(streaming_chunk_size=chunk_rows):
        if fmt == "csv":
            query.sink_csv(path, engine="streaming")
        else:
            query.sink_parquet(path, compression="zstd", engine="streaming")


def _rejects(catalog: Catalog, scored: int) -> pl.DataFrame:
    """The batch's bad rows, in file and row order; no second read when every row was valid."""
    if catalog.rows_read == scored:
        return pl.DataFrame(schema=REJECTS_SCHEMA)
    return catalog.rejects.sort("file", "row_number").collect(engine="streaming")
