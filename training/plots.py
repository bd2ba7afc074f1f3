"""The run's figures: precision-recall curves, calibration, feature importance, SHAP summary.

matplotlib's object API only (an Agg canvas, no pyplot state, nothing shown); each function
returns a Figure for the tracking module to log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score

from training.evaluate import NAN, binary_labels, checked_scores, pr_points


def _figure(width: float = 6.4, height: float = 4.8, **kwargs: object) -> Figure:
    """A figure on an Agg canvas (no pyplot, no display)."""
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _pr_curve(
    labels: NDArray[np.int8], scores: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Recall and precision points starting at (0, 1), for a step plot."""
    _, precision, recall = pr_points(labels, scores)
    return np.r_[0.0, recall], np.r_[1.0, precision]


def pr_curve_figure(y: ArrayLike, scores: Mapping[str, ArrayLike]) -> Figure:
    """Precision-recall curves of the model and baselines on one axis, AP in the legend."""
    labels = binary_labels(y)
    fig = _figure()
    ax = fig.add_subplot()
    if labels.sum() == 0:
        ax.set_title("Precision-recall: no positive labels")
    for name, raw in scores.items():
        s = checked_scores(raw, labels.size)
        if labels.sum() == 0:
            continue
        ap = average_precision_score(labels, s)
        recall, precision = _pr_curve(labels, s)
        ax.step(recall, precision, where="post", label=f"{name} (AP={ap:.3f})")
    if labels.size:
        ax.axhline(labels.mean(), color="grey", linestyle=":", label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def calibration_figure(y: ArrayLike, score: ArrayLike, bins: int = 10) -> Figure:
    """Reliability diagram (observed share of fakes per score bin) over a score histogram."""
    labels = binary_labels(y)
    scores = checked_scores(score, labels.size)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    used = counts > 0
    mean_score = np.bincount(which, scores, bins)[used] / counts[used]
    observed = np.bincount(which, labels.astype(np.float64), bins)[used] / counts[used]

    fig = _figure(6.4, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    top.plot(mean_score, observed, marker="o", label="model")
    top.set(ylabel="observed share of fakes", ylim=(0, 1), title="Calibration")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(scores, bins=edges, color="tab:blue", alpha=0.7)
    bottom.set(xlabel="predicted P(fake)", ylabel="rows", xlim=(0, 1))
    bottom.set_yscale("log" if counts.max(initial=0) > 100 else "linear")
    return fig


def importance_figure(names: Sequence[str], gains: ArrayLike, top: int = 25) -> Figure:
    """Horizontal bars of the `top` features by gain, largest on top."""
    gain = np.asarray(gains, dtype=np.float64).reshape(-1)
    if gain.size != len(names):
        raise ValueError(f"{gain.size} gains for {len(names)} names")
    order = np.argsort(-gain, kind="stable")[:top][::-1]
    fig = _figure(6.4, max(2.0, 0.25 * order.size + 1.0))
    ax = fig.add_subplot()
    ax.barh([names[i] for i in order], gain[order], color="tab:blue")
    ax.set(xlabel="total gain", title=f"Feature importance (top {order.size})")
    fig.tight_layout()
    return fig


def _value_ranks(column: NDArray[np.float64]) -> NDArray[np.float64]:
    """Percentile rank of each value in [0, 1]; NaN stays NaN (drawn grey)."""
    out = np.full(column.size, NAN)
    finite = ~np.isnan(column)
    if finite.any():
        ranks = pl.Series(column[finite]).rank("average").to_numpy()
        out[finite] = (ranks - 1) / max(finite.sum() - 1, 1)
    return out


def shap_summary_figure(
    contrib: ArrayLike,
    X: ArrayLike,
    names: Sequence[str],
    top: int = 20,
    max_points: int = 5_000,
    seed: int = 0,
) -> Figure:
    """Beeswarm-like summary of per-row feature contributions (LightGBM pred_contrib).

    `contrib` is (n, f + 1) with the bias in the last column; `X` is (n, f). Features are ordered
    by mean |contribution|; each row is a point at its contribution, coloured by the rank of its
    feature value (blue low, red high, grey missing). At most `max_points` rows are drawn.
    """
    c = np.asarray(contrib, dtype=np.float64)
    x = np.asarray(X, dtype=np.float64)
    f = len(names)
    if c.ndim != 2 or x.ndim != 2 or c.shape != (x.shape[0], f + 1) or x.shape[1] != f:
        raise ValueError(f"need contrib (n, {f + 1}) and X (n, {f}); got {c.shape} and {x.shape}")
    rng = np.random.default_rng(seed)
    if c.shape[0] > max_points:
        keep = np.sort(rng.choice(c.shape[0], max_points, replace=False))
        c, x = c[keep], x[keep]
    c = c[:, :f]
    order = np.argsort(-np.abs(c).mean(axis=0), kind="stable")[:top][::-1]

    fig = _figure(7.0, max(2.5, 0.35 * order.size + 1.2))
    ax = fig.add_subplot()
    points = None
    for row, j in enumerate(order):
        jitter = rng.uniform(-0.3, 0.3, c.shape[0])
        ranks = _value_ranks(x[:, j])
        missing = np.isnan(ranks)
        ax.scatter(c[missing, j], row + jitter[missing], s=4, color="lightgrey")
        points = ax.scatter(
            c[~missing, j],
            row + jitter[~missing],
            s=4,
            c=ranks[~missing],
            cmap="coolwarm",
            vmin=0.0,
            vmax=1.0,
        )
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(order.size), [names[j] for j in order])
    ax.set(xlabel="contribution to log-odds of fake", title="Feature contributions")
    if points is not None:
        fig.colorbar(points, ax=ax, label="feature value (rank, low to high)")
    fig.tight_layout()
    return fig
