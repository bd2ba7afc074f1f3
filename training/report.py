"""What a training run reports: its MLflow metrics, figures, tables and tags (through
`serving.tracking`), the model card, and the summary line `knockoff train` prints."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score

from features.contract import LABEL
from features.registry import FEATURE_COLUMNS
from serving import tracking
from training.compare import MODEL, Comparison, RunEvaluation
from training.config import TrainConfig
from training.dataset import InputReport, Prepared, labels, matrix
from training.evaluate import PRIMARY, Evaluation, Gain, format_metric
from training.plots import (
    calibration_figure,
    importance_figure,
    pr_curve_figure,
    shap_summary_figure,
)
from training.promote import Promotion

SUMMARY_KEYS = ("average_precision", "precision_at_k", "precision_at_k_ceiling",
                "seller_precision_at_k", "recall_at_p90", "roc_auc", "brier")
SHAP_ROWS = 2000  # TreeSHAP is costly: the summary figure uses a seeded sample of rows
CURVE_ROWS = 20_000  # per-iteration curves: a seeded sample of each window's rows
WHERE = {
    "valid": "Validation window, labelled rows",
    "valid_truth": "Validation window, every row against ground truth (synthetic catalogs only)",
    "holdout": "Holdout catalog {holdout}, labelled rows",
    "holdout_truth": "Holdout catalog {holdout}, every row against ground truth",
}


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_version: str
    metrics: dict[str, float]  # the model on the validation window's labelled rows
    # where -> model/baseline name -> metrics; where: valid, valid_truth, holdout, holdout_truth
    comparisons: dict[str, dict[str, dict[str, float]]]
    gains: dict[str, dict[str, Gain]]  # where -> baseline -> the model's AP gain over it
    threshold: float
    promoted: bool
    champion_before: str | None
    champion_before_metric: float | None
    bundle: str
    seconds: dict[str, float]
    input: InputReport
    promotion_reason: str

    @classmethod
    def of(cls, run_id: str, model_version: str, evaluation: RunEvaluation,
           promotion: Promotion, bundle: str, seconds: dict[str, float],
           input_report: InputReport) -> TrainResult:
        before = promotion.champion
        return cls(
            run_id, model_version, evaluation.model.metrics,
            {where: {name: ev.metrics for name, ev in c.evaluations.items()}
             for where, c in evaluation.comparisons.items()},
            {where: c.gains for where, c in evaluation.comparisons.items()},
            evaluation.threshold.threshold, promotion.promoted,
            before.label if before else None, before.metric if before else None,
            bundle, seconds, input_report, promotion.reason,
        )

    @property
    def baselines(self) -> dict[str, dict[str, float]]:
        return {k: v for k, v in self.comparisons["valid"].items() if k != MODEL}

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "model_version": self.model_version,
            "rows": self.input.rows, "rows_rejected": self.input.rejected,
            "top_reject_reasons": self.input.top_reasons_json(),
            "metrics": self.metrics, "threshold": self.threshold, "promoted": self.promoted,
            "promotion_reason": self.promotion_reason,
            "champion_before": self.champion_before, "bundle": self.bundle,
            "comparisons": {
                where: {name: {k: round(v, 4) for k, v in m.items() if k in SUMMARY_KEYS}
                        for name, m in by_name.items()}
                for where, by_name in self.comparisons.items()
            },
            "ap_gain": {  # the model's AP minus each baseline's: [difference, 95% low, high]
                where: {name: [round(g.difference, 4), round(g.low, 4), round(g.high, 4)]
                        for name, g in by_name.items()}
                for where, by_name in self.gains.items()
            },
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def run_tags(catalog: str | Path, prepared: Prepared, evaluation: RunEvaluation,
             booster: lgb.Booster, holdout: str | Path | None, commit: str) -> dict[str, object]:
    """The run's tags: code, data, windows, row counts and how the threshold was chosen."""
    return {
        "git_commit": commit, "catalog": str(catalog),
        "catalog_fingerprint": prepared.fingerprint, **prepared.counts,
        **{f"window_{k}": v for k, v in prepared.windows.as_dict().items()},
        "threshold_rule": evaluation.threshold.rule,
        "best_iteration": booster.current_iteration(),
        "holdout": str(holdout) if holdout else "none",
    }


def log_evaluation(evaluation: RunEvaluation, booster: lgb.Booster,
                   X_valid: NDArray[np.float32], config: TrainConfig) -> None:
    """The log step: metrics (baselines prefixed `rules_`, `logistic_`; other windows by where
    they were measured), AP gains with their intervals, threshold, figures, tables, config."""
    for where, comparison in evaluation.comparisons.items():
        at = "" if where == "valid" else f"{where}_"
        for name, ev in comparison.evaluations.items():
            tracking.log_metrics(ev.metrics, prefix=at + ("" if name == MODEL else f"{name}_"))
        for name, gain in comparison.gains.items():
            key = f"{at}ap_gain_vs_{name}"
            tracking.log_metrics({key: gain.difference, f"{key}_low": gain.low,
                                  f"{key}_high": gain.high})
    choice = evaluation.threshold
    tracking.log_metrics({"threshold": choice.threshold, "threshold_precision": choice.precision,
                          "threshold_recall": choice.recall})
    _log_figures(evaluation.comparisons["valid"], booster, X_valid)
    tracking.log_table(category_table(evaluation.comparisons["valid"].evaluations),
                       "per_category.csv")
    tracking.log_text(config.to_toml(), "train.toml")


def _log_figures(valid: Comparison, booster: lgb.Booster, X_valid: NDArray[np.float32]) -> None:
    tracking.log_figure(pr_curve_figure(valid.y, valid.scores), "pr_curve.png")
    tracking.log_figure(calibration_figure(valid.y, valid.scores[MODEL]), "calibration.png")
    gains = booster.feature_importance(importance_type="gain")
    tracking.log_figure(importance_figure(list(FEATURE_COLUMNS), gains), "feature_importance.png")
    sample = np.random.default_rng(0).permutation(len(X_valid))[:SHAP_ROWS]
    contrib = booster.predict(X_valid[sample], pred_contrib=True, num_threads=2)
    tracking.log_figure(
        shap_summary_figure(contrib, X_valid[sample], list(FEATURE_COLUMNS)), "shap_summary.png"
    )
    importance = pl.DataFrame({"feature": FEATURE_COLUMNS, "gain": gains}).sort(
        "gain", descending=True
    )
    tracking.log_table(importance, "feature_importance.csv")


def log_outcome(card: str, ref: tracking.ModelRef, promotion: Promotion) -> None:
    """The model card and the promotion decision, as the run's last artifact and tags, and in
    the registry (aliases, the version's tags and description); the reason on stderr."""
    tracking.log_text(card, "model_card.md")
    before = promotion.champion
    tracking.set_run_tags({"model_version": ref.label,
                           "champion_before": before.label if before else "none"})
    tracking.record_decision(ref, promotion.promoted, promotion.reason, card)
    print(f"knockoff train: {ref.label} {promotion.reason}", file=sys.stderr, flush=True)


def run_name(catalog: str | Path, now: datetime | None = None) -> str:
    """A run name a data scientist can scan: `lgbm-<catalog stem>-<UTC date and time>`."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    return f"lgbm-{Path(catalog).stem}-{stamp}"


def log_training_data(prepared: Prepared, catalog: str | Path) -> None:
    """The labelled training rows (ids, label, features) as the run's MLflow dataset input,
    with the catalog as source and its fingerprint as digest."""
    tracking.log_dataset(prepared.train, catalog, name=f"{Path(catalog).stem}-train",
                         digest=prepared.fingerprint, targets=LABEL)


def _raw_by_iteration(booster: lgb.Booster, X: NDArray[np.float32]) -> NDArray[np.float64]:
    """(rows, trees): each row's raw score after 1, 2, ... trees (one pass for the leaves,
    then each tree's leaf values summed in order)."""
    leaves = booster.predict(X, pred_leaf=True, num_threads=2).reshape(len(X), -1)
    values = np.empty(leaves.shape)
    for tree in range(leaves.shape[1]):
        table = np.array([booster.get_leaf_output(tree, leaf)
                          for leaf in range(int(leaves[:, tree].max()) + 1)])
        values[:, tree] = table[leaves[:, tree]]
    return np.cumsum(values, axis=1)


def training_curves(booster: lgb.Booster, prepared: Prepared,
                    rows: int = CURVE_ROWS) -> dict[str, list[float]]:
    """Per-iteration curves of the final model: log loss on the training rows it learnt from
    and on the validation window's labelled rows, and validation average precision (on a
    seeded sample of at most `rows` rows of each)."""
    curves: dict[str, list[float]] = {}
    for name, frame in (("train", prepared.train), ("valid", prepared.valid_labelled)):
        sample = frame.sample(min(rows, frame.height), seed=0)
        y = labels(sample)
        raw = _raw_by_iteration(booster, matrix(sample))
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        loss = -(y[:, None] * np.log(p) + (1 - y[:, None]) * np.log(1 - p)).mean(axis=0)
        curves[f"curve_{name}_logloss"] = loss.tolist()
        if name == "valid":
            curves["curve_valid_average_precision"] = [
                float(average_precision_score(y, raw[:, i])) for i in range(raw.shape[1])]
    return curves


def category_table(by_name: dict[str, Evaluation]) -> pl.DataFrame:
    """The model's per-category metrics, with each baseline's AP and precision@k beside them."""
    table = by_name[MODEL].per_category
    for name, ev in by_name.items():
        if name != MODEL:
            table = table.join(
                ev.per_category.select(
                    "category", pl.col(PRIMARY).alias(f"{name}_{PRIMARY}"),
                    pl.col("precision_at_k").alias(f"{name}_precision_at_k")),
                on="category", how="left",
            )
    return table


def _metric_table(by_name: dict[str, Evaluation]) -> str:
    names = list(by_name)
    head = f"| metric | {' | '.join(names)} |\n|---|{'---|' * len(names)}"
    rows = [f"| {key} | " + " | ".join(format_metric(by_name[n].metrics.get(key))
                                         for n in names) + " |"
            for key in SUMMARY_KEYS]
    return "\n".join([head, *rows])


def _gain_lines(gains: dict[str, Gain]) -> str:
    lines = []
    for name, gain in gains.items():
        verdict = ("n/a (no fakes to rank)" if gain.difference != gain.difference
                   else "clearly better" if gain.low > 0 else "clearly worse" if gain.high < 0
                   else "not distinguishable")
        lines.append(f"- LightGBM minus {name}, average precision: {gain} -> {verdict}")
    return "\n".join(lines)


def model_card(
    config: TrainConfig, prepared: Prepared, evaluation: RunEvaluation, version: str,
    promotion: Promotion, holdout: str | Path | None,
) -> str:
    """The run's model card in Markdown: data, metrics against baselines, threshold, limits."""
    w, c = prepared.windows, prepared.counts
    sections = "\n\n".join(
        f"### {WHERE[where].format(holdout=holdout)}\n{_metric_table(comparison.evaluations)}"
        f"\n\n{_gain_lines(comparison.gains)}"
        for where, comparison in evaluation.comparisons.items()
    )
    return f"""# Model card: {version}

## Data
- Training window: {w.train_start:%Y-%m-%d} to {w.train_end:%Y-%m-%d} ({c['train_rows']} rows,
  {c['train_labelled']} labelled, {c['train_fakes']} confirmed fakes). Only labelled rows train;
  all rows feed the seller and network features.
- Label delay gap: {config.label_delay_days} days (rows inside it are neither trained on nor
  evaluated; brand risk uses labels before {w.train_end:%Y-%m-%d} only).
- Validation window: {w.valid_start:%Y-%m-%d} to {w.valid_end:%Y-%m-%d} ({c['valid_rows']} rows,
  {c['valid_labelled']} labelled, {c['valid_fakes']} confirmed fakes).
- Catalog fingerprint `{prepared.fingerprint}`; validation: {prepared.input.describe()}.

## Metrics: LightGBM against the baselines
k = {config.review_capacity} listings per day (the officers' daily review capacity; days with fewer
rows than k are left out of precision@k). `precision_at_k_ceiling` is what a perfect ranking
would get: when a day has fewer fakes than k, no model can fill the queue with fakes, and models
near the ceiling differ in how deep they reach (recall at precision 0.9, average precision), not
in the queue. `rules` is what an officer does by hand (price far below the brand, copy words,
complaints); `logistic` is a logistic regression on the same features. Gains are paired: both
scores on the same resampled sellers.

{sections}

## Decision threshold
{evaluation.threshold.threshold:.4f}: {evaluation.threshold.rule}

## Registry
{version}: {promotion.reason}.

## Known limits
- Labels are a biased minority (review favours suspicious-looking listings): metrics on labelled
  rows overstate precision on the whole catalog, and rare fake patterns are under-represented.
- Early stopping uses the newest {config.early_stopping_share:.0%} of the training window, then
  the model is refitted on all of it: the validation window only chooses the threshold.
- Listings younger than 30 days have no after-sale data; the model was trained with it hidden
  on {config.after_sale_mask_share:.0%} of rows (and each other optional input on
  {config.optional_mask_share:.0%}).
- Seller and network features are counts over the submitted batch: batches much shorter or
  longer than the training window shift them.
- Brand risk and price levels come from the training window; brands first seen later fall back
  to category levels and the overall labelled fake share.
"""
