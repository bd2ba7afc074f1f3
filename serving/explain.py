"""A LightGBM model read from its text in numpy: the leaf each row reaches in every tree, and
the per-feature contributions along those paths (the reasons' raw material).

Scoring uses ONNX; this is what explaining needs, without importing LightGBM (and with it
scikit-learn) into a scoring process. The leaf of a row is found with LightGBM's own numerical
decision rule (`Tree::NumericalDecision`), one vectorised step per depth level over every
(row, tree) pair, and equals `Booster.predict(X, pred_leaf=True)`."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

# LightGBM's decision_type bits and missing types (include/LightGBM/tree.h)
_CATEGORICAL_MASK = 1
_DEFAULT_LEFT_MASK = 2
_MISSING_NONE, _MISSING_ZERO = 0, 1
_ZERO_THRESHOLD = float(np.float32(1e-35))  # kZeroThreshold, a float literal widened to double
_ROWS_PER_PASS = 4_096  # rows walked down the trees at a time (bounds the (rows, trees) arrays)


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
    """Every tree's nodes, leaves included, in flat arrays: tree t is the block of nodes from
    roots[t], its splits first, then its leaves. Node g's children are children[2g] (right)
    and children[2g + 1] (left), so `children[2g + (x <= threshold)]` takes one step; a leaf is
    its own child on both sides, so walking on from a leaf stays there and every (row, tree)
    pair takes `depth` steps.

    LightGBM's missing values are folded into the input: each split reads its feature from one
    of up to four copies of the rows, `copy[g]` (0: NaN as -inf, 1: NaN kept, 2: NaN and 0 as
    -inf, 3: NaN and 0 as NaN): -inf <= any threshold goes left, NaN <= any threshold is false
    and goes right, chosen per split as LightGBM sends a missing value (missing type NaN: the
    default side; Zero: NaN and zero to the default side; None: NaN goes where 0.0 goes; a
    threshold may be +inf)."""

    feature_names: tuple[str, ...]
    roots: NDArray[np.int64]  # per tree
    n_leaves: NDArray[np.int64]  # per tree
    column: NDArray[np.int64]  # per node: the feature a split reads (0 for leaves)
    copy: NDArray[np.int64]  # per node: which copy of the rows it reads
    threshold: NDArray[np.float64]  # per node (0 for leaves: both sides are the leaf)
    children: NDArray[np.int64]  # 2 per node: right, left
    leaf: NDArray[np.int64]  # per node: the tree's own leaf number, -1 for splits
    value: NDArray[np.float64]  # per node: LightGBM's internal_value or leaf_value
    depth: int  # the longest root-to-leaf path, in splits

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def from_text(cls, text: str) -> Trees:
        """Parse LightGBM model text (`Booster.model_to_string()`, a bundle's model.txt)."""
        header, blocks = _blocks(text)
        if header.get("num_tree_per_iteration", "1") != "1" or not blocks:
            raise ModelTextError("expected a binary model (one tree per iteration)")
        names = tuple(header.get("feature_names", "").split())
        if len(names) != int(header.get("max_feature_idx", "-2")) + 1:
            raise ModelTextError("feature_names does not match max_feature_idx")
        trees = [_read_tree(block) for block in blocks]
        if max(int(t["column"].max(initial=0)) for t in trees) >= len(names):
            raise ModelTextError("a split reads a feature beyond max_feature_idx")
        sizes = np.array([len(t["value"]) for t in trees], dtype=np.int64)
        roots = np.cumsum(sizes) - sizes
        for tree, root in zip(trees, roots, strict=True):
            tree["children"] = tree["children"] + root  # the tree's node numbers to global ones

        def joined(key: str) -> NDArray[np.generic]:
            return np.concatenate([t[key] for t in trees])

        return cls(
            feature_names=names, roots=roots,
            n_leaves=np.array([int((t["leaf"] >= 0).sum()) for t in trees], dtype=np.int64),
            column=joined("column"), copy=joined("copy"), threshold=joined("threshold"),
            children=joined("children"), leaf=joined("leaf"), value=joined("value"),
            depth=max(int(t["depth"][0]) for t in trees),
        )

    def leaves(self, X: NDArray[np.floating], threads: int = 1) -> NDArray[np.int64]:
        """(rows, trees): the leaf each row reaches in each tree, as `pred_leaf=True` gives.
        Blocks of rows are walked by `threads` threads (numpy releases the GIL)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-d array with {self.n_features} columns, got shape "
                             f"{X.shape}")
        out = np.empty((len(X), len(self.roots)), dtype=np.int64)

        def walk(start: int) -> None:
            out[start : start + _ROWS_PER_PASS] = self._walk(X[start : start + _ROWS_PER_PASS])

        starts = range(0, len(X), _ROWS_PER_PASS)
        if threads <= 1 or len(starts) <= 1:
            for start in starts:
                walk(start)
        else:
            with ThreadPoolExecutor(max_workers=min(threads, len(starts))) as pool:
                list(pool.map(walk, starts))
        return out

    def _walk(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        """All (row, tree) pairs one level down per step, `depth` steps."""
        n_rows, n_trees = len(X), len(self.roots)
        rows = X.astype(np.float64)  # LightGBM compares doubles; float32 widens exactly
        rows[np.abs(rows) <= _ZERO_THRESHOLD] = 0.0  # dense rows drop |x| <= kZeroThreshold
        missing = np.isnan(rows)
        copies = [np.where(missing, -np.inf, rows), rows]
        if self.copy.max() >= 2:  # splits with missing type Zero
            missing |= rows == 0.0
            copies += [np.where(missing, -np.inf, rows), np.where(missing, np.nan, rows)]
        values = np.concatenate([c.ravel() for c in copies])
        source = self.column + self.copy * rows.size  # per node: where in `values` it reads
        at = np.tile(self.roots, n_rows)
        row_start = np.repeat(np.arange(n_rows) * self.n_features, n_trees)
        for _ in range(self.depth):
            left = values[row_start + source[at]] <= self.threshold[at]
            at = self.children[2 * at + left]
        return self.leaf[at].reshape(n_rows, n_trees)


def _read_tree(tree: dict[str, str]) -> dict[str, NDArray[np.generic]]:
    """One tree's nodes (its splits, then its leaves) as arrays; children in the tree's own
    node numbers (leaf j is node splits + j, its own child)."""
    name = f"tree {tree.get('Tree', '?')}"
    leaves = int(tree.get("num_leaves", "0"))
    if leaves < 1:
        raise ModelTextError(f"{name}: no leaves")
    if tree.get("num_cat", "0") != "0" or tree.get("is_linear", "0") != "0":
        raise ModelTextError(f"{name}: categorical or linear trees are not supported")
    splits = leaves - 1
    decision = _array(tree, "decision_type", np.int64, splits)
    if np.any(decision & _CATEGORICAL_MASK):
        raise ModelTextError(f"{name}: categorical splits are not supported")
    threshold = _array(tree, "threshold", np.float64, splits)
    default_left = (decision & _DEFAULT_LEFT_MASK) != 0
    missing_type = (decision >> 2) & 3
    nan_left = np.where(missing_type == _MISSING_NONE, threshold >= 0.0, default_left)
    children = np.column_stack([_array(tree, "right_child", np.int64, splits),
                                _array(tree, "left_child", np.int64, splits)])
    children = np.where(children >= 0, children, splits + ~children)
    if splits and (children.min() < 1 or children.max() >= splits + leaves):
        raise ModelTextError(f"{name}: child numbers out of range")
    return {
        "column": np.r_[_array(tree, "split_feature", np.int64, splits),
                        np.zeros(leaves, np.int64)],
        "copy": np.r_[np.where(missing_type == _MISSING_ZERO, 2, 0) + ~nan_left,
                      np.zeros(leaves, np.int64)],
        "threshold": np.r_[threshold, np.zeros(leaves)],
        "children": np.r_[children.ravel(), np.repeat(np.arange(splits, splits + leaves), 2)],
        "leaf": np.r_[np.full(splits, -1), np.arange(leaves)],
        "value": np.r_[_array(tree, "internal_value", np.float64, splits),
                       _array(tree, "leaf_value", np.float64, leaves)],
        "depth": np.array([_depth(children)]),
    }


def _depth(children: NDArray[np.int64]) -> int:
    """The number of splits on the longest root-to-leaf path (children: one row per split)."""
    depth, level = 0, [0] if len(children) else []
    while level:
        depth += 1
        level = [int(c) for n in level for c in children[n] if c < len(children)]
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
        times the stacked leaf table (twice as fast as adding per-tree gathers)."""
        leaves = self.trees.leaves(X, threads)
        n, trees = leaves.shape
        one_hot = csr_matrix(
            (np.ones(n * trees), (leaves + self.offsets).ravel(),
             np.arange(0, n * trees + 1, trees)),
            shape=(n, len(self.table)),
        )
        return np.asarray(one_hot @ self.table)


def _leaf_table(trees: Trees, tree: int) -> NDArray[np.float64]:
    """(leaves, features + 1): each leaf's path contributions, the root's value as the bias."""
    n_features = trees.n_features
    table = np.zeros((int(trees.n_leaves[tree]), n_features + 1))
    root = int(trees.roots[tree])
    table[:, n_features] = trees.value[root]  # a tree of one leaf: all bias
    for leaf, path in _paths(trees, root, np.zeros(n_features)):
        table[leaf, :n_features] = path
    return table


def _paths(trees: Trees, node: int,
           path: NDArray[np.float64]) -> Iterator[tuple[int, NDArray[np.float64]]]:
    """(leaf, contributions on its path) for every leaf under `node`."""
    if trees.leaf[node] >= 0:
        yield int(trees.leaf[node]), path
        return
    for child in (int(trees.children[2 * node + 1]), int(trees.children[2 * node])):
        step = path.copy()
        step[trees.column[node]] += trees.value[child] - trees.value[node]
        yield from _paths(trees, child, step)
