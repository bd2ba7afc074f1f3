"""Drift: population stability (PSI) of a batch's features and scores against the model's
reference population.

The reference is the training catalog's validation window (its newest `valid_days`), with its
features computed as a scored batch's are: the rows of the training window are older (they
carry sales history new listings lack, and their seller counts span months), so against them
every batch of new listings looks drifted. At export, `reference_table` keeps for every feature
and for the score the cut points (deciles, and the 95th and 99th percentiles) and the share of
reference rows in each bin, with the null share as a bin of its own (`reference.parquet` in the
bundle, `Bundle.reference`). A batch is binned on the same cut points: PSI = sum over bins of
(batch share - reference share) * ln(batch share / reference share), shares floored at 1e-4.
Below 0.1 a population is usually read as stable, 0.1-0.2 as shifting, above 0.2
(`PSI_WARNING`) as drifted.

Call `catalog_drift(path, scorer)` for a batch file or folder (features in memory), or
`drift_report(features, scores, reference)` for a feature table already computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from features.catalog import read_catalog
from features.pipeline import build_features
from serving.scorer import Scorer

# cut points: the reference's deciles, and finer in the upper tail, where fakes and flags are
# (a few % of rows: a shift there moves no decile); repeated cut points merge bins
CUT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
PSI_WARNING = 0.2
SHARE_FLOOR = 1e-4  # an empty bin on either side would make PSI infinite
SCORE = "score"
TOP = 5  # most drifted features named in the summary


class DriftError(ValueError):
    """Drift cannot be measured (no reference in the bundle, an empty batch)."""


def _values(column: pl.Series) -> NDArray[np.float64]:
    """A column as float64 with NaN for null."""
    return column.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)


def bin_shares(values: NDArray[np.float64], cuts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Share of values in each bin: (-inf, c1], (c1, c2], ..., (ck, inf), then NaN (null)."""
    missing = np.isnan(values)
    index = np.searchsorted(cuts, values[~missing], side="left")
    counts = np.bincount(index, minlength=len(cuts) + 1).astype(np.float64)
    return np.append(counts, missing.sum()) / max(len(values), 1)


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    """Population stability index of two bin-share vectors of the same bins."""
    e, a = np.maximum(expected, SHARE_FLOOR), np.maximum(actual, SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_table(features: pl.DataFrame, scores: NDArray[np.floating]) -> pl.DataFrame:
    """One row per feature (every column of `features`) and one for the score: `name`, the
    decile `cuts` of its non-null values and the reference `shares` of each bin (null last)."""
    columns = {name: _values(features[name]) for name in features.columns}
    columns[SCORE] = np.asarray(scores, dtype=np.float64)
    rows = []
    for name, values in columns.items():
        present = values[~np.isnan(values)]
        cuts = (np.unique(np.quantile(present, CUT_QUANTILES)) if present.size
                else np.empty(0))
        rows.append({"name": name, "cuts": cuts.tolist(),
                     "shares": bin_shares(values, cuts).tolist()})
    return pl.DataFrame(rows, schema={"name": pl.String, "cuts": pl.List(pl.Float64),
                                      "shares": pl.List(pl.Float64)})


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature and of the score for one batch; `warning` past `threshold`."""

    psi: dict[str, float]
    score_psi: float
    rows: int
    threshold: float = PSI_WARNING

    @property
    def drifted(self) -> list[str]:
        """Features past the threshold, most drifted first."""
        return [name for name, value in self.top(len(self.psi)) if value > self.threshold]

    @property
    def warning(self) -> bool:
        """The score's distribution moved past the threshold: the flags no longer mean what
        they meant on the reference (drifted features alone are listed, not warned about: batch
        aggregates such as seller counts move with any batch's length)."""
        return self.score_psi > self.threshold

    def top(self, n: int = TOP) -> list[tuple[str, float]]:
        return sorted(self.psi.items(), key=lambda item: (-item[1], item[0]))[:n]

    def summary(self) -> dict[str, object]:
        """The `knockoff drift` JSON: psi, score_psi, warning, and what helps read them."""
        return {
            "psi": {k: round(v, 4) for k, v in self.psi.items()},
            "score_psi": round(self.score_psi, 4), "warning": self.warning,
            "threshold": self.threshold, "rows": self.rows,
            "top_drifted": [{"feature": k, "psi": round(v, 4)} for k, v in self.top()],
            "drifted_features": self.drifted,
        }

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow."""
        return {"score_psi": self.score_psi, "max_feature_psi": max(self.psi.values()),
                "drifted_features": float(len(self.drifted)), "rows": float(self.rows),
                **{f"psi_{k}": v for k, v in self.psi.items()}}

    def describe(self) -> str:
        """One line for people: the score's PSI and the most drifted features."""
        top = ", ".join(f"{k} {v:.2f}" for k, v in self.top(3))
        return f"score PSI {self.score_psi:.3f}; most drifted features: {top}"


def drift_report(features: pl.DataFrame, scores: NDArray[np.floating], reference: pl.DataFrame,
                 threshold: float = PSI_WARNING) -> DriftReport:
    """PSI of each reference feature (columns of `features`) and of `scores` (one per row)."""
    if features.height == 0:
        raise DriftError("the batch has no valid rows to measure drift on")
    values = dict(zip(reference["name"], zip(reference["cuts"], reference["shares"],
                                            strict=True), strict=True))
    missing = sorted(set(values) - {SCORE} - set(features.columns))
    if missing:
        raise DriftError(f"the batch's features lack {', '.join(missing)}")
    result: dict[str, float] = {}
    for name, (cuts, shares) in values.items():
        data = (np.asarray(scores, dtype=np.float64) if name == SCORE
                else _values(features[name]))
        result[name] = psi(np.asarray(shares), bin_shares(data, np.asarray(cuts)))
    score_psi = result.pop(SCORE)
    return DriftReport(result, score_psi, features.height, threshold)


def catalog_drift(source: str | Path, scorer: Scorer,
                  threshold: float = PSI_WARNING) -> DriftReport:
    """Drift of a catalog batch (file or folder) against `scorer`'s bundle: its valid rows'
    features (in memory, aggregates over the whole batch) and scores."""
    reference = scorer.bundle.reference
    if reference is None:
        raise DriftError(f"{scorer.bundle.path}: this bundle has no reference quantiles (it "
                         "was exported before drift was measured); retrain to get them")
    catalog = read_catalog(source, currency=scorer.state.currency)
    features = build_features(catalog.rows, scorer.state).collect(engine="in-memory")
    names = list(scorer.bundle.features)
    scores = scorer.bundle.predict(features.select(names).to_numpy().astype(np.float32))
    return drift_report(features.select(names), scores, reference, threshold)
