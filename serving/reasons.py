"""Reasons an officer can read: the features that pushed a flagged listing's score up the most
(contributions along the decision paths of the bundle's LightGBM model text), each put into
words with its value."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

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
