"""Reasons an officer can read: the features that pushed a flagged listing's score up the most
(contributions along the decision paths of the bundle's LightGBM model text), each put into
words with its value."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

from features.pipeline import FEATURE_COLUMNS

MAX_REASONS = 3


def _pct(v: float) -> int:
    return round(100 * v)


def _below(v: float, what: str) -> str:
    if v < 1:
        return f"price {_pct(1 - v)}% below {what}"
    return f"price {v:.1f}× {what}"


def _plural(n: float, one: str, many: str) -> str:
    return f"{int(n)} {one if int(n) == 1 else many}"


# feature -> words for a value (never called with NaN; see `phrase`)
TEMPLATES: dict[str, Callable[[float], str]] = {
    "price_brand_ratio": lambda v: _below(v, "this brand's usual price"),
    "price_category_ratio": lambda v: _below(v, "the category's usual price"),
    "discount_depth": lambda v: f"shown discount of {_pct(v)}% off the list price"
    if v > 0 else "priced above its own list price",
    "list_price_brand_ratio": lambda v: f"list price {v:.1f}× this brand's usual price"
    + (" (inflated 'was' price)" if v > 1.2 else ""),
    "title_copy_words": lambda v: "title admits an imitation ('replica', '1:1', 'AAA' …): "
    + _plural(v, "copy word", "copy words") if v > 0 else "no copy words in the title",
    "description_copy_words": lambda v: "description admits an imitation: "
    + _plural(v, "copy word", "copy words") if v > 0 else "no copy words in the description",
    "title_lookalike_words": lambda v: "title uses look-alike words ('style', 'inspired by' …)"
    if v > 0 else "no look-alike words in the title",
    "brand_known": lambda v: "declared brand is not a known brand" if v < 0.5
    else "declared brand is a known brand",
    "brand_typosquat": lambda v: f"declared brand looks like a misspelt known brand "
    f"({_pct(v)}% similar)" if v > 0 else "declared brand is spelt correctly",
    "title_typosquat": lambda v: f"title contains a misspelt brand name ({_pct(v)}% similar)"
    if v > 0 else "no misspelt brand names in the title",
    "brand_missing_from_title": lambda v: "declared brand is missing from the title" if v > 0.5
    else "declared brand appears in the title",
    "title_upper_ratio": lambda v: f"{_pct(v)}% of the title in capitals",
    "title_symbol_ratio": lambda v: f"{_pct(v)}% of the title is symbols ('!!!', '$$$', '★')",
    "description_length": lambda v: "empty description" if v == 0
    else f"description of {int(v)} characters",
    "image_count": lambda v: _plural(v, "image", "images") + " on the listing",
    "main_image_sellers": lambda v: "main photo also used by "
    + _plural(v - 1, "other seller", "other sellers") if v > 1
    else "main photo used by no other seller",
    "main_image_brands": lambda v: f"main photo used for {_plural(v, 'brand', 'different brands')}",
    "seller_account_age_days": lambda v: f"seller account {_plural(max(v, 0), 'day', 'days')} old",
    "seller_rating": lambda v: f"seller rating {v:.1f} of 5",
    "seller_review_count": lambda v: f"seller has {_plural(v, 'review', 'reviews')}",
    "seller_verified": lambda v: "seller not verified by the platform" if v < 0.5
    else "seller verified by the platform",
    "seller_listings": lambda v: f"seller has {_plural(v, 'listing', 'listings')} in this batch",
    "seller_brands": lambda v: f"seller lists {_plural(v, 'brand', 'different brands')}",
    "seller_low_price_share": lambda v: f"{_pct(v)}% of the seller's listings are priced far "
    "below their brand",
    "seller_median_price_ratio": lambda v: "seller's typical " + _below(v, "brand level"),
    "seller_listings_per_day": lambda v: f"seller lists {v:.1f} items a day",
    "contact_accounts": lambda v: "seller's contact details shared by "
    + _plural(v, "account", "accounts"),
    "seller_cluster_size": lambda v: "seller linked to "
    + _plural(v - 1, "other account", "other accounts") + " by shared contacts or photos"
    if v > 1 else "seller linked to no other account",
    "ships_from_mismatch": lambda v: "ships from another country than the seller's" if v > 0.5
    else "ships from the seller's country",
    "return_rate": lambda v: f"{_pct(v)}% of units sold were returned",
    "complaint_rate": lambda v: f"{_pct(v)}% of units sold drew authenticity complaints",
    "complaints_30d": lambda v: f"{_plural(v, 'authenticity complaint', 'authenticity complaints')}"
    " in 30 days",
    "brand_risk": lambda v: f"brand often counterfeited ({_pct(v)}% of reviewed listings "
    "were fake)",
    "category_code": lambda v: "category often targeted by counterfeiters",
}

MISSING: dict[str, str] = {
    "description_length": "no description",
    "description_copy_words": "no description",
    "seller_account_age_days": "seller registration date unknown",
    "seller_rating": "seller has no rating yet",
    "seller_verified": "seller verification unknown",
    "return_rate": "no sales yet (listing younger than 30 days)",
    "complaint_rate": "no sales yet (listing younger than 30 days)",
    "complaints_30d": "no sales data yet",
    "contact_accounts": "no seller contact details",
    "main_image_sellers": "no photo hashes",
    "main_image_brands": "no photo hashes",
    "image_count": "no images",
    "category_code": "category not seen in training",
}


def phrase(feature: str, value: float) -> str:
    """One feature's value in words."""
    if value is None or math.isnan(value):
        return MISSING.get(feature, f"{feature.replace('_', ' ')} unknown")
    return TEMPLATES[feature](float(value))


def top_reasons(
    contributions: NDArray[np.float64], X: NDArray[np.floating], k: int = MAX_REASONS
) -> tuple[list[list[str]], list[list[str]]]:
    """Per row, the `k` features with the largest positive contribution (strongest first):
    (reasons in words, the features they come from). `contributions` is pred_contrib output
    (n, features + 1, last column the bias)."""
    contrib = contributions[:, : len(FEATURE_COLUMNS)]
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    reasons: list[list[str]] = []
    features: list[list[str]] = []
    for row, cols in enumerate(order):
        chosen = [int(c) for c in cols if contrib[row, c] > 0]
        features.append([FEATURE_COLUMNS[c] for c in chosen])
        reasons.append([phrase(FEATURE_COLUMNS[c], float(X[row, c])) for c in chosen])
    return reasons, features


@dataclass(frozen=True, eq=False)
class PathContributions:
    """Per-feature contributions of a LightGBM model along each row's decision paths.

    For every tree, each leaf's path from the root is attributed split by split: a split on
    feature f moves the expected output from the node's value to the child's value, and that
    change is credited to f (Saabas path attribution). Contributions plus the bias column sum
    to the raw score (log-odds), as `pred_contrib` does; TreeSHAP's exact values cost ~100x a
    prediction per row, this costs one `pred_leaf` pass and a table lookup per tree."""

    booster: lgb.Booster
    table: NDArray[np.float64]  # every tree's leaves stacked: (leaves, features + 1); last = bias
    offsets: NDArray[np.int64]  # first row of each tree in `table`

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> PathContributions:
        n_features = booster.num_feature()
        tables = []
        for tree in booster.dump_model()["tree_info"]:
            table = np.zeros((tree["num_leaves"], n_features + 1))
            root = tree["tree_structure"]
            if "leaf_value" in root:  # a tree of one leaf: all bias
                table[0, n_features] = root["leaf_value"]
            else:
                table[:, n_features] = root["internal_value"]
                _credit(root, np.zeros(n_features), table)
            tables.append(table)
        sizes = np.array([len(t) for t in tables], dtype=np.int64)
        return cls(booster, np.vstack(tables), np.cumsum(sizes) - sizes)

    def __call__(self, X: NDArray[np.floating], threads: int = 2) -> NDArray[np.float64]:
        """(rows, features + 1) contributions: each row's leaves as a sparse one-hot matrix
        times the stacked leaf table (twice as fast as adding per-tree gathers)."""
        leaves = self.booster.predict(X, pred_leaf=True, num_threads=threads)
        leaves = leaves.reshape(len(X), -1).astype(np.int64)
        n, trees = leaves.shape
        one_hot = csr_matrix(
            (np.ones(n * trees), (leaves + self.offsets).ravel(),
             np.arange(0, n * trees + 1, trees)),
            shape=(n, len(self.table)),
        )
        return np.asarray(one_hot @ self.table)


def _node_value(node: dict[str, Any]) -> float:
    return float(node["leaf_value"] if "leaf_value" in node else node["internal_value"])


def _credit(node: dict[str, Any], path: NDArray[np.float64], table: NDArray[np.float64]) -> None:
    """Walk a tree, carrying the contributions accumulated on the path to `node`."""
    if "leaf_index" in node:
        table[node["leaf_index"], :-1] = path
        return
    feature, value = node["split_feature"], _node_value(node)
    for child in (node["left_child"], node["right_child"]):
        step = path.copy()
        step[feature] += _node_value(child) - value
        _credit(child, step, table)
