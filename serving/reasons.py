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

from features.registry import FEATURE_COLUMNS, FEATURES

MAX_REASONS = 3


# feature -> words for a value (never called with NaN; see `phrase`), and for a missing value:
# both declared with each feature in features/registry.py
TEMPLATES: dict[str, Callable[[float], str]] = {f.name: f.phrase for f in FEATURES}
MISSING: dict[str, str] = {f.name: f.missing for f in FEATURES}


def phrase(feature: str, value: float) -> str:
    """One feature's value in words."""
    if value is None or math.isnan(value):
        return MISSING[feature]
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
