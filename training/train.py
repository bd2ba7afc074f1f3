"""`knockoff train`: time split, features, LightGBM vs baselines, MLflow run, ONNX bundle,
registry and champion promotion."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from features.catalog import read_catalog
from features.contract import LABEL, TRUTH
from features.fitted import brand_risk_as_of
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS, MONOTONE, OPTIONAL_GROUPS
from features.state import FeatureState, fit_state
from training import tracking
from training.baselines import fit_logistic, rules_baseline_score
from training.config import TrainConfig
from training.evaluate import (
    Evaluation,
    Gain,
    average_precision_gains,
    choose_threshold,
    evaluate,
)
from training.export import Bundle, write_bundle
from training.plots import (
    calibration_figure,
    importance_figure,
    pr_curve_figure,
    shap_summary_figure,
)
from training.split import Windows, split, time_windows

KEEP = ("listing_id", "seller_id", "listed_at", "category", LABEL)
PRIMARY = "average_precision"
# OPTIONAL_GROUPS (features that go missing together when an optional input is absent, hidden
# on seeded shares of training rows) and MONOTONE (domain constraints: a lower price or more
# copy words never make a listing look safer) are declared with each feature in the registry.


class TrainError(ValueError):
    """The catalog cannot train a model (no labels, one class only, empty window)."""


@dataclass
class Timings:
    """Seconds per stage, for the run's tags and the summary line."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, quiet: bool = False) -> Iterator[None]:
        if not quiet:
            print(f"knockoff train: {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


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


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def prepare(
    catalog_path: str | Path, config: TrainConfig, valid_from: datetime | None,
    *, before: datetime | None = None,
) -> Prepared:
    """Validate, split by time with the delay gap, fit the state on the older window and build
    both windows' features (seller and network aggregates over each window's rows).
    `before` drops newer rows first (tuning keeps the real validation window unseen)."""
    catalog = read_catalog(catalog_path, currency=config.currency, keep=(TRUTH,))
    has_truth = TRUTH in catalog.extra_columns
    rows = catalog.rows
    if before is not None:
        rows = rows.filter(pl.col("listed_at") < before)
    rows = rows.collect(engine="in-memory")
    rejected = catalog.rejects.select(pl.len()).collect(engine="streaming").item()
    if rows.is_empty():
        raise TrainError(f"{catalog_path}: no valid rows to train on ({rejected} rejected)")
    if rows[LABEL].drop_nulls().n_unique() < 2:
        raise TrainError(f"{catalog_path}: training needs labelled fakes and genuine listings "
                         f"in {LABEL}; found {rows[LABEL].drop_nulls().unique().to_list()}")
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
        "rows_valid": rows.height, "rows_rejected": rejected,
        "train_rows": train_lf.select(pl.len()).collect().item(), "train_labelled": train.height,
        "train_fakes": int(train[LABEL].sum()), "valid_rows": valid.height,
        "valid_labelled": int(valid[LABEL].is_not_null().sum()),
        "valid_fakes": int(valid[LABEL].sum()),
    }
    return Prepared(windows, state, train, valid, valid_lf.collect(), counts,
                    catalog_fingerprint(catalog.files), has_truth)


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


def _evaluate(frame: pl.DataFrame, score: NDArray[np.float64], config: TrainConfig,
              column: str = LABEL) -> Evaluation:
    return evaluate(labels(frame, column), score, frame["listed_at"].dt.date(),
                    frame["seller_id"], frame["category"], config.review_capacity)


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

    @property
    def baselines(self) -> dict[str, dict[str, float]]:
        return {k: v for k, v in self.comparisons["valid"].items() if k != "lightgbm"}

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "model_version": self.model_version,
            "metrics": self.metrics, "threshold": self.threshold, "promoted": self.promoted,
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


SUMMARY_KEYS = ("average_precision", "precision_at_k", "precision_at_k_ceiling",
                "seller_precision_at_k", "recall_at_p90", "roc_auc", "brier")


def score_with_bundle(bundle_dir: Path, valid_lf: pl.LazyFrame, threads: int) -> pl.DataFrame:
    """A bundle's scores on rows, through its own feature state (for champion comparison)."""
    bundle = Bundle.load(bundle_dir, threads=threads)
    if bundle.features != FEATURE_COLUMNS:
        raise TrainError(f"{bundle_dir}: the champion was built with other features; it cannot "
                         "be re-scored by this version (promote by hand if intended)")
    state = FeatureState.load(bundle.state_dir)
    frame = build_features(valid_lf, state, keep=KEEP).collect(engine="in-memory")
    return frame.with_columns(pl.Series("score", bundle.predict(matrix(frame))))


def compare(
    frame: pl.DataFrame, booster: lgb.Booster, logistic: Pipeline, config: TrainConfig,
    column: str = LABEL,
) -> tuple[dict[str, Evaluation], dict[str, Gain]]:
    """The model and both baselines on the rows of a feature table that have `column`, and the
    model's average-precision gain over each baseline (seller bootstrap)."""
    rows = frame.filter(pl.col(column).is_not_null())
    X = matrix(rows)
    scores = {
        "lightgbm": booster.predict(X, num_threads=config.threads),
        "rules": rules_baseline_score(rows),
        "logistic": logistic.predict_proba(X.astype(np.float64))[:, 1],
    }
    y = labels(rows, column)
    evaluations = {name: _evaluate(rows, score, config, column) for name, score in scores.items()}
    baselines = {name: score for name, score in scores.items() if name != "lightgbm"}
    gains = average_precision_gains(y, scores["lightgbm"], baselines, rows["seller_id"],
                                    seed=config.seed)
    return evaluations, gains


def holdout_features(path: str | Path, state: FeatureState, config: TrainConfig) -> pl.DataFrame:
    """Another catalog's features through this run's fitted state (aggregates over itself)."""
    catalog = read_catalog(path, currency=config.currency, keep=(TRUTH,))
    keep = KEEP + ((TRUTH,) if TRUTH in catalog.extra_columns else ())
    return build_features(catalog.rows, state, keep=keep).collect(engine="in-memory")


def train(
    catalog_path: str | Path,
    config: TrainConfig | None = None,
    *,
    valid_from: datetime | None = None,
    holdout: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """The whole training run; see the module docstring. `holdout`: another catalog (e.g. a
    later one, another seed) on which model and baselines are evaluated too."""
    config = config or TrainConfig()
    timings = Timings()
    with timings.stage("features"):
        prepared = prepare(catalog_path, config, valid_from)
    valid = prepared.valid_labelled
    X_valid, y_valid = matrix(valid), labels(valid)
    with timings.stage("lightgbm"):
        booster = fit_final_lightgbm(prepared.train, config, progress)
        score = booster.predict(X_valid, num_threads=config.threads)
    with timings.stage("baselines"):
        logistic = fit_logistic(matrix(prepared.train), labels(prepared.train), config.seed)
        evaluations: dict[str, dict[str, Evaluation]] = {}
        gains: dict[str, dict[str, Gain]] = {}
        evaluations["valid"], gains["valid"] = compare(prepared.valid, booster, logistic, config)
        if prepared.has_truth:
            evaluations["valid_truth"], gains["valid_truth"] = compare(
                prepared.valid, booster, logistic, config, TRUTH)
    if holdout is not None:
        with timings.stage("holdout"):
            other = holdout_features(holdout, prepared.state, config)
            evaluations["holdout"], gains["holdout"] = compare(other, booster, logistic, config)
            if TRUTH in other.columns:
                evaluations["holdout_truth"], gains["holdout_truth"] = compare(
                    other, booster, logistic, config, TRUTH)
    model_eval = evaluations["valid"]["lightgbm"]
    choice = choose_threshold(y_valid, score, config.target_precision)

    commit = git_commit()
    tags = {
        "git_commit": commit, "catalog": str(catalog_path),
        "catalog_fingerprint": prepared.fingerprint, **prepared.counts,
        **{f"window_{k}": v for k, v in prepared.windows.as_dict().items()},
        "threshold_rule": choice.rule, "best_iteration": booster.current_iteration(),
        "holdout": str(holdout) if holdout else "none",
    }
    with timings.stage("mlflow"), tracking.start_run("train", config.params(), tags) as run_id:
        for where, by_name in evaluations.items():
            for name, ev in by_name.items():
                prefix = ("" if where == "valid" else f"{where}_") + (
                    "" if name == "lightgbm" else f"{name}_")
                tracking.log_metrics(ev.metrics, prefix=prefix)
            for name, gain in gains[where].items():
                prefix = ("" if where == "valid" else f"{where}_") + f"ap_gain_vs_{name}"
                tracking.log_metrics({prefix: gain.difference, f"{prefix}_low": gain.low,
                                      f"{prefix}_high": gain.high})
        tracking.log_metrics({"threshold": choice.threshold, "threshold_precision":
                              choice.precision, "threshold_recall": choice.recall})
        baseline_scores = {"rules": rules_baseline_score(valid),
                           "logistic": logistic.predict_proba(X_valid.astype(np.float64))[:, 1]}
        _log_plots(booster, X_valid, y_valid, score, baseline_scores)
        tracking.log_table(_category_table(evaluations["valid"]), "per_category.csv")
        tracking.log_text(config.to_toml(), "train.toml")

        with tempfile.TemporaryDirectory() as tmp, timings.stage("export", quiet=True):
            bundle_dir = write_bundle(
                Path(tmp) / "bundle", booster, FEATURE_COLUMNS, choice.threshold, X_valid,
                write_state=prepared.state.save, config_text=config.to_toml(),
                spec_extra={
                    "model_name": config.model_name, "git_commit": commit,
                    "train_window": {"start": prepared.windows.train_start,
                                     "end": prepared.windows.train_end},
                    "valid_window": {"start": prepared.windows.valid_start,
                                     "end": prepared.windows.valid_end},
                    "currency": config.currency, "threshold_rule": choice.rule,
                    "metrics": {k: (v if v == v else None)  # NaN: undefined here
                                for k, v in model_eval.metrics.items()},
                },
                threads=config.threads,
            )
            ref = tracking.register_bundle(bundle_dir, config.model_name, run_id)

        before = tracking.champion(config.model_name)
        before_metric = None
        comparable = True
        if before is not None:
            champion_dir, _ = tracking.download_bundle(f"models:/{before.label}")
            champion_end = json.loads((champion_dir / "feature_spec.json").read_text())[
                "train_window"]["end"]
            comparable = datetime.fromisoformat(champion_end) <= prepared.windows.valid_start
            scored = score_with_bundle(champion_dir, prepared.valid_rows.lazy(), config.threads)
            scored = scored.filter(pl.col(LABEL).is_not_null())
            before_metric = _evaluate(scored, scored["score"].to_numpy(), config).metrics[PRIMARY]
        promoted = before is None or (
            comparable and model_eval.metrics[PRIMARY] > (before_metric or 0.0))
        if promoted:
            tracking.promote(ref)
        tracking.log_text(
            model_card(config, prepared, evaluations, gains, choice.rule, choice.threshold,
                       ref.label, before, before_metric, promoted, holdout, comparable),
            "model_card.md",
        )
        tracking.set_run_tags({"model_version": ref.label, "promoted": promoted,
                               "champion_before": before.label if before else "none"})
        bundle_path = tracking.bundle_location(run_id)
    return TrainResult(
        run_id, ref.label, model_eval.metrics,
        {w: {n: ev.metrics for n, ev in by.items()} for w, by in evaluations.items()},
        gains,
        choice.threshold, promoted, before.label if before else None, before_metric,
        bundle_path, timings.seconds,
    )


def _log_plots(
    booster: lgb.Booster, X_valid: NDArray[np.float32],
    y_valid: NDArray[np.int8], score: NDArray[np.float64],
    baseline_scores: dict[str, NDArray[np.float64]],
) -> None:
    tracking.log_figure(pr_curve_figure(y_valid, {"lightgbm": score, **baseline_scores}),
                        "pr_curve.png")
    tracking.log_figure(calibration_figure(y_valid, score), "calibration.png")
    gains = booster.feature_importance(importance_type="gain")
    tracking.log_figure(importance_figure(list(FEATURE_COLUMNS), gains), "feature_importance.png")
    sample = np.random.default_rng(0).permutation(len(X_valid))[:2000]  # TreeSHAP is costly
    contrib = booster.predict(X_valid[sample], pred_contrib=True, num_threads=2)
    tracking.log_figure(
        shap_summary_figure(contrib, X_valid[sample], list(FEATURE_COLUMNS)), "shap_summary.png"
    )
    importance = pl.DataFrame({"feature": FEATURE_COLUMNS, "gain": gains}).sort(
        "gain", descending=True
    )
    tracking.log_table(importance, "feature_importance.csv")


def _category_table(by_name: dict[str, Evaluation]) -> pl.DataFrame:
    table = by_name["lightgbm"].per_category
    for name, ev in by_name.items():
        if name != "lightgbm":
            table = table.join(
                ev.per_category.select(
                    "category", pl.col(PRIMARY).alias(f"{name}_{PRIMARY}"),
                    pl.col("precision_at_k").alias(f"{name}_precision_at_k")),
                on="category", how="left",
            )
    return table


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


WHERE = {
    "valid": "Validation window, labelled rows",
    "valid_truth": "Validation window, every row against ground truth (synthetic catalogs only)",
    "holdout": "Holdout catalog {holdout}, labelled rows",
    "holdout_truth": "Holdout catalog {holdout}, every row against ground truth",
}


def _metric_table(by_name: dict[str, Evaluation]) -> str:
    names = list(by_name)
    head = f"| metric | {' | '.join(names)} |\n|---|{'---|' * len(names)}"
    rows = [f"| {key} | " + " | ".join(_fmt(by_name[n].metrics.get(key)) for n in names) + " |"
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
    config: TrainConfig, prepared: Prepared, evaluations: dict[str, dict[str, Evaluation]],
    gains: dict[str, dict[str, Gain]], rule: str, threshold: float, version: str,
    before: tracking.ModelRef | None, before_metric: float | None, promoted: bool,
    holdout: str | Path | None, comparable: bool = True,
) -> str:
    """The run's model card in Markdown: data, metrics against baselines, threshold, limits."""
    w, c = prepared.windows, prepared.counts
    verdict = (
        f"not promoted: champion {before.label if before else '?'} was trained on rows inside "
        "this validation window, so the comparison would favour it; compare both on a later "
        "window" if not comparable else
        "promoted to `champion` (no champion before)" if promoted and before is None
        else f"promoted to `champion`: beat {before.label} ({_fmt(before_metric)} average "
        "precision on this validation window)" if promoted and before is not None
        else f"not promoted: champion {before.label if before else '?'} has "
        f"{_fmt(before_metric)} average precision on this window"
    )
    sections = "\n\n".join(
        f"### {WHERE[where].format(holdout=holdout)}\n{_metric_table(by_name)}\n\n"
        f"{_gain_lines(gains[where])}"
        for where, by_name in evaluations.items()
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
- Catalog fingerprint `{prepared.fingerprint}`; {c['rows_rejected']} rows rejected by validation.

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
{threshold:.4f}: {rule}

## Registry
{version}: {verdict}.

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
