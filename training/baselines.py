"""The baselines every model is measured against, in the same run on the same rows: `rules`
(what an officer does by hand) and `logistic` (a logistic regression on the same features)."""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

# Rules baseline: weights of the hand rules (sum to 1) and of the price tie-break.
RULE_WEIGHTS: dict[str, float] = {"price": 0.4, "copy_words": 0.3, "complaints": 0.3}
TIE_BREAK_WEIGHT = 1e-3
PRICE_RATIO_LIMIT = 0.5
COMPLAINT_RATE_LIMIT = 0.05


def _fires(features: pl.DataFrame, column: str, condition: pl.Expr) -> pl.Expr:
    """A rule on one column; missing column or null value means the rule does not fire."""
    if column not in features.columns:
        return pl.lit(False)
    return condition.fill_null(False)


def rules_baseline_score(features: pl.DataFrame) -> NDArray[np.float64]:
    """What an officer does by hand, as a score in [0, 1].

    Rules: price far below the brand's level (price_brand_ratio < 0.5), copy words in title or
    description (title_copy_words + description_copy_words > 0), complaints (complaint_rate > 0.05
    or complaints_30d > 0). Score = weighted share of rules firing (RULE_WEIGHTS), plus a tiny
    tie-break rising as price_brand_ratio falls. Nulls and missing columns never fire.
    """
    cols = features.columns
    ratio = pl.col("price_brand_ratio").cast(pl.Float64)
    price = _fires(features, "price_brand_ratio", ratio < PRICE_RATIO_LIMIT)
    copy_terms = [
        pl.col(c).cast(pl.Float64).fill_null(0.0)
        for c in ("title_copy_words", "description_copy_words")
        if c in cols
    ]
    copy_words = (pl.sum_horizontal(copy_terms) > 0) if copy_terms else pl.lit(False)
    complaints = _fires(
        features, "complaint_rate", pl.col("complaint_rate") > COMPLAINT_RATE_LIMIT
    ) | _fires(features, "complaints_30d", pl.col("complaints_30d") > 0)
    tie_break = (
        (1.0 / (1.0 + ratio.clip(lower_bound=0.0))).fill_nan(0.0).fill_null(0.0)
        if "price_brand_ratio" in cols
        else pl.lit(0.0)
    )
    rules = (
        price.cast(pl.Float64) * RULE_WEIGHTS["price"]
        + copy_words.cast(pl.Float64) * RULE_WEIGHTS["copy_words"]
        + complaints.cast(pl.Float64) * RULE_WEIGHTS["complaints"]
    )
    score = rules * (1.0 - TIE_BREAK_WEIGHT) + tie_break * TIE_BREAK_WEIGHT
    # with_columns broadcasts all-literal expressions (no rule column present) to the frame height
    out = features.with_columns(score.alias("__baseline_score__"))["__baseline_score__"]
    return out.cast(pl.Float64).to_numpy().clip(0.0, 1.0)


def _signed_log(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_logistic(X: NDArray[np.float32], y: NDArray[np.int8], seed: int) -> Pipeline:
    """The linear baseline on the same features: signed log, median impute, scale, balanced."""
    model = make_pipeline(
        FunctionTransformer(_signed_log),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed),
    )
    return model.fit(X.astype(np.float64), y)
