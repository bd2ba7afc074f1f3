"""`knockoff tune`: Optuna search over LightGBM's main parameters, one nested MLflow run per
trial, the best config written as TOML.

Tuning never sees the validation window that `knockoff train` reports on: it drops that window
(and the label delay before it) and splits what is left again by time."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import optuna
import polars as pl

from features.catalog import read_catalog
from serving import tracking
from training.compare import evaluate_rows
from training.config import TrainConfig
from training.dataset import matrix, prepare
from training.evaluate import PRIMARY
from training.split import time_windows
from training.train import fit_lightgbm


def search_space(trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
    return base.replace(
        num_leaves=trial.suggest_int("num_leaves", 8, 128, log=True),
        learning_rate=trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        num_boost_round=trial.suggest_int("num_boost_round", 100, 600, step=50),
        min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 10, 200, log=True),
        feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
        bagging_fraction=trial.suggest_float("bagging_fraction", 0.5, 1.0),
        lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    )


def tune(
    catalog_path: str | Path,
    trials: int,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    valid_from: datetime | None = None,
    progress: bool = True,
) -> dict[str, object]:
    base = config or TrainConfig()
    listed = read_catalog(catalog_path, currency=base.currency).rows.select(
        pl.col("listed_at").min().alias("first"), pl.col("listed_at").max().alias("last")
    ).collect(engine="streaming")
    outer = time_windows(listed["first"].item(), listed["last"].item(), valid_from=valid_from,
                         valid_days=base.valid_days, delay_days=base.label_delay_days)
    print(f"knockoff tune: features (rows before {outer.train_end:%Y-%m-%d}) ...",
          file=sys.stderr, flush=True)
    prepared = prepare(catalog_path, base, None, before=outer.train_end)
    valid = prepared.valid_labelled
    X_valid = matrix(valid)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed))
    tags = {"catalog": str(catalog_path), "catalog_fingerprint": prepared.fingerprint,
            "tune_train_end": prepared.windows.train_end.isoformat(),
            "tune_valid_start": prepared.windows.valid_start.isoformat(),
            "held_out_from": outer.valid_start.isoformat(), "trials": trials}

    with tracking.start_run("tune", base.params(), tags) as parent_id:

        def objective(trial: optuna.Trial) -> float:
            candidate = search_space(trial, base)
            with tracking.start_run(f"trial-{trial.number}", candidate.params(),
                                    {"trial": trial.number}, nested=True):
                booster = fit_lightgbm(prepared.train, valid, candidate, progress=False)
                score = booster.predict(X_valid, num_threads=candidate.threads)
                metrics = evaluate_rows(valid, score, candidate).metrics
                tracking.log_metrics({**metrics, "best_iteration": booster.current_iteration()})
            return metrics[PRIMARY]

        study.optimize(objective, n_trials=trials, show_progress_bar=progress)
        best = search_space(optuna.trial.FixedTrial(study.best_params), base)
        tracking.log_metrics({f"best_{PRIMARY}": study.best_value})
        tracking.log_text(best.to_toml(), "best.toml")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(best.to_toml())
    return {"run_id": parent_id, "trials": trials, f"best_{PRIMARY}": study.best_value,
            "best_params": study.best_params, "config": str(out),
            "tuned_on": {"train_end": prepared.windows.train_end.isoformat(),
                         "valid_start": prepared.windows.valid_start.isoformat(),
                         "held_out_from": outer.valid_start.isoformat()}}

