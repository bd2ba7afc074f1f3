"""serving.explain against LightGBM itself: the same leaves, the same path contributions."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from serving.explain import ModelTextError, PathContributions, Trees

N_FEATURES = 5
THREADS = 2


def _booster(params: dict[str, Any], X: np.ndarray, y: np.ndarray) -> lgb.Booster:
    base = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1,
            "num_threads": THREADS, "deterministic": True, "seed": 3}
    text = lgb.train({**base, **params}, lgb.Dataset(X, y), num_boost_round=30).model_to_string()
    return lgb.Booster(model_str=text)  # as a bundle holds it: read back from its text


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows with NaNs and exact zeros in every column (so every missing type gets trained)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3_000, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.15] = 0.0
    X[np.isnan(X[:, 4]), 4] = 1.0  # one column never missing: missing_type None there
    X[:, 3] = np.round(X[:, 3])  # few distinct values: thresholds sit between them
    logit = (2 * np.nan_to_num(X[:, 0], nan=1.0) + 3 * np.isnan(X[:, 1]) + (X[:, 2] == 0)
             + X[:, 3])  # NaN in column 1 alone: a split of NaN from all values, threshold inf
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-np.nan_to_num(logit)))).astype(int)
    return X, y


def _probe(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """X plus, for every split, rows whose feature equals the threshold and its float32
    neighbours, NaN, zero, -0.0 and values within LightGBM's zero threshold."""
    extra = []
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_index" not in node:
                continue
            t = np.float32(np.clip(node["threshold"], -3e38, 3e38))
            for v in (t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))):
                row = X[len(extra) % len(X)].copy()
                row[node["split_feature"]] = v
                extra.append(row)
            stack += [node["left_child"], node["right_child"]]
    special = np.array([np.nan, 0.0, -0.0, 1e-40, -1e-40, 1e-30, np.inf, -np.inf],
                       dtype=np.float32)
    for f in range(N_FEATURES):
        for v in special:
            row = X[f].copy()
            row[f] = v
            extra.append(row)
    return np.vstack([X, np.array(extra, dtype=np.float32)])


@pytest.mark.parametrize(("params", "kinds"), [
    # (missing type, default left) of the splits: each missing type, both default directions
    ({}, {("NaN", True), ("NaN", False), ("None", True)}),
    ({"zero_as_missing": True}, {("Zero", True), ("Zero", False)}),
    ({"use_missing": False}, {("None", True)}),
], ids=["nan", "zero", "none"])
def test_leaves_equal_lightgbm_pred_leaf(params: dict[str, Any],
                                         kinds: set[tuple[str, bool]]) -> None:
    X, y = _data()
    booster = _booster(params, X, y)
    probe = _probe(booster, X)
    expected = booster.predict(probe, pred_leaf=True, num_threads=THREADS)
    trees = Trees.from_text(booster.model_to_string())
    assert np.array_equal(trees.leaves(probe), expected)
    decision = {t["decision_type"] for t in _splits(booster)}
    assert decision == {"<="}
    assert {(t["missing_type"], t["default_left"]) for t in _splits(booster)} == kinds


def _splits(booster: lgb.Booster) -> list[dict[str, Any]]:
    found, stack = [], [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            found.append(node)
            stack += [node["left_child"], node["right_child"]]
    return found


def _reference_contributions(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """The former implementation (LightGBM's dump and pred_leaf), kept as the reference."""
    n_features = booster.num_feature()
    tables = []
    for tree in booster.dump_model()["tree_info"]:
        table = np.zeros((tree["num_leaves"], n_features + 1))
        root = tree["tree_structure"]
        if "leaf_value" in root:
            table[0, n_features] = root["leaf_value"]
        else:
            table[:, n_features] = root["internal_value"]
            stack = [(root, np.zeros(n_features))]
            while stack:
                node, path = stack.pop()
                if "leaf_index" in node:
                    table[node["leaf_index"], :-1] = path
                    continue
                for child in (node["left_child"], node["right_child"]):
                    step = path.copy()
                    value = child.get("leaf_value", child.get("internal_value"))
                    step[node["split_feature"]] += value - node["internal_value"]
                    stack.append((child, step))
        tables.append(table)
    leaves = booster.predict(X, pred_leaf=True, num_threads=THREADS)
    return sum(t[leaves[:, i]] for i, t in enumerate(tables))  # type: ignore[return-value]


def test_contributions_equal_the_former_implementation_and_sum_to_the_raw_score() -> None:
    X, y = _data(1)
    booster = _booster({}, X, y)
    probe = _probe(booster, X)
    contrib = PathContributions.from_text(booster.model_to_string())(probe)
    assert contrib.shape == (len(probe), N_FEATURES + 1)
    assert np.allclose(contrib, _reference_contributions(booster, probe), rtol=0, atol=1e-12)
    raw = booster.predict(probe, raw_score=True, num_threads=THREADS)
    assert np.abs(contrib.sum(axis=1) - raw).max() < 1e-9


def test_a_tree_of_one_leaf_is_all_bias() -> None:
    X = np.random.default_rng(0).normal(size=(40, N_FEATURES)).astype(np.float32)
    y = np.r_[np.zeros(20), np.ones(20)]
    booster = _booster({"min_data_in_leaf": 40}, X, y)  # no split possible
    contrib = PathContributions.from_text(booster.model_to_string())(X[:3])
    assert np.array_equal(Trees.from_text(booster.model_to_string()).leaves(X[:3]),
                          booster.predict(X[:3], pred_leaf=True).reshape(3, -1))
    assert np.all(contrib[:, :-1] == 0)
    assert np.allclose(contrib[:, -1], booster.predict(X[:3], raw_score=True))


def test_unreadable_model_text_is_refused_with_the_reason() -> None:
    with pytest.raises(ModelTextError, match="not LightGBM model text"):
        Trees.from_text("hello")
    X, y = _data()
    text = _booster({}, X, y).model_to_string()
    broken = text.replace("left_child=", "left_child=0 ", 1)
    with pytest.raises(ModelTextError, match="'left_child' has"):
        Trees.from_text(broken)
    start = text.index("split_feature=") + len("split_feature=")
    beyond = text[:start] + str(N_FEATURES) + text[text.index(" ", start):]  # the first split
    with pytest.raises(ModelTextError, match="beyond max_feature_idx"):
        Trees.from_text(beyond)
    with pytest.raises(ValueError, match="columns"):
        Trees.from_text(text).leaves(X[:, :2])
