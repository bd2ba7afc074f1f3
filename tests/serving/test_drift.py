"""Drift: PSI on tiny arrays, the reference saved in the bundle, and `knockoff drift` on a batch
drifted twice as much as the generator's default against an undrifted one (same market), both
later than an undrifted training catalog."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from features.registry import BATCH_RELATIVE, FEATURE_COLUMNS
from knockoff.cli import main
from serving.bundle import Bundle
from serving.drift import (
    ALL,
    CUT_QUANTILES,
    FLAGGED,
    FLAGGED_CUT_QUANTILES,
    MIN_FLAGGED,
    SCORE,
    DriftError,
    bin_shares,
    drift_report,
    psi,
    reference_table,
)
from synthetic.generate import generate_catalog
from training.config import TrainConfig
from training.train import train


def test_bin_shares_put_nulls_in_their_own_bin() -> None:
    values = np.array([0.0, 1.0, 1.0, 2.0, 5.0, np.nan, np.nan, np.nan])
    shares = bin_shares(values, np.array([1.0, 2.0]))
    # (-inf, 1], (1, 2], (2, inf), null
    np.testing.assert_allclose(shares, [3 / 8, 1 / 8, 1 / 8, 3 / 8])


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    reference = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(reference, reference) == 0.0
    small, large = np.array([0.3, 0.25, 0.25, 0.2]), np.array([0.7, 0.1, 0.1, 0.1])
    assert 0 < psi(reference, small) < psi(reference, large)
    assert psi(reference, small) == pytest.approx(0.05 * math.log(0.3 / 0.25)
                                                  - 0.05 * math.log(0.2 / 0.25))
    assert math.isfinite(psi(reference, np.array([1.0, 0.0, 0.0, 0.0])))  # empty bins floored


def test_reference_and_report_on_a_shifted_and_a_sparser_batch() -> None:
    rng = np.random.default_rng(0)
    base = pl.DataFrame({"a": rng.normal(size=5000), "b": rng.exponential(size=5000)})
    scores = rng.random(5000)
    reference = reference_table(base, scores)
    assert reference["name"].to_list() == ["a", "b", SCORE]
    assert reference["cuts"].list.len().to_list() == [len(CUT_QUANTILES)] * 3
    assert all(math.isclose(sum(s), 1.0) for s in reference["shares"].to_list())

    same = drift_report(base, scores, reference)
    assert max(same.psi.values()) < 1e-9 and same.score_psi < 1e-9 and not same.warning
    moved = base.with_columns(pl.col("a") + 1.0,
                              pl.when(pl.int_range(pl.len()) % 2 == 0).then(None)
                              .otherwise(pl.col("b")).alias("b"))
    report = drift_report(moved, scores ** 0.3, reference)
    assert report.psi["a"] > 0.5 and report.psi["b"] > 0.5  # half the b's now null
    assert report.warning and report.drifted == ["b", "a"] or report.drifted == ["a", "b"]
    summary = report.summary()
    assert set(summary) >= {"psi", "score_psi", "warning"} and summary["rows"] == 5000
    with pytest.raises(DriftError, match="lack a"):
        drift_report(base.drop("a"), scores, reference)


def test_flagged_population_sees_a_shift_among_the_few_flagged_rows() -> None:
    """A change confined to the top 5% of scores barely moves the whole batch's score PSI; among
    the flagged rows (score >= 0.95 here) it is the whole population."""
    rng = np.random.default_rng(1)
    base = pl.DataFrame({"a": rng.normal(size=20_000)})
    scores = rng.random(20_000)
    reference = reference_table(base, scores, flag_threshold=0.95)
    assert set(reference["population"]) == {ALL, FLAGGED}
    flagged = reference.filter(population=FLAGGED, name=SCORE).row(0, named=True)
    assert flagged["rows"] == int((scores >= 0.95).sum())
    moved = np.where(scores >= 0.95, 0.95 + (scores - 0.95) ** 2 * 20, scores)  # crowd at 0.95
    report = drift_report(base, moved, reference, flag_threshold=0.95)
    assert report.flagged is not None and report.flagged.rows == flagged["rows"]
    assert report.score_psi < 0.01 < 0.2 < report.flagged.score_psi
    assert report.warning and report.flagged.reliable
    assert report.flagged.flag_rate == pytest.approx(report.flagged.reference_flag_rate)
    assert report.metrics()["flagged_score_psi"] == report.flagged.score_psi
    few = drift_report(base[:3000], moved[:3000], reference, flag_threshold=0.95)
    assert few.flagged is not None and few.flagged.rows < MIN_FLAGGED and not few.warning
    nothing = drift_report(base, scores * 0.9, reference, flag_threshold=0.95)
    assert nothing.flagged is not None and nothing.flagged.rows == 0
    assert nothing.flagged.score_psi is None and not nothing.flagged_warning
    assert "nothing flagged" in nothing.describe() and "flagged_score_psi" not in nothing.metrics()
    small = reference_table(base[:2000], scores[:2000], flag_threshold=0.95)  # ~100 flagged
    assert not drift_report(base, moved, small, flag_threshold=0.95).flagged.reliable  # type: ignore[union-attr]
    # a reference from before the flagged population (no population column): all rows only
    old = reference.filter(population=ALL).drop("population", "rows")
    assert drift_report(base, moved, old, flag_threshold=0.95).flagged is None
    assert drift_report(base, moved, reference).flagged is None  # no threshold given


def _cli(*argv: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


@pytest.fixture(scope="module")
def trained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model on an undrifted catalog (`--drift 0`, 100,000 listings: about 800 flagged in
    its validation window), a later undrifted batch from another seed, and one with drift 2
    (20,000 listings over 31 days each)."""
    folder = tmp_path_factory.mktemp("drift")
    generate_catalog(folder / "catalog.parquet", 100_000, seed=7, days=150, drift=0)
    later = date(2026, 6, 1)
    generate_catalog(folder / "same.parquet", 20_000, seed=9, start=later, days=31, drift=0)
    generate_catalog(folder / "drifted.parquet", 20_000, seed=8, start=later, days=31, drift=2)
    result = train(folder / "catalog.parquet", TrainConfig(threads=1, schema_variants=()),
                   progress=False)
    return {"bundle": Path(result.bundle), "same": folder / "same.parquet",
            "drifted": folder / "drifted.parquet", "version": result.model_version}


def test_the_bundle_carries_the_reference(trained: dict[str, Any]) -> None:
    bundle = Bundle.load(trained["bundle"], threads=1)
    reference = bundle.reference
    assert reference is not None
    names = [*FEATURE_COLUMNS, SCORE]
    assert reference.filter(population=ALL)["name"].to_list() == names
    assert reference.filter(population=FLAGGED)["name"].to_list() == names
    flagged = reference.filter(population=FLAGGED, name=SCORE).row(0, named=True)
    everyone = reference.filter(population=ALL, name=SCORE).row(0, named=True)
    assert 100 < flagged["rows"] < everyone["rows"] / 10  # a few % of the window is flagged
    assert min(flagged["cuts"]) >= bundle.threshold  # flagged: score at or above it
    assert len(flagged["cuts"]) == len(FLAGGED_CUT_QUANTILES)


def test_drift_command_reports_more_drift_on_the_drifted_batch(trained: dict[str, Any]) -> None:
    """The drift changes the fakes, a few % of rows: the flagged listings' score PSI tells the
    drifted batch from the undrifted one by a wide margin (bench/drift.py: every seed)."""
    bundle = str(trained["bundle"])
    code, same, err = _cli("drift", str(trained["same"]), "--model", bundle)
    assert code == 0, err
    code, drifted, err = _cli("drift", str(trained["drifted"]), "--model", bundle)
    assert code == 0, err
    assert set(same["psi"]) == set(FEATURE_COLUMNS)
    for summary in (same, drifted):
        assert summary["flagged"]["reliable"] and summary["flagged"]["rows"] > MIN_FLAGGED
        assert not set(summary["drifted_features"]) & BATCH_RELATIVE
        assert {f["feature"] for f in summary["top_drifted"]}.isdisjoint(BATCH_RELATIVE)
        assert set(summary["batch_relative"]) == BATCH_RELATIVE
    assert drifted["flagged"]["score_psi"] > 2 * same["flagged"]["score_psi"]
    assert same["flagged"]["score_psi"] < 0.1 < drifted["flagged"]["score_psi"]
    assert drifted["flagged"]["flag_rate"] > same["flagged"]["flag_rate"]  # more fakes
    assert not same["warning"] and drifted["flagged_threshold"] == 0.1
    assert drifted["warning"] == (drifted["flagged"]["score_psi"] > 0.1)  # its score PSI < 0.2
    assert drifted["schema"] == same["schema"] == "full"
    assert "no warning (scores' PSI at most 0.2, 0.1 among the flagged" in _cli(
        "drift", str(trained["same"]), "--model", bundle)[2]
    assert "flagged listings' score PSI" in err
    print(f"score PSI: undrifted {same['score_psi']}, drift 2 {drifted['score_psi']}; "
          f"flagged: {same['flagged']['score_psi']}, {drifted['flagged']['score_psi']}")


def test_drift_warns_past_the_threshold_exits_0_and_logs(trained: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    code, summary, err = _cli("drift", str(trained["drifted"]), "--threshold", "0.001", "--log")
    assert code == 0 and summary["warning"] and summary["model_version"] == trained["version"]
    assert "knockoff drift: warning:" in err and "score PSI" in err
    run = MlflowClient().get_run(summary["drift_run_id"])
    assert run.data.metrics["score_psi"] == pytest.approx(summary["score_psi"], abs=1e-4)
    assert run.data.tags["model_version"] == trained["version"]
    version = MlflowClient().get_model_version("knockoff", trained["version"].split("/")[1])
    assert version.tags["drift_run"] == summary["drift_run_id"]
    assert version.tags["drift_warning"] == "true"
    assert float(version.tags["drift_flagged_score_psi"]) == pytest.approx(
        summary["flagged"]["score_psi"], abs=1e-4)


def test_drift_refuses_a_bad_threshold_and_a_missing_batch(trained: dict[str, Any],
                                                          tmp_path: Path) -> None:
    code, summary, err = _cli("drift", str(trained["same"]), "--threshold", "0")
    assert code == 2 and "must be above 0" in summary["error"]
    code, summary, err = _cli("drift", str(tmp_path / "nothing.parquet"), "--model",
                              str(trained["bundle"]))
    assert code == 2 and "Traceback" not in err
