"""The one entry point, `build_features(lf, state) -> LazyFrame`: training and every scorer
compute features through it, and nothing else does.

The features are declared in `features.registry` (FEATURE_COLUMNS is the model's input order);
they are computed by the expression functions of `features.text` and `features.listing`, the
fitted state of `features.state` (price levels, brand lexicon, brand risk, category codes) and
the whole-batch aggregates of `features.aggregates` (seller, image, network), joined so that a
batch scored in chunks gets the same features as scored whole.
"""

from __future__ import annotations

import polars as pl

from features.aggregates import BatchAggregates, apply_batch_aggregates, batch_aggregates
from features.fitted import apply_brand_prices, apply_brand_risk, apply_category_codes
from features.lexicon import brand_lexicon_features
from features.registry import FEATURE_COLUMNS, STATELESS
from features.state import FeatureState

ID_COLUMNS: tuple[str, ...] = ("listing_id", "seller_id")


def build_features(
    lf: pl.LazyFrame,
    state: FeatureState,
    *,
    aggregates: BatchAggregates | None = None,
    keep: tuple[str, ...] = ID_COLUMNS,
) -> pl.LazyFrame:
    """The feature table for validated rows: `keep` columns, then FEATURE_COLUMNS as Float32.

    Seller, image and network features come from `aggregates` over the whole batch; when not
    given they are computed from `lf` itself (one streaming pass). Pass the whole batch's
    aggregates when `lf` is a chunk of a larger batch."""
    if aggregates is None:
        aggregates = batch_aggregates(lf, state)
    # the lexicon's expressions sit next to the text features so they share work
    rows = lf.with_columns(*(f() for f in STATELESS), *brand_lexicon_features(state.lexicon))
    rows = apply_brand_prices(rows, state.prices)
    rows = apply_brand_risk(rows, state.risk)
    rows = apply_category_codes(rows, state.categories)
    rows = apply_batch_aggregates(rows, aggregates)
    return rows.select(
        *keep, *(pl.col(c).cast(pl.Float32) for c in FEATURE_COLUMNS)
    )
