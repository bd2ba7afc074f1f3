"""The training steps alone, on tiny data: the evaluate step, the promotion decision, and the
account of rejected input rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from features.catalog import read_catalog
from features.contract import LABEL, TRUTH
from features.registry import FEATURE_COLUMNS
from training.baselines import fit_logistic, rules_baseline_score
from training.compare import MODEL, evaluate_models
from training.config import TrainConfig
from training.dataset import TrainError, check_rejects, input_report, labels, matrix
from training.evaluate import choose_threshold, evaluate
from training.promote import ChampionScore, decide_promotion

CONFIG = TrainConfig(threads=1, review_capacity=5)


def _feature_table(n: int, seed: int) -> pl.DataFrame:
    """Random features with a label driven by the first two, over 4 days, 3 categories."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURE_COLUMNS))).astype(np.float32)
    fake = (X[:, 0] + X[:, 1] + rng.normal(scale=0.7, size=n)) > 1.2
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return pl.DataFrame({name: X[:, j] for j, name in enumerate(FEATURE_COLUMNS)}).with_columns(
        listing_id=pl.Series([f"L{i}" for i in range(n)]),
        seller_id=pl.Series([f"S{i % 60}" for i in range(n)]),
        listed_at=pl.Series([t0 + timedelta(hours=i * 96 / n) for i in range(n)]),
        category=pl.Series(["Bags", "Shoes", "Watches"] * (n // 3) + ["Bags"] * (n % 3)),
        **{TRUTH: pl.Series(fake)},
        # a third of the rows were never reviewed
        **{LABEL: pl.Series([None if i % 3 == 0 else bool(f) for i, f in enumerate(fake)],
                            dtype=pl.Boolean)},
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[pl.DataFrame, lgb.Booster, object]:
    train = _feature_table(600, seed=1).filter(pl.col(LABEL).is_not_null())
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0,
                         "deterministic": True, "min_data_in_leaf": 5},
                        lgb.Dataset(matrix(train), labels(train)), num_boost_round=10)
    return train, booster, fit_logistic(matrix(train), labels(train), seed=0)


def test_evaluate_step_measures_model_and_baselines_on_the_same_labelled_rows(fitted) -> None:
    _, booster, logistic = fitted
    valid = _feature_table(300, seed=2)
    holdout = _feature_table(150, seed=3).drop(TRUTH)
    run = evaluate_models(valid, booster, logistic, CONFIG, holdout=holdout)

    assert list(run.comparisons) == ["valid", "valid_truth", "holdout"]  # no truth in holdout
    labelled = valid.filter(pl.col(LABEL).is_not_null())
    on_valid = run.comparisons["valid"]
    assert set(on_valid.scores) == {MODEL, "rules", "logistic"}
    assert on_valid.y.tolist() == labels(labelled).tolist()
    score = booster.predict(matrix(labelled))
    np.testing.assert_allclose(on_valid.scores[MODEL], score)
    np.testing.assert_allclose(on_valid.scores["rules"], rules_baseline_score(labelled))
    expected = evaluate(labels(labelled), score, labelled["listed_at"].dt.date(),
                        labelled["seller_id"], labelled["category"], CONFIG.review_capacity)
    assert run.model.metrics == pytest.approx(expected.metrics, nan_ok=True)
    assert run.model is on_valid.evaluations[MODEL]
    assert run.threshold == choose_threshold(labels(labelled), score, CONFIG.target_precision)
    assert set(on_valid.gains) == {"rules", "logistic"}
    # the model learnt the signal: better than the rules, which ignore these random features
    assert run.model.metrics["average_precision"] > on_valid.evaluations["rules"].metrics[
        "average_precision"]
    # against the ground truth every row counts, reviewed or not
    assert run.comparisons["valid_truth"].y.size == valid.height
    assert run.comparisons["holdout"].y.size == holdout[LABEL].is_not_null().sum()


def test_promotion_without_a_champion() -> None:
    decision = decide_promotion(0.5, None, logistic=0.4)
    assert decision.promoted and decision.champion is None
    assert "no champion before" in decision.reason


def test_promotion_only_on_a_strictly_better_comparable_metric() -> None:
    champion = ChampionScore("knockoff/3", 0.70, comparable=True)
    better = decide_promotion(0.71, champion, logistic=0.5)
    assert better.promoted and "beat knockoff/3 (0.700" in better.reason
    for metric in (0.70, 0.69, math.nan):
        worse = decide_promotion(metric, champion, logistic=0.5)
        assert not worse.promoted and "knockoff/3 has 0.700" in worse.reason
    assert worse.champion == champion
    undefined = decide_promotion(0.9, ChampionScore("knockoff/3", math.nan, comparable=True),
                                 logistic=0.5)
    assert not undefined.promoted and "n/a" in undefined.reason


def test_no_promotion_over_a_champion_trained_on_this_window() -> None:
    decision = decide_promotion(0.99, ChampionScore("knockoff/2", 0.10, comparable=False),
                                logistic=0.5)
    assert not decision.promoted
    assert "knockoff/2 was trained on rows inside this validation window" in decision.reason


def test_input_report_counts_rejects_and_their_most_frequent_reasons(
    tmp_path: Path, make_listings
) -> None:
    good = [{"listing_id": f"G{i}"} for i in range(14)]
    bad = ([{"listing_id": f"P{i}", "price": -1.0} for i in range(3)]
           + [{"listing_id": "T", "title": "", "price": 0.0}]
           + [{"listing_id": "C", "category": None}, {"listing_id": "R", "seller_rating": 9.0}])
    path = tmp_path / "catalog.parquet"
    make_listings(*good, *bad).write_parquet(path)
    report = input_report(read_catalog(path))
    assert (report.rows, report.rejected) == (20, 6)
    assert report.share == pytest.approx(0.3)
    # a row breaking two rules counts for both; ties in alphabetical order; top 3 only
    assert report.top_reasons == (("price must be > 0", 4), ("category missing", 1),
                                  ("seller_rating outside 0..5", 1))
    assert report.top_reasons_json()[0] == {"reason": "price must be > 0", "rows": 4}
    assert "6 of 20 rows rejected (30.0%)" in report.describe()

    with pytest.raises(TrainError) as refused:
        check_rejects(report, path, limit=0.05)
    message = str(refused.value)
    assert str(path) in message and "30.0%" in message and "price must be > 0 (4)" in message
    assert "--max-reject-share" in message
    check_rejects(report, path, limit=0.3)  # at the limit: allowed
