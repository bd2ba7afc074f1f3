"""Drift: population stability (PSI) of a batch's features and scores against the model's
reference population, over every listing and over the flagged ones.

The reference is the training catalog's validation window (its newest `valid_days`), with its
features computed as a scored batch's are: the rows of the training window are older (they
carry sales history new listings lack, and their seller counts span months), so against them
every batch of new listings looks drifted. At export, `reference_table` keeps for every feature
and for the score the cut points (deciles, and the 95th and 99th percentiles) and the share of
reference rows in each bin, with the null share as a bin of its own (`reference.parquet` in the
bundle, `Bundle.reference`), twice: over all the window's listings (`population` "all") and
over those the model flags (score >= the bundle's threshold, "flagged").

A batch is binned on the same cut points: PSI = sum over bins of (batch share - reference
share) * ln(batch share / reference share), shares floored at 1e-4. Below 0.1 a population is
usually read as stable, 0.1-0.2 as shifting, above 0.2 (`PSI_WARNING`) as drifted.

Why the flagged population: fakes are a few % of listings, so a change in the fakes (new rings,
newly targeted brands, fewer copy words: the generator's `--drift`) moves the whole batch's
score PSI less than the choice of seed does, while among the flagged listings it is most of the
population (`bench/drift.py`: whole-batch score PSI does not separate `--drift 2` batches from
`--drift 0` ones, the flagged listings' score PSI does, every seed). It is binned in quintiles
(few rows) and warns at half the threshold (`FLAGGED_WARNING_SHARE`); below `MIN_FLAGGED`
flagged listings it is sampling noise and never warns.

Seller, image and network features are aggregates over the batch (`BATCH_RELATIVE`): their
distribution follows the batch's length and span as much as the market, so they are measured
but neither listed as drifted nor warned about.

`BatchDrift` counts bins as a batch streams through the scorer (`Scorer.observer`), holding a
few numbers per feature whatever the batch size; `drift_report(features, scores, reference)`
measures a feature table at once, and `catalog_drift(path, scorer)` a batch file or folder.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from features.catalog import read_catalog
from features.pipeline import build_features
from features.registry import BATCH_RELATIVE
from serving.bundle import Bundle, BundleError
from serving.scorer import Scorer
from serving.variants import FULL, SCHEMA_KEY

# cut points: the reference's deciles, and finer in the upper tail, where fakes and flags are
# (a few % of rows: a shift there moves no decile); repeated cut points merge bins
CUT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# the flagged listings are few (hundreds in a validation window): quintiles, so that sampling
# noise (about bins / rows) stays below the shifts worth seeing
FLAGGED_CUT_QUANTILES = (0.2, 0.4, 0.6, 0.8)
PSI_WARNING = 0.2
SHARE_FLOOR = 1e-4  # an empty bin on either side would make PSI infinite
SCORE = "score"
ALL, FLAGGED = "all", "flagged"
# flagged listings needed for their PSI to warn: the PSI of two samples of one population is
# about (bins - 1) / n; at about 200 flagged listings undrifted batches measured up to 0.06
MIN_FLAGGED = 200
# the flagged listings' PSI warns at this share of the threshold: on 5 bins rather than 12 the
# same shift gives a lower PSI (coarser bins never raise it). bench/drift.py at 0.1: 6 of 8
# drift-2 batches warn, none of 8 undrifted ones (their highest: 0.017)
FLAGGED_WARNING_SHARE = 0.5
TOP = 5  # most drifted features named in the summary


class DriftError(ValueError):
    """Drift cannot be measured (no reference in the bundle, an empty batch)."""


def _values(column: pl.Series) -> NDArray[np.float64]:
    """A column as float64 with NaN for null."""
    return column.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)


def bin_counts(values: NDArray[np.float64], cuts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows in (-inf, c1], (c1, c2], ..., (ck, inf), then NaN (null). A value's bin is the
    number of cuts below it, summed one comparison per cut: 3x faster than `np.searchsorted`
    for a dozen cuts, which made counting 20% of a batch's scoring time."""
    index = np.zeros(len(values), dtype=np.intp)
    for cut in cuts:
        index += values > cut
    index[np.isnan(values)] = len(cuts) + 1
    return np.bincount(index, minlength=len(cuts) + 2).astype(np.float64)


def bin_shares(values: NDArray[np.float64], cuts: NDArray[np.float64]) -> NDArray[np.float64]:
    """`bin_counts` as shares of the values."""
    return bin_counts(values, cuts) / max(len(values), 1)


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    """Population stability index of two bin-share vectors of the same bins."""
    e, a = np.maximum(expected, SHARE_FLOOR), np.maximum(actual, SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _population(columns: dict[str, NDArray[np.float64]], population: str) -> list[dict]:
    quantiles = FLAGGED_CUT_QUANTILES if population == FLAGGED else CUT_QUANTILES
    rows = []
    for name, values in columns.items():
        present = values[~np.isnan(values)]
        cuts = (np.unique(np.quantile(present, quantiles)) if present.size
                else np.empty(0))
        rows.append({"name": name, "population": population, "rows": len(values),
                     "cuts": cuts.tolist(), "shares": bin_shares(values, cuts).tolist()})
    return rows


def reference_table(features: pl.DataFrame, scores: NDArray[np.floating],
                    flag_threshold: float | None = None) -> pl.DataFrame:
    """One row per feature (every column of `features`) and one for the score, per population:
    `name`, `population` ("all", and "flagged" when `flag_threshold` is given and flags a row),
    its `rows`, the `cuts` of its non-null values (at CUT_QUANTILES, or FLAGGED_CUT_QUANTILES
    for the flagged) and the `shares` of each bin (null last)."""
    columns = {name: _values(features[name]) for name in features.columns}
    columns[SCORE] = np.asarray(scores, dtype=np.float64)
    rows = _population(columns, ALL)
    if flag_threshold is not None:
        flagged = columns[SCORE] >= flag_threshold
        if flagged.any():
            rows += _population({k: v[flagged] for k, v in columns.items()}, FLAGGED)
    return pl.DataFrame(rows, schema={
        "name": pl.String, "population": pl.String, "rows": pl.Int64,
        "cuts": pl.List(pl.Float64), "shares": pl.List(pl.Float64)})


@dataclass(frozen=True)
class FlaggedDrift:
    """PSI among the listings the model flags, against the reference's flagged listings
    (`score_psi` None when the batch flagged none)."""

    psi: dict[str, float]  # empty when only scores were counted (a Dask batch)
    score_psi: float | None
    rows: int
    reference_rows: int
    flag_rate: float
    reference_flag_rate: float

    @property
    def reliable(self) -> bool:
        """Enough flagged listings on both sides for the PSI to be more than noise."""
        return min(self.rows, self.reference_rows) >= MIN_FLAGGED

    def summary(self) -> dict[str, object]:
        return {"rows": self.rows, "reference_rows": self.reference_rows,
                "flag_rate": round(self.flag_rate, 5),
                "reference_flag_rate": round(self.reference_flag_rate, 5),
                "score_psi": None if self.score_psi is None else round(self.score_psi, 4),
                "reliable": self.reliable,
                "top_drifted": [{"feature": k, "psi": round(v, 4)}
                                for k, v in ranked(self.psi)[:TOP]]}

    def describe(self) -> str:
        rates = (f"{self.flag_rate:.2%} of the batch against {self.reference_flag_rate:.2%} on "
                 "the reference")
        if self.score_psi is None:
            return f"nothing flagged ({rates})"
        noise = "" if self.reliable else (f"; under {MIN_FLAGGED} flagged on a side: "
                                          "too few to warn")
        return (f"flagged listings' score PSI {self.score_psi:.3f} ({self.rows} flagged, "
                f"{rates}{noise})")


def ranked(values: dict[str, float]) -> list[tuple[str, float]]:
    """Features other than the batch aggregates, most drifted first."""
    kept = [(k, v) for k, v in values.items() if k not in BATCH_RELATIVE]
    return sorted(kept, key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature and of the score for one batch, over all its listings and over the
    flagged ones (None for a reference without them), against the reference of the model
    that scored it (`schema`: the main model, `full`, or a schema variant's key); `warning`
    past `threshold`."""

    psi: dict[str, float]
    score_psi: float
    rows: int
    threshold: float = PSI_WARNING
    flagged: FlaggedDrift | None = None
    schema: str = FULL

    @property
    def drifted(self) -> list[str]:
        """Features past the threshold, most drifted first (batch aggregates left out)."""
        return [name for name, value in ranked(self.psi) if value > self.threshold]

    @property
    def flagged_threshold(self) -> float:
        return self.threshold * FLAGGED_WARNING_SHARE

    @property
    def flagged_warning(self) -> bool:
        f = self.flagged
        return (f is not None and f.reliable and f.score_psi is not None
                and f.score_psi > self.flagged_threshold)

    @property
    def warning(self) -> bool:
        """The score's distribution moved past the threshold over all listings, or past half
        of it over enough flagged ones: the flags no longer mean what they meant on the
        reference. (Drifted features alone are listed, not warned about.)"""
        return self.score_psi > self.threshold or self.flagged_warning

    def top(self, n: int = TOP) -> list[tuple[str, float]]:
        return ranked(self.psi)[:n]

    def summary(self) -> dict[str, object]:
        """The `knockoff drift` JSON: psi, score_psi, warning, and what helps read them."""
        return {
            "psi": {k: round(v, 4) for k, v in self.psi.items()},
            "score_psi": round(self.score_psi, 4), "warning": self.warning,
            "threshold": self.threshold, "flagged_threshold": self.flagged_threshold,
            "rows": self.rows, "schema": self.schema,
            "top_drifted": [{"feature": k, "psi": round(v, 4)} for k, v in self.top()],
            "drifted_features": self.drifted,
            "flagged": None if self.flagged is None else self.flagged.summary(),
            "batch_relative": [k for k in self.psi if k in BATCH_RELATIVE],
        }

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow."""
        order = ranked(self.psi)
        metrics = {"score_psi": self.score_psi,
                   "max_feature_psi": order[0][1] if order else 0.0,
                   "drifted_features": float(len(self.drifted)), "rows": float(self.rows),
                   "warning": float(self.warning),
                   **{f"psi_{k}": v for k, v in self.psi.items()}}
        if self.flagged is not None:
            metrics |= {"flagged_rows": float(self.flagged.rows),
                        "flag_rate": self.flagged.flag_rate,
                        "reference_flag_rate": self.flagged.reference_flag_rate}
            if self.flagged.score_psi is not None:
                metrics["flagged_score_psi"] = self.flagged.score_psi
        return metrics

    def describe(self) -> str:
        """One line for people: the scores' PSI and the most drifted features."""
        top = ", ".join(f"{k} {v:.2f}" for k, v in self.top(3)) or "none measured"
        line = f"score PSI {self.score_psi:.3f}"
        if self.flagged is not None:
            line += f"; {self.flagged.describe()}"
        if self.schema != FULL:
            line += f"; scored by schema variant {self.schema}"
        return f"{line}; most drifted features: {top}"


class DriftCounter:
    """Bin counts of a batch's features and scores on one reference's cut points, over all
    listings and over those scoring at or above `flag_threshold`."""

    def __init__(self, reference: pl.DataFrame, flag_threshold: float | None = None) -> None:
        if "population" not in reference.columns:  # a bundle exported before flagged drift
            reference = reference.with_columns(population=pl.lit(ALL), rows=pl.lit(0))
        self.flag_threshold = flag_threshold
        self.cuts: dict[tuple[str, str], NDArray[np.float64]] = {}
        self.expected: dict[tuple[str, str], NDArray[np.float64]] = {}
        self.reference_rows: dict[str, int] = {}
        for row in reference.iter_rows(named=True):
            if row["population"] == FLAGGED and flag_threshold is None:
                continue
            key = (row["population"], row["name"])
            self.cuts[key] = np.asarray(row["cuts"], dtype=np.float64)
            self.expected[key] = np.asarray(row["shares"], dtype=np.float64)
            self.reference_rows[row["population"]] = row["rows"]
        self.counts = {key: np.zeros(len(s)) for key, s in self.expected.items()}
        self.rows = {(population, kind): 0 for population in (ALL, FLAGGED)
                     for kind in ("features", SCORE)}
        self.flagged = (FLAGGED, SCORE) in self.cuts and bool(self.reference_rows.get(ALL))

    @classmethod
    def of(cls, bundle: Bundle) -> DriftCounter | None:
        """A counter on `bundle`'s reference and threshold; None for a bundle exported
        without a reference, or whose reference is unreadable (said on stderr: drift never
        stops a batch's scoring)."""
        try:
            reference = bundle.reference
        except BundleError as exc:
            print(f"knockoff: no drift measured: {exc}", file=sys.stderr)
            return None
        return None if reference is None else cls(reference, bundle.threshold)

    @property
    def scored(self) -> int:
        return self.rows[ALL, SCORE]

    def _names(self, population: str) -> list[str]:
        return [name for p, name in self.cuts if p == population and name != SCORE]

    def _count(self, population: str, features: pl.DataFrame | None,
               scores: NDArray[np.float64]) -> None:
        if features is not None:
            names = self._names(population)
            # one float64 matrix, null as NaN, binned a column at a time
            matrix = features.select(names).cast(pl.Float64).fill_nan(None).to_numpy()
            for j, name in enumerate(names):
                self.counts[population, name] += bin_counts(matrix[:, j],
                                                            self.cuts[population, name])
            self.rows[population, "features"] += features.height
        self.counts[population, SCORE] += bin_counts(scores, self.cuts[population, SCORE])
        self.rows[population, SCORE] += len(scores)

    def add(self, features: pl.DataFrame | None, scores: NDArray[np.floating]) -> None:
        """Count one scored feature table, or scores alone (`features` None: a batch whose
        features were computed elsewhere)."""
        values = np.asarray(scores, dtype=np.float64)
        self._count(ALL, features, values)
        if self.flagged:
            assert self.flag_threshold is not None
            hit = values >= self.flag_threshold
            self._count(FLAGGED, None if features is None else features.filter(pl.Series(hit)),
                        values[hit])

    def _psi(self, population: str) -> tuple[dict[str, float], float | None]:
        rows, scored = self.rows[population, "features"], self.rows[population, SCORE]
        features = {name: psi(self.expected[population, name],
                              self.counts[population, name] / rows)
                    for name in self._names(population)} if rows else {}
        return features, (psi(self.expected[population, SCORE],
                              self.counts[population, SCORE] / scored) if scored else None)

    def report(self, threshold: float = PSI_WARNING, schema: str = FULL) -> DriftReport | None:
        """PSI of everything counted; None when no row was scored. Features are left out when
        only scores were counted (a Dask batch)."""
        if not self.scored:
            return None
        features, score_psi = self._psi(ALL)
        assert score_psi is not None
        flagged = None
        if self.flagged:
            flagged_features, flagged_psi = self._psi(FLAGGED)
            flagged = FlaggedDrift(
                flagged_features, flagged_psi, self.rows[FLAGGED, SCORE],
                self.reference_rows[FLAGGED], self.rows[FLAGGED, SCORE] / self.scored,
                self.reference_rows[FLAGGED] / self.reference_rows[ALL])
        return DriftReport(features, score_psi, self.scored, threshold, flagged, schema)


class BatchDrift:
    """A batch's drift, counted per model that scores its rows (the main bundle, or a schema
    variant's with its own reference and threshold): `add` is the `Scorer.observer`."""

    def __init__(self) -> None:
        self.counters: dict[Path, DriftCounter | None] = {}
        self.schemas: dict[Path, str] = {}

    def add(self, bundle: Bundle, features: pl.DataFrame | None,
            scores: NDArray[np.floating]) -> None:
        """Count rows `bundle` scored (`features` None: scores alone)."""
        if bundle.path not in self.counters:
            self.counters[bundle.path] = DriftCounter.of(bundle)
            self.schemas[bundle.path] = schema_of(bundle)
        counter = self.counters[bundle.path]
        if counter is not None:
            counter.add(features, scores)

    @property
    def scored(self) -> int:
        return sum(c.scored for c in self.counters.values() if c is not None)

    def report(self, threshold: float = PSI_WARNING) -> DriftReport | None:
        """The drift of the rows of the model that scored most of them (a batch of one file
        has one), against that model's reference; None when no row was counted."""
        counted = [(c.scored, path) for path, c in self.counters.items() if c and c.scored]
        if not counted:
            return None
        _, path = max(counted)
        counter = self.counters[path]
        assert counter is not None
        return counter.report(threshold, self.schemas[path])


def schema_of(bundle: Bundle) -> str:
    """The schema variant a bundle was trained for (`full` for a main bundle)."""
    schema = bundle.spec.get(SCHEMA_KEY)
    return str(schema.get("key", FULL)) if isinstance(schema, dict) else FULL


def drift_report(features: pl.DataFrame, scores: NDArray[np.floating], reference: pl.DataFrame,
                 threshold: float = PSI_WARNING,
                 flag_threshold: float | None = None) -> DriftReport:
    """PSI of each reference feature (columns of `features`) and of `scores` (one per row),
    and among the rows scoring at or above `flag_threshold` when given."""
    if features.height == 0:
        raise DriftError("the batch has no valid rows to measure drift on")
    missing = sorted(set(reference["name"]) - {SCORE} - set(features.columns))
    if missing:
        raise DriftError(f"the batch's features lack {', '.join(missing)}")
    counter = DriftCounter(reference, flag_threshold)
    counter.add(features, np.asarray(scores, dtype=np.float64))
    report = counter.report(threshold)
    assert report is not None  # rows were counted
    return report


def catalog_drift(source: str | Path, scorer: Scorer,
                  threshold: float = PSI_WARNING) -> DriftReport:
    """Drift of a catalog batch (file or folder) scored as `knockoff score` scores it (each
    file by the schema variant that fits it), against that model's reference: its valid rows'
    features (in memory, aggregates over the whole batch) and scores."""
    catalog = read_catalog(source, currency=scorer.state.currency)
    plan = scorer.plan(catalog)
    rows = plan.rows if plan else catalog.rows
    features = build_features(rows, scorer.state, keep=scorer.keep_columns(rows)).collect(
        engine="in-memory")
    if features.height == 0:
        raise DriftError("the batch has no valid rows to measure drift on")
    counter = BatchDrift()
    dataclasses.replace(scorer, observer=counter.add).score_features(features, explain=False)
    report = counter.report(threshold)
    if report is None:
        raise DriftError(f"{scorer.bundle.path}: the model that scores this batch has no "
                         "reference quantiles (it was exported before drift was measured); "
                         "retrain to get them")
    return report
