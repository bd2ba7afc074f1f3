"""What a training run learns from and is measured on: the validated rows split by time, the
fitted feature state and both windows' feature tables, and an honest account of the input (rows
read, rows rejected and why)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from features.catalog import Catalog, read_catalog
from features.contract import LABEL, TRUTH
from features.fitted import brand_risk_as_of
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS, OPTIONAL_GROUPS
from features.state import FeatureState, fit_state
from training.config import TrainConfig
from training.labels import LabelJoin, Labels, apply_labels
from training.split import Windows, split, time_windows

KEEP = ("listing_id", "seller_id", "listed_at", "category", LABEL)
TOP_REASONS = 3


class TrainError(ValueError):
    """The catalog cannot train a model (no labels, one class only, empty window, too many
    rejected rows)."""


@dataclass(frozen=True)
class InputReport:
    """Rows read from the catalog, how many validation rejected, and the most frequent broken
    rules (a row breaking two rules counts for both)."""

    rows: int
    rejected: int
    top_reasons: tuple[tuple[str, int], ...]
    labels: LabelJoin | None = None  # officers' decisions joined (`train --labels`)

    @property
    def share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    def reasons_text(self) -> str:
        return "; ".join(f"{reason} ({n})" for reason, n in self.top_reasons) or "none"

    def describe(self) -> str:
        text = f"{self.rejected} of {self.rows} rows rejected ({self.share:.1%})"
        return text + (f"; top reasons: {self.reasons_text()}" if self.rejected else "")

    def top_reasons_json(self) -> list[dict[str, object]]:
        return [{"reason": reason, "rows": n} for reason, n in self.top_reasons]


def input_report(catalog: Catalog, top: int = TOP_REASONS) -> InputReport:
    """Count the catalog's rejects and their most frequent reasons (one streaming pass each)."""
    count, reasons = pl.collect_all([
        catalog.rejects.select(pl.len()),
        catalog.rejects.select(pl.col("reason").str.split("; ").alias("reason"))
        .explode("reason").group_by("reason").len()
        .sort(["len", "reason"], descending=[True, False]).head(top),
    ], engine="streaming")
    return InputReport(catalog.rows_read, int(count.item()),
                       tuple((str(r), int(n)) for r, n in reasons.iter_rows()))


def check_rejects(report: InputReport, source: str | Path, limit: float) -> None:
    """Refuse to train on a catalog that validation cut by more than `limit` (a share): the
    model would silently learn from what is left (e.g. a pandas export whose NaNs broke a
    column)."""
    if report.share > limit:
        raise TrainError(
            f"{source}: {report.rejected} of {report.rows} rows ({report.share:.1%}) were "
            f"rejected, more than the {limit:.1%} allowed; top reasons: "
            f"{report.reasons_text()}. Fix the catalog (`knockoff features` writes every "
            "rejected row with its reason next to its --out) or raise --max-reject-share"
        )


@dataclass(frozen=True, eq=False)
class Prepared:
    """Validated rows split by time, fitted feature state, and the feature tables."""

    windows: Windows
    state: FeatureState
    train: pl.DataFrame  # labelled training rows: KEEP + features
    valid: pl.DataFrame  # every validation row: KEEP (+ truth) + features
    valid_rows: pl.DataFrame  # the validation window's validated catalog rows
    counts: dict[str, int]
    fingerprint: str
    has_truth: bool
    input: InputReport

    @property
    def valid_labelled(self) -> pl.DataFrame:
        return self.valid.filter(pl.col(LABEL).is_not_null())


def matrix(frame: pl.DataFrame) -> NDArray[np.float32]:
    """The model's input: FEATURE_COLUMNS as a float32 matrix, nulls as NaN."""
    return frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float32, copy=False)


def labels(frame: pl.DataFrame, column: str = LABEL) -> NDArray[np.int8]:
    return frame[column].cast(pl.Int8).to_numpy()


def catalog_fingerprint(files: tuple[Path, ...]) -> str:
    """sha256 over each file's name, size and first and last MiB: cheap and content-bound."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def _read_rows(
    catalog_path: str | Path, config: TrainConfig, before: datetime | None,
    decided: Labels | None = None,
) -> tuple[Catalog, pl.DataFrame, InputReport]:
    """The catalog's valid rows (older than `before` if given) with the officers' decisions
    joined, refused when validation cut too many rows or left no labelled fakes and genuine
    listings."""
    catalog = read_catalog(catalog_path, currency=config.currency, keep=(TRUTH,))
    report = input_report(catalog)
    check_rejects(report, catalog_path, config.max_reject_share)
    rows = catalog.rows
    if before is not None:
        rows = rows.filter(pl.col("listed_at") < before)
    rows = rows.collect(engine="in-memory")
    if decided is not None:
        rows, joined = apply_labels(rows, decided)
        report = replace(report, labels=joined)
    if rows.is_empty():
        raise TrainError(f"{catalog_path}: no valid rows to train on "
                         f"({report.rejected} rejected)")
    if rows[LABEL].drop_nulls().n_unique() < 2:
        raise TrainError(f"{catalog_path}: training needs labelled fakes and genuine listings "
                         f"in {LABEL}; found {rows[LABEL].drop_nulls().unique().to_list()}")
    return catalog, rows, report


def prepare(
    catalog_path: str | Path, config: TrainConfig, valid_from: datetime | None,
    *, before: datetime | None = None, decided: Labels | None = None,
) -> Prepared:
    """Validate, join the officers' decisions (`decided`, see `read_labels`), split by time
    with the delay gap, fit the state on the older window and build both windows' features
    (seller and network aggregates over each window's rows). `before` drops newer rows first
    (tuning keeps the real validation window unseen)."""
    catalog, rows, report = _read_rows(catalog_path, config, before, decided)
    has_truth = TRUTH in catalog.extra_columns
    first, last = rows["listed_at"].min(), rows["listed_at"].max()
    windows = time_windows(first, last, valid_from=valid_from, valid_days=config.valid_days,
                           delay_days=config.label_delay_days)  # type: ignore[arg-type]
    train_lf, valid_lf = split(rows.lazy(), windows)
    state = fit_state(train_lf, label_cutoff=windows.train_end, currency=config.currency,
                      max_image_sellers=config.max_image_sellers)
    keep = KEEP + ((TRUTH,) if has_truth else ())
    train, valid = pl.collect_all(
        [build_features(train_lf, state, keep=(*keep, "brand")),
         build_features(valid_lf, state, keep=keep)],
        engine="in-memory",
    )
    # training rows see only labels older than themselves minus the delay, never their own
    train = train.with_columns(
        brand_risk_as_of(train, timedelta(days=config.label_delay_days),
                         state.risk.smoothing, state.risk.prior).cast(pl.Float32)
    ).filter(pl.col(LABEL).is_not_null()).drop("brand")
    train = hide_optional(train, config)
    for name, frame in (("training", train), ("validation", valid.filter(pl.col(LABEL)
                                                                          .is_not_null()))):
        if frame[LABEL].n_unique() < 2:
            raise TrainError(f"the {name} window has no labelled fakes or no labelled genuine "
                             "listings; move --valid-from or use a longer catalog")
    counts = {
        "rows": report.rows, "rows_valid": rows.height, "rows_rejected": report.rejected,
        "train_rows": train_lf.select(pl.len()).collect().item(), "train_labelled": train.height,
        "train_fakes": int(train[LABEL].sum()), "valid_rows": valid.height,
        "valid_labelled": int(valid[LABEL].is_not_null().sum()),
        "valid_fakes": int(valid[LABEL].sum()),
        **(report.labels.counts() if report.labels else {}),
    }
    return Prepared(windows, state, train, valid, valid_lf.collect(), counts,
                    catalog_fingerprint(catalog.files), has_truth, report)


def hide_optional(train: pl.DataFrame, config: TrainConfig) -> pl.DataFrame:
    """Null each OPTIONAL_GROUPS group on its own seeded random share of training rows.

    Training rows are all old enough to have sales history, but many listings scored are not
    (every row of a recent validation window); and an optional input a platform does not send
    at all would otherwise reach the model as values it never saw missing."""
    rng = np.random.default_rng(config.seed)
    hide_all = rng.random(train.height) < config.all_optional_mask_share  # required-only rows
    hidden = []
    for group, names in OPTIONAL_GROUPS.items():
        share = config.after_sale_mask_share if group == "after_sale" else \
            config.optional_mask_share
        hide = pl.Series((rng.random(train.height) < share) | hide_all)
        hidden += [pl.when(hide).then(None).otherwise(pl.col(n)).alias(n) for n in names]
    return train.with_columns(hidden)


def holdout_features(path: str | Path, state: FeatureState, config: TrainConfig) -> pl.DataFrame:
    """Another catalog's features through this run's fitted state (aggregates over itself)."""
    catalog = read_catalog(path, currency=config.currency, keep=(TRUTH,))
    keep = KEEP + ((TRUTH,) if TRUTH in catalog.extra_columns else ())
    return build_features(catalog.rows, state, keep=keep).collect(engine="in-memory")
