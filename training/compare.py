"""The evaluate step: the model and both baselines scored on the same rows and measured the same
way, the model's average-precision gain over each baseline, and the decision threshold."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from features.contract import LABEL, TRUTH
from training.baselines import rules_baseline_score
from training.config import TrainConfig
from training.dataset import labels, matrix
from training.evaluate import (
    Evaluation,
    Gain,
    ThresholdChoice,
    average_precision_gains,
    choose_threshold,
    evaluate,
)

MODEL = "lightgbm"


@dataclass(frozen=True, eq=False)
class Comparison:
    """The model and the baselines on the rows of one window that have a label."""

    y: NDArray[np.int8]
    scores: dict[str, NDArray[np.float64]]  # model or baseline name -> score per row
    evaluations: dict[str, Evaluation]
    gains: dict[str, Gain]  # baseline -> the model's AP gain over it (seller bootstrap)


@dataclass(frozen=True, eq=False)
class RunEvaluation:
    """Every comparison of a run, by where it was measured (`valid`; `valid_truth` on catalogs
    with ground truth; `holdout`, `holdout_truth` with another catalog), and the threshold
    chosen on the validation window's labelled rows."""

    comparisons: dict[str, Comparison]
    threshold: ThresholdChoice

    @property
    def model(self) -> Evaluation:
        """The model on the validation window's labelled rows: the run's headline."""
        return self.comparisons["valid"].evaluations[MODEL]


def evaluate_rows(frame: pl.DataFrame, score: NDArray[np.float64], config: TrainConfig,
                  column: str = LABEL) -> Evaluation:
    """`evaluate` on a feature table's rows (each with `column` set) with the config's k."""
    return evaluate(labels(frame, column), score, frame["listed_at"].dt.date(),
                    frame["seller_id"], frame["category"], config.review_capacity)


def compare(
    frame: pl.DataFrame, booster: lgb.Booster, logistic: Pipeline, config: TrainConfig,
    column: str = LABEL,
) -> Comparison:
    """The model and both baselines on the rows of a feature table that have `column`, and the
    model's average-precision gain over each baseline (seller bootstrap)."""
    rows = frame.filter(pl.col(column).is_not_null())
    X = matrix(rows)
    scores = {
        MODEL: booster.predict(X, num_threads=config.threads),
        "rules": rules_baseline_score(rows),
        "logistic": logistic.predict_proba(X.astype(np.float64))[:, 1],
    }
    y = labels(rows, column)
    evaluations = {name: evaluate_rows(rows, score, config, column)
                   for name, score in scores.items()}
    baselines = {name: score for name, score in scores.items() if name != MODEL}
    gains = average_precision_gains(y, scores[MODEL], baselines, rows["seller_id"],
                                    seed=config.seed)
    return Comparison(y, scores, evaluations, gains)


def evaluate_models(
    valid: pl.DataFrame, booster: lgb.Booster, logistic: Pipeline, config: TrainConfig,
    holdout: pl.DataFrame | None = None,
) -> RunEvaluation:
    """The evaluate step, on the validation window's feature table (and another catalog's, if
    given): labelled rows always, every row against the ground truth when the table has it."""
    comparisons: dict[str, Comparison] = {}
    for where, table in (("valid", valid), ("holdout", holdout)):
        if table is None:
            continue
        comparisons[where] = compare(table, booster, logistic, config)
        if TRUTH in table.columns:
            comparisons[f"{where}_truth"] = compare(table, booster, logistic, config, TRUTH)
    valid_run = comparisons["valid"]
    threshold = choose_threshold(valid_run.y, valid_run.scores[MODEL], config.target_precision)
    return RunEvaluation(comparisons, threshold)
