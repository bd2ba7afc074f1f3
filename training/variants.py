"""The variants step: one model per configured schema (optional input groups absent).

Each variant is trained like the main model on the same windows, the same fitted feature state
and the same labelled rows, but from catalog rows whose inputs of its absent groups are null
before the features are built (so batch aggregates such as seller clusters are computed as for
a platform that never sends them), with the other groups masked as usual
(`dataset.hide_optional`). Its threshold is chosen on its own validation rows; it is exported
by `export.write_bundle` (parity-checked) into `variants/<key>/` of the main bundle, where the
scorer finds it (`serving.variants`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score

from features.catalog import read_catalog
from features.contract import LABEL, TRUTH
from features.fitted import brand_risk_as_of
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS
from features.state import FeatureState
from serving.drift import reference_table
from serving.variants import SCHEMA_KEY, VARIANTS_DIR, absent_columns, hide_inputs, schema_key
from training.config import TrainConfig
from training.dataset import KEEP, Prepared, hide_optional, labels, matrix
from training.evaluate import PRIMARY, ThresholdChoice, choose_threshold
from training.export import write_bundle
from training.split import split

FitFunction = Callable[[pl.DataFrame, TrainConfig, bool], lgb.Booster]


@dataclass(frozen=True, eq=False)
class VariantModel:
    """A fitted schema variant: its model, threshold and validation rows."""

    absent: tuple[str, ...]
    booster: lgb.Booster
    threshold: ThresholdChoice
    valid_X: NDArray[np.float32]  # the labelled validation rows, for the parity check
    average_precision: float
    seconds: float
    reference: pl.DataFrame  # its drift reference: every validation row (serving.drift)

    @property
    def key(self) -> str:
        return schema_key(self.absent)


def variant_features(
    train_rows: pl.LazyFrame, valid_rows: pl.LazyFrame, state: FeatureState,
    absent: tuple[str, ...], config: TrainConfig,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The labelled training rows (masked) and every validation row's features, as `prepare`
    builds them, from rows without the `absent` groups' inputs."""
    train, valid = pl.collect_all(
        [build_features(hide_inputs(train_rows, absent), state, keep=(*KEEP, "brand")),
         build_features(hide_inputs(valid_rows, absent), state, keep=KEEP)],
        engine="in-memory",
    )
    train = train.with_columns(
        brand_risk_as_of(train, timedelta(days=config.label_delay_days),
                         state.risk.smoothing, state.risk.prior).cast(pl.Float32)
    ).filter(pl.col(LABEL).is_not_null()).drop("brand")
    return hide_optional(train, config), valid


def fit_variant(train: pl.DataFrame, valid: pl.DataFrame, absent: tuple[str, ...],
                config: TrainConfig, fit: FitFunction, progress: bool,
                started: float) -> VariantModel:
    """Fit one variant, choose its threshold on its own labelled validation rows and keep its
    drift reference over all of them (`started`: when its step began, by
    `time.perf_counter`)."""
    booster = fit(train, config, progress)
    labelled = valid.filter(pl.col(LABEL).is_not_null())
    X = matrix(labelled)
    scores = booster.predict(X, num_threads=config.threads)
    y = labels(labelled)
    threshold = choose_threshold(y, scores, config.target_precision)
    ap = float(average_precision_score(y, scores))
    reference = reference_table(valid.select(FEATURE_COLUMNS), booster.predict(
        matrix(valid), num_threads=config.threads), threshold.threshold)
    return VariantModel(absent, booster, threshold, X, ap, time.perf_counter() - started,
                        reference)


def fit_variants(catalog_path: str | Path, prepared: Prepared, config: TrainConfig,
                 fit: FitFunction, progress: bool = True) -> tuple[VariantModel, ...]:
    """The variants step: every `config.schema_variants` entry on `prepared`'s windows."""
    if not config.schema_variants:
        return ()
    rows = read_catalog(catalog_path, currency=config.currency, keep=(TRUTH,)).rows.collect(
        engine="in-memory")
    train_rows, valid_rows = split(rows.lazy(), prepared.windows)
    fitted = []
    for absent in config.schema_variants:
        start = time.perf_counter()
        train, valid = variant_features(train_rows, valid_rows, prepared.state, absent, config)
        model = fit_variant(train, valid, absent, config, fit, progress, start)
        print(f"knockoff train: variant {model.key}: average precision "
              f"{model.average_precision:.3f}, threshold {model.threshold.threshold:.4f}, "
              f"{model.seconds:.1f} s", file=sys.stderr, flush=True)
        fitted.append(model)
    return tuple(fitted)


def variants_writer(variants: tuple[VariantModel, ...], prepared: Prepared, config: TrainConfig,
                    spec_extra: Mapping[str, Any]) -> Callable[[Path], None] | None:
    """What `write_bundle(write_extra=...)` calls to write each variant as a complete bundle
    (its own spec with `schema`, threshold and metrics; same feature state) under
    `variants/<key>/`; None without variants."""
    if not variants:
        return None

    def write(folder: Path) -> None:
        for model in variants:
            schema = {"key": model.key, "absent_groups": list(model.absent),
                      "absent_columns": list(absent_columns(model.absent))}
            write_bundle(
                folder / VARIANTS_DIR / model.key, model.booster, FEATURE_COLUMNS,
                model.threshold.threshold, model.valid_X, write_state=prepared.state.save,
                config_text=config.to_toml(), threads=config.threads,
                drift_reference=model.reference,
                spec_extra={**spec_extra, SCHEMA_KEY: schema,
                            "threshold_rule": model.threshold.rule,
                            "metrics": {PRIMARY: model.average_precision}},
            )

    return write
