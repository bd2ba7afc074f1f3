"""A LightGBM model read from its text in numpy: the leaf each row reaches in every tree, and
the per-feature contributions along those paths (the reasons' raw material).

Scoring uses ONNX; this is what explaining needs, without importing LightGBM (and with it
scikit-learn) into a scoring process. The leaf of a row is found with LightGBM's own numerical
decision rule (`Tree::NumericalDecision`), one vectorised step per depth level over every
(row, tree) pair still on its way down, and equals `Booster.predict(X, pred_leaf=True)`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

# LightGBM's decision_type bits and missing types (include/LightGBM/tree.h)
_CATEGORICAL_MASK = 1
_DEFAULT_LEFT_MASK = 2
_MISSING_ZERO, _MISSING_NAN = 1, 2
_ZERO_THRESHOLD = float(np.float32(1e-35))  # kZeroThreshold, a float literal widened to double
_ROWS_PER_PASS = 16_384  # rows walked down the trees at a time (bounds the (rows, trees) arrays)


class ModelTextError(ValueError):
    """LightGBM model text this module cannot read (message says what is wrong)."""


def _blocks(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The header's and each tree's `key=value` lines."""
    body, found, _ = text.partition("end of trees")
    if not found:
        raise ModelTextError("not LightGBM model text (no 'end of trees' line)")
    header, *trees = body.split("\nTree=")

    def pairs(block: str) -> dict[str, str]:
        lines = (line.partition("=") for line in block.splitlines())
        return {key.strip(): value.strip() for key, sep, value in lines if sep}

    return pairs(header), [pairs(tree) for tree in trees]


def _array(tree: dict[str, str], key: str, dtype: type, size: int) -> NDArray[np.generic]:
    values = np.array(tree.get(key, "").split(), dtype=dtype)
    if values.size != size:
        raise ModelTextError(f"tree {tree.get('Tree', '?')}: '{key}' has {values.size} values, "
                             f"expected {size}")
    return values


@dataclass(frozen=True, eq=False)
class Trees:
    """Every tree's nodes in flat arrays (node g of the model is tree t's node g - node_offset[t]).

    Children are stored as global node indices when >= 0 and as ~leaf (the tree's own leaf
    index, LightGBM's encoding) when < 0; `roots` likewise (~0 for a tree of one leaf)."""

    feature_names: tuple[str, ...]
    roots: NDArray[np.int64]
    split_feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    default_left: NDArray[np.bool_]
    missing_type: NDArray[np.int8]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    internal_value: NDArray[np.float64]
    leaf_values: tuple[NDArray[np.float64], ...]  # per tree
    depth: int  # the longest root-to-leaf path, in splits

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def from_text(cls, text: str) -> Trees:
        """Parse LightGBM model text (`Booster.model_to_string()`, a bundle's model.txt)."""
        header, trees = _blocks(text)
        if header.get("num_tree_per_iteration", "1") != "1" or not trees:
            raise ModelTextError("expected a binary model (one tree per iteration)")
        names = tuple(header.get("feature_names", "").split())
        if len(names) != int(header.get("max_feature_idx", "-2")) + 1:
            raise ModelTextError("feature_names does not match max_feature_idx")
        parts = [_read_tree(tree) for tree in trees]
        sizes = np.array([len(part[0]) for part in parts], dtype=np.int64)
        offsets = np.cumsum(sizes) - sizes

        def shift(children: NDArray[np.int64], offset: int) -> NDArray[np.int64]:
            return np.where(children >= 0, children + offset, children)

        def joined(i: int, dtype: type) -> NDArray[np.generic]:
            return np.concatenate([part[i] for part in parts]).astype(dtype, copy=False)

        decision = joined(2, np.int64)
        return cls(
            feature_names=names,
            roots=np.array([offset if size else ~0 for size, offset in zip(sizes, offsets,
                                                                             strict=True)]),
            split_feature=joined(0, np.int64), threshold=joined(1, np.float64),
            default_left=(decision & _DEFAULT_LEFT_MASK) != 0,
            missing_type=((decision >> 2) & 3).astype(np.int8),
            left=np.concatenate([shift(p[3], o) for p, o in zip(parts, offsets, strict=True)]),
            right=np.concatenate([shift(p[4], o) for p, o in zip(parts, offsets, strict=True)]),
            internal_value=joined(5, np.float64),
            leaf_values=tuple(part[6] for part in parts),
            depth=max(_depth(p[3], p[4]) for p in parts),
        )

    def leaves(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        """(rows, trees): the leaf each row reaches in each tree, as `pred_leaf=True` gives."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-d array with {self.n_features} columns, got shape "
                             f"{X.shape}")
        out = np.empty((len(X), len(self.roots)), dtype=np.int64)
        for start in range(0, len(X), _ROWS_PER_PASS):
            out[start : start + _ROWS_PER_PASS] = self._walk(X[start : start + _ROWS_PER_PASS])
        return out

    def _walk(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        values = X.astype(np.float64)  # LightGBM compares doubles; float32 widens exactly
        values[np.abs(values) <= _ZERO_THRESHOLD] = 0.0  # dense rows drop |x| <= kZeroThreshold
        node = np.repeat(self.roots[None, :], len(X), axis=0)
        rows, trees = np.nonzero(node >= 0)
        at = node[rows, trees]
        for _ in range(self.depth):
            if not at.size:
                break
            x = values[rows, self.split_feature[at]]
            missing_type = self.missing_type[at]
            nan = np.isnan(x)
            x = np.where(nan & (missing_type != _MISSING_NAN), 0.0, x)
            missing = ((missing_type == _MISSING_ZERO) & (x == 0.0)) | (
                (missing_type == _MISSING_NAN) & nan)
            go_left = np.where(missing, self.default_left[at], x <= self.threshold[at])
            at = np.where(go_left, self.left[at], self.right[at])
            node[rows, trees] = at
            inner = at >= 0
            rows, trees, at = rows[inner], trees[inner], at[inner]
        return ~node


def _read_tree(tree: dict[str, str]) -> tuple[NDArray[np.generic], ...]:
    """(split_feature, threshold, decision_type, left, right, internal_value, leaf_value)."""
    leaves = int(tree.get("num_leaves", "0"))
    if leaves < 1:
        raise ModelTextError(f"tree {tree.get('Tree', '?')}: no leaves")
    if tree.get("num_cat", "0") != "0" or tree.get("is_linear", "0") != "0":
        raise ModelTextError(f"tree {tree.get('Tree', '?')}: categorical or linear trees are not "
                             "supported")
    splits = leaves - 1
    decision = _array(tree, "decision_type", np.int64, splits)
    if np.any(decision & _CATEGORICAL_MASK):
        raise ModelTextError(f"tree {tree.get('Tree', '?')}: categorical splits are not supported")
    return (
        _array(tree, "split_feature", np.int64, splits),
        _array(tree, "threshold", np.float64, splits),
        decision,
        _array(tree, "left_child", np.int64, splits),
        _array(tree, "right_child", np.int64, splits),
        _array(tree, "internal_value", np.float64, splits),
        _array(tree, "leaf_value", np.float64, leaves),
    )


def _depth(left: NDArray[np.int64], right: NDArray[np.int64]) -> int:
    """The number of splits on the longest root-to-leaf path of one tree."""
    depth, level = 0, [0] if len(left) else []
    while level:
        depth += 1
        level = [int(c) for n in level for c in (left[n], right[n]) if c >= 0]
    return depth


@dataclass(frozen=True, eq=False)
class PathContributions:
    """Per-feature contributions of a LightGBM model along each row's decision paths.

    For every tree, each leaf's path from the root is attributed split by split: a split on
    feature f moves the expected output from the node's value to the child's value, and that
    change is credited to f (Saabas path attribution). Contributions plus the bias column sum
    to the raw score (log-odds), as `pred_contrib` does; TreeSHAP's exact values cost ~100x a
    prediction per row, this costs one leaf lookup and a table lookup per tree."""

    trees: Trees
    table: NDArray[np.float64]  # every tree's leaves stacked: (leaves, features + 1); last = bias
    offsets: NDArray[np.int64]  # first row of each tree in `table`

    @classmethod
    def from_trees(cls, trees: Trees) -> PathContributions:
        tables = [_leaf_table(trees, t) for t in range(len(trees.roots))]
        sizes = np.array([len(t) for t in tables], dtype=np.int64)
        return cls(trees, np.vstack(tables), np.cumsum(sizes) - sizes)

    @classmethod
    def from_text(cls, text: str) -> PathContributions:
        return cls.from_trees(Trees.from_text(text))

    def __call__(self, X: NDArray[np.floating], threads: int = 1) -> NDArray[np.float64]:
        """(rows, features + 1) contributions: each row's leaves as a sparse one-hot matrix
        times the stacked leaf table (twice as fast as adding per-tree gathers). `threads` is
        accepted for the callers' symmetry with LightGBM; numpy walks the trees itself."""
        leaves = self.trees.leaves(X)
        n, trees = leaves.shape
        one_hot = csr_matrix(
            (np.ones(n * trees), (leaves + self.offsets).ravel(),
             np.arange(0, n * trees + 1, trees)),
            shape=(n, len(self.table)),
        )
        return np.asarray(one_hot @ self.table)


def _leaf_table(trees: Trees, tree: int) -> NDArray[np.float64]:
    """(leaves, features + 1): each leaf's path contributions, the root's value as the bias."""
    leaf_values = trees.leaf_values[tree]
    n_features = trees.n_features
    table = np.zeros((len(leaf_values), n_features + 1))
    root = int(trees.roots[tree])
    if root < 0:  # a tree of one leaf: all bias
        table[0, n_features] = leaf_values[0]
        return table
    table[:, n_features] = trees.internal_value[root]
    for leaf, path in _paths(trees, root, np.zeros(n_features), leaf_values):
        table[leaf, :n_features] = path
    return table


def _paths(trees: Trees, node: int, path: NDArray[np.float64],
           leaf_values: NDArray[np.float64]) -> Iterator[tuple[int, NDArray[np.float64]]]:
    """(leaf, contributions on its path) for every leaf under `node`."""
    value = trees.internal_value[node]
    feature = trees.split_feature[node]
    for child in (int(trees.left[node]), int(trees.right[node])):
        step = path.copy()
        child_value = trees.internal_value[child] if child >= 0 else leaf_values[~child]
        step[feature] += child_value - value
        if child >= 0:
            yield from _paths(trees, child, step, leaf_values)
        else:
            yield ~child, step
