"""Tests for training.evaluate, the baselines and the plots on tiny literal examples with
hand-computed answers."""

from __future__ import annotations

import io
import math
import warnings
from datetime import date

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from training.baselines import rules_baseline_score
from training.evaluate import (
    METRIC_KEYS,
    ThresholdChoice,
    average_precision_gains,
    category_capacity,
    choose_threshold,
    evaluate,
    precision_at_k_ceiling,
    precision_at_k_daily,
    recall_at_precision,
    seller_precision_at_k_daily,
)
from training.plots import (
    calibration_figure,
    importance_figure,
    pr_curve_figure,
    shap_summary_figure,
)

D1, D2 = date(2025, 3, 1), date(2025, 3, 2)

# Two days x five rows, k = 2.
#   day 1: a 0.90 y1 s1 | b 0.80 y0 s2 | c 0.70 y1 s3 | d 0.30 y0 s4 | e 0.10 y1 s5
#   day 2: f 0.95 y1 s6 | g 0.85 y1 s6 | h 0.60 y0 s7 | i 0.40 y1 s8 | j 0.20 y0 s9
# precision@2:  day 1 top {a, b} = 1/2; day 2 top {f, g} = 2/2   -> (0.5 + 1.0) / 2 = 0.75
# seller p@2:   day 1 sellers all distinct -> {a, b} = 1/2;
#               day 2 s6 counts once (best row f), then h -> {f, h} = 1/2 -> (0.5 + 0.5) / 2 = 0.5
# Pooled ranking (score: cumulative tp / flagged, recall of 6 positives):
#   .95: 1/1  .90: 2/2  .85: 3/3 (recall 3/6)  .80: 3/4  .70: 4/5 = 0.8 (recall 4/6)
#   .60: 4/6  .40: 5/7  .30: 5/8  .20: 5/9  .10: 6/10 (recall 1)
# -> recall at precision 0.9 = 0.5 (threshold 0.85); at precision 0.8 = 4/6 (threshold 0.70).
DAY = [D1] * 5 + [D2] * 5
SCORE = [0.90, 0.80, 0.70, 0.30, 0.10, 0.95, 0.85, 0.60, 0.40, 0.20]
Y = [1, 0, 1, 0, 1, 1, 1, 0, 1, 0]
SELLER = ["s1", "s2", "s3", "s4", "s5", "s6", "s6", "s7", "s8", "s9"]
# "watches" holds rows a and f only, both fakes: one class, so ROC AUC is undefined there.
CATEGORY = ["watches", "bags", "bags", "bags", "bags", "watches", "bags", "bags", "bags", "bags"]


def test_precision_at_k_daily_hand_computed() -> None:
    assert precision_at_k_daily(Y, SCORE, DAY, k=2) == pytest.approx(0.75)


def test_precision_at_k_leaves_out_days_with_fewer_rows_than_k() -> None:
    # day 1 top 2 = 1/2; day 3 has a single row and cannot fill a queue of 2 -> left out
    y, score, day = [1, 0, 0, 1], [0.9, 0.8, 0.1, 0.5], [D1, D1, D1, date(2025, 3, 3)]
    assert precision_at_k_daily(y, score, day, k=2) == pytest.approx(0.5)
    assert precision_at_k_daily(y, score, day, k=1) == pytest.approx(1.0)  # both days count
    assert math.isnan(precision_at_k_daily(y, score, day, k=4))  # no full day
    # seller version: day 1 has 2 sellers, so k=3 has no full day either
    assert math.isnan(seller_precision_at_k_daily(y, score, day, ["A", "A", "B", "C"], k=3))


def test_category_capacity_is_proportional_and_at_least_one() -> None:
    assert category_capacity(200, 250, 1000) == 50
    assert category_capacity(200, 1, 1000) == 1
    assert category_capacity(200, 0, 0) == 200


def test_precision_at_k_ceiling_is_the_perfect_rankings_precision() -> None:
    # 3 fakes on each day: a perfect queue of 2 is all fakes; a queue of 4 holds 3 of them
    assert precision_at_k_ceiling(Y, DAY, k=2) == pytest.approx(1.0)
    assert precision_at_k_ceiling(Y, DAY, k=4) == pytest.approx(0.75)
    assert precision_at_k_daily(Y, Y, DAY, k=4) == pytest.approx(0.75)
    assert math.isnan(precision_at_k_ceiling(Y, DAY, k=6))  # no day has 6 rows


def test_average_precision_gain_matches_sklearn_and_brackets_it() -> None:
    rng = np.random.default_rng(3)
    n = 4_000
    y = (rng.random(n) < 0.2).astype(int)
    sellers = rng.integers(0, 300, n)
    good = np.round(y + rng.normal(0, 0.7, n), 1)  # ties on purpose
    weak = good + rng.normal(0, 1.5, n)
    gains = average_precision_gains(y, good, {"weak": weak, "same": good}, sellers, resamples=100)
    expected = average_precision_score(y, good) - average_precision_score(y, weak)
    assert gains["weak"].difference == pytest.approx(expected)
    assert 0 < gains["weak"].low < gains["weak"].difference < gains["weak"].high
    assert (gains["same"].difference, gains["same"].low, gains["same"].high) == (0, 0, 0)
    assert "seller-bootstrap" in str(gains["weak"])


def test_average_precision_gain_counts_only_resamples_with_fakes() -> None:
    # every fake belongs to seller "a": resamples where "a" draws weight 0 (~37%) have no AP
    y = [1, 1, 0, 0, 0, 0]
    sellers = ["a", "a", "b", "c", "d", "e"]
    gain = average_precision_gains(y, [0.9, 0.8, 0.7, 0.1, 0.2, 0.3],
                                   {"flat": [0.5] * 6}, sellers, resamples=200)["flat"]
    assert 80 < gain.resamples < 160
    assert gain.difference == pytest.approx(1.0 - 2 / 6)
    none = average_precision_gains([0, 0], [0.1, 0.2], {"b": [0.2, 0.1]}, ["a", "b"])["b"]
    assert none.resamples == 0 and math.isnan(none.low) and math.isnan(none.difference)


def test_seller_dedup_changes_precision_as_expected() -> None:
    assert seller_precision_at_k_daily(Y, SCORE, DAY, SELLER, k=2) == pytest.approx(0.5)
    # with every row its own seller, deduplication changes nothing
    distinct = [f"x{i}" for i in range(10)]
    assert seller_precision_at_k_daily(Y, SCORE, DAY, distinct, k=2) == pytest.approx(0.75)


def test_seller_dedup_keeps_the_sellers_best_row() -> None:
    # one day; seller A's best row (0.9) is genuine, its lower row (0.8) is fake and must not
    # count; k=2 -> {A@0.9 y0, B@0.7 y1} = 1/2
    y, score, seller = [0, 1, 1], [0.9, 0.8, 0.7], ["A", "A", "B"]
    assert seller_precision_at_k_daily(y, score, [D1] * 3, seller, k=2) == pytest.approx(0.5)
    assert precision_at_k_daily(y, score, [D1] * 3, k=2) == pytest.approx(0.5)
    assert seller_precision_at_k_daily(y, score, [D1] * 3, seller, k=1) == pytest.approx(0.0)


def test_recall_at_precision_hand_computed() -> None:
    assert recall_at_precision(Y, SCORE, 0.9) == pytest.approx(0.5)
    assert recall_at_precision(Y, SCORE, 0.8) == pytest.approx(4 / 6)
    assert recall_at_precision(Y, SCORE, 0.6) == pytest.approx(1.0)


def test_choose_threshold_lowest_threshold_reaching_target() -> None:
    choice = choose_threshold(Y, SCORE, 0.9)
    assert isinstance(choice, ThresholdChoice)
    # halfway between the chosen score 0.85 and the next lower one, 0.80
    assert (choice.threshold, choice.precision, choice.recall) == pytest.approx((0.825, 1.0, 0.5))
    assert "precision >= 0.9" in choice.rule
    low = choose_threshold(Y, SCORE, 0.8)
    # chosen score 0.70, next lower 0.60
    assert (low.threshold, low.precision, low.recall) == pytest.approx((0.65, 0.8, 4 / 6))


def test_choose_threshold_falls_back_to_f1() -> None:
    # score: .9 y0 | .8 y1 | .7 y0 | .6 y1 ; precision never exceeds 0.5.
    # F1 at t=.9: 0; t=.8: p .5 r .5 -> .5; t=.7: p 1/3 r .5 -> .4; t=.6: p .5 r 1 -> 2/3 (best)
    y, score = [0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6]
    assert recall_at_precision(y, score, 0.9) == 0.0
    choice = choose_threshold(y, score, 0.9)
    # the lowest score has no lower neighbour: the threshold sits a hair below it, so float32
    # inference of that score cannot fall under it
    assert (choice.precision, choice.recall) == pytest.approx((0.5, 1.0))
    assert 0.6 - 1e-4 < choice.threshold < 0.6 - 1e-6
    assert "F1" in choice.rule and "no threshold reaches" in choice.rule


def test_choose_threshold_refuses_without_positives() -> None:
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold([0, 0], [0.1, 0.2])


def test_evaluate_matches_hand_values_and_sklearn() -> None:
    result = evaluate(Y, SCORE, DAY, SELLER, CATEGORY, k=2)
    m = result.metrics
    assert set(m) == set(METRIC_KEYS)
    assert m["precision_at_k"] == pytest.approx(0.75)
    assert m["seller_precision_at_k"] == pytest.approx(0.5)
    assert m["recall_at_p90"] == pytest.approx(0.5)
    assert (m["positives"], m["rows"]) == (6.0, 10.0)
    y, s = np.array(Y), np.array(SCORE)
    assert m["brier"] == pytest.approx(np.mean((s - y) ** 2))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))


def test_per_category_has_one_row_per_category_and_nulls_where_undefined() -> None:
    table = evaluate(Y, SCORE, DAY, SELLER, CATEGORY, k=2).per_category
    assert table["category"].to_list() == ["bags", "watches"]
    assert set(METRIC_KEYS) <= set(table.columns)
    watches = table.row(1, named=True)
    assert watches["roc_auc"] is None  # only fakes in this category
    assert watches["precision_at_k"] == pytest.approx(1.0)
    assert watches["rows"] == 2.0
    bags = table.row(0, named=True)
    # capacity is split by rows: watches 2/10 of k=2 -> 1 (rounded up to 1), bags 8/10 -> 2
    # watches: top 1 per day = a, f (both fakes); bags: day 1 {b 0, c 1} = .5; day 2 {g 1, h 0}
    assert bags["precision_at_k"] == pytest.approx(0.5)
    assert bags["roc_auc"] is not None


def test_degenerate_inputs_give_nan_not_exceptions() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's undefined-metric warnings would fail here
        no_pos = evaluate([0] * 4, [0.1, 0.2, 0.3, 0.4], [D1] * 4, list("abcd"), ["x"] * 4, k=2)
        empty = evaluate([], [], [], [], [], k=2)
    for key in ("average_precision", "roc_auc", "recall_at_p90"):
        assert math.isnan(no_pos.metrics[key])
    assert no_pos.metrics["precision_at_k"] == 0.0
    assert no_pos.metrics["brier"] == pytest.approx(np.mean(np.square([0.1, 0.2, 0.3, 0.4])))
    assert no_pos.per_category["average_precision"].to_list() == [None]
    assert empty.metrics["rows"] == 0.0
    assert math.isnan(empty.metrics["precision_at_k"])
    assert empty.per_category.height == 0
    assert math.isnan(recall_at_precision([0, 0], [0.3, 0.4]))


def test_labels_with_nulls_are_refused() -> None:
    with pytest.raises(ValueError, match="null"):
        precision_at_k_daily(pl.Series([1, None]), [0.1, 0.2], [D1, D1], k=1)


def test_rules_baseline_ranks_obvious_fake_above_genuine() -> None:
    features = pl.DataFrame(
        {
            "price_brand_ratio": [0.15, 1.05, None, 0.45, 0.40],
            "title_copy_words": [2, 0, None, 0, 0],
            "description_copy_words": [1, 0, 0, None, 0],
            "complaint_rate": [0.2, 0.0, None, 0.0, 0.0],
            "complaints_30d": [3, 0, None, 0, 0],
        }
    )
    score = rules_baseline_score(features)
    fake, genuine, all_null, cheap_045, cheap_040 = score
    assert ((score >= 0) & (score <= 1)).all()
    assert fake > cheap_040 > genuine
    assert all_null == 0.0  # nulls never fire and give no tie-break
    assert cheap_040 > cheap_045  # tie-break: lower price ratio ranks higher
    assert fake == pytest.approx(1.0, abs=1e-3)


def test_rules_baseline_tolerates_missing_columns() -> None:
    only_price = rules_baseline_score(pl.DataFrame({"price_brand_ratio": [0.2, 1.0]}))
    assert only_price[0] > only_price[1]
    nothing = rules_baseline_score(pl.DataFrame({"other": [1, 2, 3]}))
    assert nothing.shape == (3,) and (nothing == 0).all()


def _render(fig) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.tell() > 1000


def test_pr_curve_figure_has_a_curve_per_score_with_ap_in_legend() -> None:
    baseline = rules_baseline_score(pl.DataFrame({"price_brand_ratio": np.linspace(0.1, 1, 10)}))
    fig = pr_curve_figure(Y, {"model": SCORE, "rules": baseline})
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("model (AP=") for label in labels)
    assert any(label.startswith("rules (AP=") for label in labels)
    assert len(ax.get_lines()) == 3  # two curves + prevalence line
    _render(fig)


def test_calibration_figure_has_reliability_points_and_histogram() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(size=500)
    y = (rng.uniform(size=500) < score).astype(int)
    fig = calibration_figure(y, score, bins=10)
    top, bottom = fig.axes
    model_line = top.get_lines()[1]
    assert len(model_line.get_xdata()) == 10
    assert len(bottom.patches) == 10
    _render(fig)


def test_importance_figure_puts_largest_gain_on_top() -> None:
    names = [f"f{i}" for i in range(30)]
    fig = importance_figure(names, np.arange(30.0), top=25)
    (ax,) = fig.axes
    assert len(ax.patches) == 25
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[-1] == "f29" and "f4" not in ticks
    _render(fig)


def test_shap_summary_figure_orders_features_by_mean_abs_contribution() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    X[::7, 1] = np.nan
    contrib = np.column_stack([X[:, 0] * 0.1, np.nan_to_num(X[:, 1]) * 2.0, X[:, 2] * 0.5])
    contrib = np.column_stack([contrib, np.full(200, -1.0)])
    fig = shap_summary_figure(contrib, X, ["small", "big", "mid"], top=20)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["small", "mid", "big"]
    drawn = sum(len(c.get_offsets()) for c in ax.collections)
    assert drawn == 600
    _render(fig)
    with pytest.raises(ValueError, match="contrib"):
        shap_summary_figure(contrib[:, :3], X, ["small", "big", "mid"])
