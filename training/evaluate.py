"""Evaluation metrics as fraud officers work.

Evaluation runs on the labelled rows of a validation time window. Officers review a fixed
number of listings per day, and several listings of one seller are one case, so the headline
metrics are daily precision at k, with and without per-seller deduplication. Everything here is
a pure function of numpy / polars inputs (the baselines are in `training.baselines`, the
figures in `training.plots`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score, roc_auc_score

NAN = float("nan")

METRIC_KEYS: tuple[str, ...] = (
    "average_precision",
    "roc_auc",
    "precision_at_k",
    "precision_at_k_ceiling",
    "seller_precision_at_k",
    "recall_at_p90",
    "brier",
    "positives",
    "rows",
)

PRIMARY = "average_precision"  # the metric that picks the champion and the tuned config
LOWEST_MARGIN = 2e-5  # threshold below the lowest validation score: score - margin / 2


def format_metric(value: float | None) -> str:
    """A metric for a sentence or a table cell: 3 decimals, n/a when undefined (None, NaN)."""
    return "n/a" if value is None or value != value else f"{value:.3f}"


@dataclass(frozen=True)
class ThresholdChoice:
    """A score threshold (flag when score >= threshold) and how it was chosen."""

    threshold: float
    rule: str
    precision: float
    recall: float


@dataclass(frozen=True)
class Evaluation:
    """Overall metrics (keys in METRIC_KEYS) and the same metrics per category."""

    metrics: dict[str, float]
    per_category: pl.DataFrame


# --------------------------------------------------------------------------- input helpers


def binary_labels(y: ArrayLike) -> NDArray[np.int8]:
    """Binary labels as int8 0/1; refuses nulls / NaN and values other than 0/1."""
    if isinstance(y, pl.Series) and y.null_count():
        raise ValueError("labels contain nulls: evaluate labelled rows only")
    arr = y.to_numpy() if isinstance(y, pl.Series) else np.asarray(y)
    if arr.dtype == object or arr.dtype.kind == "f":
        arr = np.array([np.nan if v is None else v for v in arr.ravel()], dtype=np.float64)
        if np.isnan(arr).any():
            raise ValueError("labels contain nulls/NaN: evaluate labelled rows only")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0/1 (or booleans)")
    return arr.astype(np.int8).reshape(-1)


def checked_scores(score: ArrayLike, n: int) -> NDArray[np.float64]:
    """Scores as float64, checked against the label count and for NaN."""
    arr = np.asarray(score.to_numpy() if isinstance(score, pl.Series) else score, np.float64)
    arr = arr.reshape(-1)
    if arr.size != n:
        raise ValueError(f"{arr.size} scores for {n} labels")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN")
    return arr


def _column(values: ArrayLike, n: int, what: str) -> pl.Series:
    """A grouping column (day, seller, category) as a polars Series of length n."""
    if isinstance(values, pl.Series):
        s = values
    else:
        arr = np.asarray(values)
        s = pl.Series(what, arr.tolist() if arr.dtype == object else arr)
    if s.len() != n:
        raise ValueError(f"{s.len()} {what} values for {n} labels")
    return s.alias(what)


def _frame(y: ArrayLike, score: ArrayLike, **columns: ArrayLike) -> pl.DataFrame:
    """Labels, scores and the named per-row columns, checked for length, as one frame."""
    labels = binary_labels(y)
    n = labels.size
    return pl.DataFrame(
        {"y": labels, "score": checked_scores(score, n),
         **{name: _column(values, n, name) for name, values in columns.items()}}
    )


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


# --------------------------------------------------------------------------- ranking metrics


def _daily_precision(frame: pl.DataFrame, k: int) -> float:
    """Mean over full days of the precision of each day's k best rows (frame: y, score, day).

    A day with fewer than k rows cannot fill a queue of k and is left out: its "precision at k"
    would be the share of fakes among whatever rows it has, the same for every ranking. (The
    newest days of a validation window are mostly unlabelled yet.) NaN when no day is full."""
    ranked = frame.with_columns(
        rank=pl.col("score").rank("ordinal", descending=True).over("day"),
        size=pl.len().over("day"),
    )
    top = ranked.filter((pl.col("size") >= k) & (pl.col("rank") <= k))
    if top.height == 0:
        return NAN
    return float(top.group_by("day").agg(pl.col("y").mean())["y"].mean())


def precision_at_k_daily(y: ArrayLike, score: ArrayLike, day: ArrayLike, k: int) -> float:
    """Mean over days of the precision among that day's k highest-scoring rows.

    Only days with at least k rows count (see `_daily_precision`). Ties in score are broken by
    row order. NaN when no day has k rows.
    """
    _check_k(k)
    return _daily_precision(_frame(y, score, day=day), k)


def precision_at_k_ceiling(y: ArrayLike, day: ArrayLike, k: int) -> float:
    """What a perfect ranking would score on `precision_at_k_daily`: per full day,
    min(k, fakes that day) / k, averaged. A model near it is limited by the data, not its order
    (when a day has fewer fakes than k, even a perfect queue holds genuine listings)."""
    _check_k(k)
    labels = binary_labels(y)
    return _daily_precision(_frame(labels, labels.astype(np.float64), day=day), k)


def seller_precision_at_k_daily(
    y: ArrayLike, score: ArrayLike, day: ArrayLike, seller: ArrayLike, k: int
) -> float:
    """Daily precision at k where a seller counts once per day.

    Per day, each seller is represented by their best-scoring row; the k sellers with the highest
    such rows are taken, and precision is computed over those k rows. Averaged over the days with
    at least k sellers. Ties are broken by row order. NaN when no day has k sellers.
    """
    _check_k(k)
    frame = _frame(y, score, day=day, seller=seller)
    best_per_seller = frame.filter(
        pl.col("score").rank("ordinal", descending=True).over("day", "seller") == 1
    )
    return _daily_precision(best_per_seller, k)


def category_capacity(k: int, rows: int, total: int) -> int:
    """A category's share of the daily review capacity k: proportional to its rows, >= 1."""
    return max(1, int(k * rows / total + 0.5)) if total else k


# --------------------------------------------------------------------------- threshold metrics


def pr_points(
    labels: NDArray[np.int8], scores: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Thresholds (distinct scores, descending) with precision and recall of score >= t."""
    order = np.argsort(-scores, kind="stable")
    s, yy = scores[order], labels[order]
    last_of_value = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(yy)[last_of_value].astype(np.float64)
    flagged = (last_of_value + 1).astype(np.float64)
    positives = float(labels.sum())
    recall = tp / positives if positives else np.full_like(tp, NAN)
    return s[last_of_value], tp / flagged, recall


class _Ranking:
    """Rows ordered by one score, for repeated weighted average precision (seller bootstrap).

    Average precision sums, over the blocks of tied scores that hold fakes, the block's share of
    the fakes times the precision at the block's end; only those blocks are kept, so one
    evaluation costs a gather and a cumulative sum over the rows plus work over the fakes."""

    def __init__(self, labels: NDArray[np.int8], scores: NDArray[np.float64],
                 groups: NDArray[np.int64]) -> None:
        order = np.argsort(-scores, kind="stable")
        ordered = scores[order]
        block_end = np.append(ordered[1:] != ordered[:-1], True)
        block = np.cumsum(np.append(False, block_end[:-1]))  # block number of each row
        ends = np.flatnonzero(block_end)
        positive = np.flatnonzero(labels[order])
        pos_block = block[positive]
        blocks = np.unique(pos_block)
        self.groups = groups[order]
        self.pos_groups = self.groups[positive]
        self.last_pos = np.searchsorted(pos_block, blocks, side="right") - 1
        self.block_ends = ends[blocks]

    def average_precision(self, weights: NDArray[np.float64]) -> float:
        """sklearn's step-wise average precision with one weight per group (equal to rounding);
        NaN, not sklearn's 0, when no fake has weight."""
        if self.last_pos.size == 0:
            return NAN
        tp = np.cumsum(weights[self.pos_groups])[self.last_pos]
        if tp[-1] <= 0:
            return NAN
        flagged = np.cumsum(weights[self.groups])[self.block_ends]
        precision = tp / np.maximum(flagged, 1e-300)
        return float(np.sum(np.diff(tp, prepend=0.0) * precision) / tp[-1])


@dataclass(frozen=True)
class Gain:
    """Average precision of a model minus a baseline's on the same rows, with a 95% interval."""

    difference: float
    low: float
    high: float
    resamples: int  # resamples with a defined AP (the interval's basis)

    def __str__(self) -> str:
        return (f"{self.difference:+.3f} (95% interval {self.low:+.3f} to {self.high:+.3f}, "
                f"{self.resamples} seller-bootstrap resamples)")


def average_precision_gains(
    y: ArrayLike, score: ArrayLike, baselines: Mapping[str, ArrayLike], seller: ArrayLike,
    resamples: int = 200, seed: int = 0,
) -> dict[str, Gain]:
    """Paired seller bootstrap of AP(score) - AP(baseline), for each baseline.

    Listings of one seller are alike, so sellers (not rows) are resampled: each seller gets a
    Poisson(1) weight for all its rows, and every score is evaluated under the same weights."""
    labels = binary_labels(y)
    n = labels.size
    sellers = _column(seller, n, "seller").cast(pl.String).fill_null("")
    codes = sellers.rank("dense").to_numpy().astype(np.int64) - 1
    n_sellers = int(codes.max()) + 1 if n else 0
    model = _Ranking(labels, checked_scores(score, n), codes)
    others = {name: _Ranking(labels, checked_scores(b, n), codes)
              for name, b in baselines.items()}
    rng = np.random.default_rng(seed)
    ones = np.ones(n_sellers)
    point = {name: model.average_precision(ones) - r.average_precision(ones)
             for name, r in others.items()}
    draws: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(resamples):
        w = rng.poisson(1.0, n_sellers).astype(np.float64)
        ap = model.average_precision(w)
        for name, r in others.items():
            draws[name].append(ap - r.average_precision(w))
    gains = {}
    for name, d in draws.items():
        # a resample whose sellers with fakes all drew weight 0 has no AP: it does not count
        finite = np.asarray(d)[np.isfinite(d)]
        low, high = np.percentile(finite, [2.5, 97.5]) if finite.size else (NAN, NAN)
        gains[name] = Gain(float(point[name]), float(low), float(high), int(finite.size))
    return gains


def recall_at_precision(y: ArrayLike, score: ArrayLike, target: float = 0.9) -> float:
    """Highest recall of any rule `score >= t` whose precision is >= target.

    0.0 when no threshold reaches the target precision; NaN when there are no positives.
    """
    labels = binary_labels(y)
    scores = checked_scores(score, labels.size)
    if labels.sum() == 0:
        return NAN
    _, precision, recall = pr_points(labels, scores)
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def choose_threshold(
    y: ArrayLike, score: ArrayLike, target_precision: float = 0.9
) -> ThresholdChoice:
    """Pick the flagging threshold on validation data.

    Rule: the lowest threshold t with precision(score >= t) >= target_precision, i.e. the
    highest recall at that precision. If no threshold reaches the target, the threshold with the
    best F1 (the highest such t on ties), and `rule` says so. Raises ValueError without positives.
    """
    labels = binary_labels(y)
    scores = checked_scores(score, labels.size)
    if labels.sum() == 0:
        raise ValueError("cannot choose a threshold: no positive labels")
    thresholds, precision, recall = pr_points(labels, scores)
    reaching = np.nonzero(precision >= target_precision)[0]
    if reaching.size:
        i = int(reaching[-1])
        rule = (
            f"lowest score threshold with precision >= {target_precision:g} "
            "(highest recall at that precision)"
        )
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
        i = int(np.argmax(f1))
        rule = (
            f"no threshold reaches precision {target_precision:g} "
            f"(best is {precision.max():.3f}): fell back to the threshold maximising F1"
        )
    # Place the threshold halfway to the next lower score, so no validation row sits exactly on
    # it (float32 inference could otherwise flip that row's flag); the same rows are flagged.
    # Below the lowest score, leave a margin far wider than ONNX's float32 error (~1e-7).
    below = (thresholds[i + 1] if i + 1 < thresholds.size
             else max(0.0, thresholds[i] - LOWEST_MARGIN))
    return ThresholdChoice(
        threshold=float((thresholds[i] + below) / 2),
        rule=rule + "; placed halfway to the next lower validation score",
        precision=float(precision[i]),
        recall=float(recall[i]),
    )


# --------------------------------------------------------------------------- full evaluation


def _metrics(frame: pl.DataFrame, k: int) -> dict[str, float]:
    """All metrics of one frame with columns y, score, day, seller; NaN where undefined."""
    labels = frame["y"].to_numpy().astype(np.int8)
    scores = frame["score"].to_numpy().astype(np.float64)
    rows, positives = labels.size, int(labels.sum())
    both_classes = 0 < positives < rows
    if rows == 0:
        return {key: (0.0 if key in ("rows", "positives") else NAN) for key in METRIC_KEYS}
    return {
        "average_precision": (float(average_precision_score(labels, scores)) if positives else NAN),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else NAN,
        "precision_at_k": precision_at_k_daily(labels, scores, frame["day"], k),
        "precision_at_k_ceiling": precision_at_k_ceiling(labels, frame["day"], k),
        "seller_precision_at_k": seller_precision_at_k_daily(
            labels, scores, frame["day"], frame["seller"], k
        ),
        "recall_at_p90": recall_at_precision(labels, scores, 0.9),
        "brier": float(np.mean((scores - labels) ** 2)),
        "positives": float(positives),
        "rows": float(rows),
    }


def evaluate(
    y: ArrayLike,
    score: ArrayLike,
    day: ArrayLike,
    seller: ArrayLike,
    category: ArrayLike,
    k: int,
) -> Evaluation:
    """Overall and per-category metrics (see METRIC_KEYS).

    Undefined metrics (no positives, one class only, no rows) are NaN in `metrics` and null in
    `per_category` (one row per category, sorted by category).
    """
    _check_k(k)
    frame = _frame(y, score, day=day, seller=seller, category=category)
    per_category = [
        {"category": key[0], **_metrics(part, category_capacity(k, part.height, frame.height))}
        for key, part in frame.partition_by("category", as_dict=True, maintain_order=True).items()
    ]
    table = pl.DataFrame(
        per_category,
        schema={"category": frame["category"].dtype, **dict.fromkeys(METRIC_KEYS, pl.Float64)},
    )
    table = table.with_columns(pl.col(METRIC_KEYS).fill_nan(None)).sort("category", nulls_last=True)
    return Evaluation(metrics=_metrics(frame, k), per_category=table)
