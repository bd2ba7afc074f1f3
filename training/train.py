"""`knockoff train` as named steps, each a public function testable alone:

prepare (validate, split by time, features; `training.dataset`) -> fit (LightGBM and the
logistic baseline) -> evaluate (model against baselines, threshold; `training.compare`) ->
log (MLflow; `training.report`) -> export (ONNX bundle, registered) -> decide promotion
(`training.promote`). `train` runs them in that order inside one MLflow run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from features.contract import LABEL
from features.registry import FEATURE_COLUMNS, MONOTONE
from serving import tracking
from serving.drift import reference_table
from serving.timing import Clock
from training.baselines import fit_logistic
from training.compare import RunEvaluation, evaluate_models
from training.config import TrainConfig
from training.dataset import (
    Prepared,
    TrainError,
    holdout_features,
    labels,
    matrix,
    prepare,
)
from training.evaluate import PRIMARY
from training.export import write_bundle
from training.labels import Labels
from training.promote import decide_promotion, score_champion
from training.report import (
    TrainResult,
    log_evaluation,
    log_outcome,
    log_training_data,
    model_card,
    run_name,
    run_tags,
    training_curves,
)
from training.variants import VariantModel, fit_variants, variants_writer


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def lgb_params(config: TrainConfig, y_train: NDArray[np.int8]) -> dict[str, object]:
    positives = max(int(y_train.sum()), 1)
    weight = config.scale_pos_weight or float(np.sqrt((len(y_train) - positives) / positives))
    return {
        "objective": "binary", "metric": "binary_logloss", "verbosity": -1,  # smooth for stopping
        "num_leaves": config.num_leaves, "max_depth": config.max_depth,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf, "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction, "bagging_freq": config.bagging_freq,
        "lambda_l2": config.lambda_l2, "scale_pos_weight": weight, "seed": config.seed,
        "deterministic": True, "force_row_wise": True, "num_threads": config.threads,
        "monotone_constraints": [MONOTONE.get(name, 0) for name in FEATURE_COLUMNS],
        "monotone_constraints_method": "advanced",
    }


def fit_lightgbm(
    train: pl.DataFrame, stop: pl.DataFrame, config: TrainConfig, progress: bool = True
) -> lgb.Booster:
    """LightGBM on labelled rows, early-stopped on `stop`; the returned booster holds only the
    trees up to the best iteration."""
    y_train = labels(train)
    data = lgb.Dataset(matrix(train), y_train, feature_name=list(FEATURE_COLUMNS),
                       free_raw_data=True)
    check = lgb.Dataset(matrix(stop), labels(stop), reference=data)
    bar = tqdm(total=config.num_boost_round, desc="boosting", unit="tree", disable=not progress,
               file=sys.stderr, leave=False)

    def tick(env: lgb.callback.CallbackEnv) -> None:
        bar.update(1)

    try:
        booster = lgb.train(
            lgb_params(config, y_train), data, num_boost_round=config.num_boost_round,
            valid_sets=[check], valid_names=["stop"],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), tick],
        )
    finally:
        bar.close()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def fit_final_lightgbm(train: pl.DataFrame, config: TrainConfig,
                       progress: bool = True) -> lgb.Booster:
    """Early stopping on the newest `early_stopping_share` of the training rows (by time),
    then a refit on all training rows with that many trees. The validation window is never
    used to select the model, so its metrics, and the champion comparison, are fair."""
    cut = train["listed_at"].quantile(1.0 - config.early_stopping_share, "nearest")
    older, newest = train.filter(pl.col("listed_at") < cut), train.filter(
        pl.col("listed_at") >= cut)
    if older[LABEL].n_unique() < 2 or newest[LABEL].n_unique() < 2:
        raise TrainError("too few labelled training rows to hold some out for early stopping")
    rounds = fit_lightgbm(older, newest, config, progress).current_iteration()
    y = labels(train)
    data = lgb.Dataset(matrix(train), y, feature_name=list(FEATURE_COLUMNS), free_raw_data=True)
    return lgb.train(lgb_params(config, y), data, num_boost_round=max(rounds, 1))


@dataclass(frozen=True, eq=False)
class Models:
    """What the fit step returns: the model, and the logistic baseline on the same rows."""

    booster: lgb.Booster
    logistic: Pipeline


FitStep = Callable[[Prepared, TrainConfig, bool], Models]  # fit_models or another engine's


def fit_models(prepared: Prepared, config: TrainConfig, progress: bool = True) -> Models:
    """The fit step: LightGBM (early stopping inside the training window, then a refit on all
    of it) and the logistic baseline, both on the training window's labelled rows."""
    booster = fit_final_lightgbm(prepared.train, config, progress)
    logistic = fit_logistic(matrix(prepared.train), labels(prepared.train), config.seed)
    return Models(booster, logistic)


def export_bundle(folder: Path, prepared: Prepared, booster: lgb.Booster,
                  evaluation: RunEvaluation, config: TrainConfig, commit: str,
                  variants: tuple[VariantModel, ...] = ()) -> Path:
    """The export step: the ONNX bundle in `folder/bundle` (checked against LightGBM on the
    validation rows), with the threshold, windows and validation metrics in its spec, and
    its schema variants in `variants/`."""
    windows = prepared.windows
    identity = {
        "model_name": config.model_name, "git_commit": commit,
        "train_window": {"start": windows.train_start, "end": windows.train_end},
        "valid_window": {"start": windows.valid_start, "end": windows.valid_end},
        "currency": config.currency,
    }
    return write_bundle(
        folder / "bundle", booster, FEATURE_COLUMNS, evaluation.threshold.threshold,
        matrix(prepared.valid_labelled), write_state=prepared.state.save,
        config_text=config.to_toml(),
        spec_extra={
            **identity, "threshold_rule": evaluation.threshold.rule,
            "metrics": {k: (v if v == v else None)  # NaN: undefined here
                        for k, v in evaluation.model.metrics.items()},
        },
        threads=config.threads,
        drift_reference=reference_table(prepared.valid.select(FEATURE_COLUMNS), booster.predict(
            matrix(prepared.valid), num_threads=config.threads), evaluation.threshold.threshold),
        write_extra=variants_writer(variants, prepared, config, identity),
    )


@contextmanager
def _step(clock: Clock, name: str) -> Iterator[None]:
    """Time a step, saying on stderr that it started (no silent minutes on a big catalog)."""
    print(f"knockoff train: {name} ...", file=sys.stderr, flush=True)
    with clock.stage(name):
        yield


def train(
    catalog_path: str | Path,
    config: TrainConfig | None = None,
    *,
    valid_from: datetime | None = None,
    holdout: str | Path | None = None,
    progress: bool = True,
    fit_step: FitStep | None = None,
    engine: str = "local",
    decided: Labels | None = None,
) -> TrainResult:
    """The whole training run; see the module docstring. `holdout`: another catalog (e.g. a
    later one, another seed) on which model and baselines are evaluated too. The MLflow run
    opens first, so its duration is the training's and it ends FAILED if a step raises.
    `decided`: officers' decisions over the catalog's labels (`training.labels`)."""
    config = config or TrainConfig()
    with tracking.start_run(run_name(catalog_path), config.params(),
                            {"catalog": str(catalog_path)}) as run_id:
        return _train_steps(run_id, catalog_path, config, valid_from, holdout, progress,
                            fit_step, engine, decided)


def _train_steps(run_id: str, catalog_path: str | Path, config: TrainConfig,
                 valid_from: datetime | None, holdout: str | Path | None,
                 progress: bool, fit_step: FitStep | None = None,
                 engine: str = "local", decided: Labels | None = None) -> TrainResult:
    """`train`'s steps, in order, inside its MLflow run."""
    clock = Clock()
    with _step(clock, "features"):
        prepared = prepare(catalog_path, config, valid_from, decided=decided)
    log_training_data(prepared, catalog_path)
    with _step(clock, "fit"):
        models = (fit_step or fit_models)(prepared, config, progress)
    with _step(clock, "variants"):
        variants = fit_variants(catalog_path, prepared, config, fit_final_lightgbm, progress)
    with _step(clock, "evaluate"):
        other = holdout_features(holdout, prepared.state, config) if holdout else None
        evaluation = evaluate_models(prepared.valid, models.booster, models.logistic, config,
                                     holdout=other)
    commit = git_commit()
    tags = {**run_tags(catalog_path, prepared, evaluation, models.booster, holdout, commit),
            "engine": engine}
    with _step(clock, "mlflow"):
        tracking.set_run_tags(tags)
        tracking.log_curves(training_curves(models.booster, prepared))
        log_evaluation(evaluation, models.booster, matrix(prepared.valid_labelled), config)
        with tempfile.TemporaryDirectory() as tmp, clock.stage("export"):
            folder = export_bundle(Path(tmp), prepared, models.booster, evaluation, config,
                                   commit, variants)
            ref = tracking.register_bundle(folder, config.model_name, run_id)
        champion = score_champion(config.model_name, prepared.valid_rows,
                                  prepared.windows.valid_start, config)
        promotion = decide_promotion(evaluation.model.metrics[PRIMARY], champion,
                                     logistic=evaluation.comparisons["valid"].evaluations[
                                         "logistic"].metrics[PRIMARY])
        log_outcome(model_card(config, prepared, evaluation, ref.label, promotion, holdout),
                    ref, promotion)
        bundle = tracking.bundle_location(run_id)
    return TrainResult.of(run_id, ref.label, evaluation, promotion, bundle, clock.seconds,
                          prepared.input)
