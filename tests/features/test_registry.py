"""The feature registry: every feature fully declared once, produced by what it declares, and the
derived lists (column order, monotone signs, optional groups, reason words) follow from it."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import polars as pl
import pytest

from features.aggregates import apply_batch_aggregates, batch_aggregates
from features.contract import LISTING_COLUMNS, SCHEMA
from features.fitted import apply_brand_prices, apply_brand_risk, apply_category_codes
from features.lexicon import brand_lexicon_features
from features.network import seller_clusters
from features.pipeline import build_features
from features.registry import (
    FEATURE_COLUMNS,
    FEATURES,
    MONOTONE,
    OPTIONAL_GROUPS,
    OPTIONAL_INPUTS,
    STATELESS,
    Feature,
    From,
    feature_columns,
)
from features.state import FeatureState
from serving.reasons import MISSING, TEMPLATES, phrase
from tests.features.test_pipeline import four_listings, hand_state

# The model's input order as bundles were trained on it: a reordering would silently feed old
# bundles the wrong columns.
BUNDLE_ORDER = (
    "price_brand_ratio", "price_category_ratio", "discount_depth", "list_price_brand_ratio",
    "title_copy_words", "description_copy_words", "title_lookalike_words", "brand_known",
    "brand_typosquat", "title_typosquat", "brand_missing_from_title", "title_upper_ratio",
    "title_symbol_ratio", "description_length", "image_count", "main_image_sellers",
    "main_image_brands", "seller_account_age_days", "seller_rating", "seller_review_count",
    "seller_verified", "seller_listings", "seller_brands", "seller_low_price_share",
    "seller_median_price_ratio", "seller_listings_per_day", "contact_accounts",
    "seller_cluster_size", "ships_from_mismatch", "return_rate", "complaint_rate",
    "complaints_30d", "brand_risk", "category_code",
)
COMPLETE: dict[str, Any] = {
    "name": "title_copy_words", "source": From.INPUT, "monotone": 1, "needs": None,
    "phrase": lambda v: f"{v} copy words", "missing": "no title",
}


def test_feature_columns_keep_the_bundle_order() -> None:
    assert FEATURE_COLUMNS == BUNDLE_ORDER


@pytest.mark.parametrize("field", list(COMPLETE))
def test_a_declaration_missing_a_field_is_rejected(field: str) -> None:
    Feature(**COMPLETE)  # the complete declaration is accepted
    with pytest.raises(TypeError, match=field):
        Feature(**{k: v for k, v in COMPLETE.items() if k != field})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "Title Words", "snake case"),
    ("source", None, "expression function or a From"),
    ("source", lambda: pl.col("title").str.len_chars().alias("title_length"), "title_length"),
    ("monotone", 2, "monotone"),
    ("needs", "brand", "not an optional input group"),
    ("phrase", None, "phrase"),
    ("phrase", "copy words", "phrase"),
    ("missing", None, "missing"),
    ("missing", "  ", "missing"),
])
def test_a_half_declared_feature_is_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Feature(**{**COMPLETE, field: value})


def test_a_feature_declared_twice_is_rejected() -> None:
    copy = replace(FEATURES[1], phrase=lambda v: "again")
    with pytest.raises(ValueError, match="price_category_ratio"):
        feature_columns((*FEATURES, copy))


def produced_by(state: FeatureState) -> dict[From | str, set[str]]:
    """What each source really adds to the four literal listings (helper columns aside)."""
    lf = four_listings().lazy()

    def added(applied: pl.LazyFrame) -> set[str]:
        return set(applied.collect_schema()) - set(lf.collect_schema())

    agg = batch_aggregates(lf, state)
    edges = pl.DataFrame({"seller_id": ["a"], "node": ["x"], "kind": ["c"]})
    network = set(agg.contacts.columns[1:]) | set(seller_clusters(edges).columns[1:])
    return {
        "expressions": {f().meta.output_name() for f in STATELESS},
        From.BRAND_PRICES: added(apply_brand_prices(lf, state.prices)),
        From.BRAND_LEXICON: {e.meta.output_name() for e in brand_lexicon_features(state.lexicon)},
        From.BRAND_RISK: added(apply_brand_risk(lf, state.risk)),
        From.CATEGORY_CODES: added(apply_category_codes(lf, state.categories)),
        From.SELLERS: set(agg.sellers.columns) - {"seller_id"} - network,
        From.IMAGES: set(agg.images.columns) - {"_image_key"},
        From.NETWORK: network,
        "all aggregates": added(apply_batch_aggregates(lf, agg)) - {"_image_key"},
    }


def test_every_feature_is_produced_by_exactly_its_declared_source() -> None:
    produced = produced_by(hand_state())
    declared: dict[From | str, set[str]] = {}
    for f in FEATURES:
        key = f.source if isinstance(f.source, From) else "expressions"
        declared.setdefault(key, set()).add(f.name)
    inputs = declared.pop(From.INPUT)
    assert inputs <= set(SCHEMA)  # passed through from the catalog as sent
    batch = declared[From.SELLERS] | declared[From.IMAGES] | declared[From.NETWORK]
    assert produced.pop("all aggregates") == batch
    assert produced == declared
    assert set.union(inputs, *produced.values()) == set(FEATURE_COLUMNS)


def test_derived_lists_follow_the_declarations() -> None:
    assert MONOTONE == {"price_brand_ratio": -1, "price_category_ratio": -1, "discount_depth": 1,
                        "title_copy_words": 1, "description_copy_words": 1,
                        "seller_low_price_share": 1, "seller_median_price_ratio": -1,
                        "complaint_rate": 1}
    assert list(OPTIONAL_GROUPS) == [group for group, _ in OPTIONAL_INPUTS]  # fixes the draws
    assert OPTIONAL_GROUPS["after_sale"] == ("return_rate", "complaint_rate", "complaints_30d")
    assert all(OPTIONAL_GROUPS.values())
    assert set(TEMPLATES) == set(MISSING) == set(FEATURE_COLUMNS)
    for f in FEATURES:
        assert phrase(f.name, math.nan) == f.missing
        assert phrase(f.name, 1.0) == f.phrase(1.0)


OPTIONAL = {c.name: c.dtype for c in LISTING_COLUMNS if not c.required}


def with_nulls(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return frame.with_columns(pl.lit(None, OPTIONAL[c]).alias(c) for c in columns)


@pytest.mark.parametrize(("group", "columns"), OPTIONAL_INPUTS)
def test_an_absent_optional_input_nulls_the_features_that_need_it(
    group: str, columns: tuple[str, ...]
) -> None:
    assert set(columns) <= set(OPTIONAL)  # optional contract columns
    got = build_features(with_nulls(four_listings(), list(columns)).lazy(), hand_state())
    nulls = got.select(OPTIONAL_GROUPS[group]).null_count().collect().row(0)
    assert set(nulls) == {4}


def test_features_that_need_no_optional_input_are_never_null_without_them() -> None:
    # the first three listings are branded and in categories the state knows; every optional
    # input but the brand (whose absence is a value: unbranded) is absent
    absent = [c for c in OPTIONAL if c not in ("brand", "is_counterfeit")]
    frame = with_nulls(four_listings().head(3), absent)
    got = build_features(frame.lazy(), hand_state()).collect()
    free = [f.name for f in FEATURES if f.needs is None]
    assert len(free) == 18
    assert got.select(free).null_count().row(0) == (0,) * len(free)
    grouped = [n for names in OPTIONAL_GROUPS.values() for n in names]
    assert set(got.select(grouped).null_count().row(0)) == {3}

