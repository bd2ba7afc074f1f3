"""`knockoff demo` end to end on a small catalog: generate -> train -> score, real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from knockoff.cli import main


def test_demo_runs_the_whole_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--listings", "25000",
                 "--batch", "3000"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    scores = pl.read_parquet(tmp_path / "demo" / "scores.parquet")
    assert summary["score"]["scored"] == scores.height == 3000
    assert summary["train"]["model_version"] == "knockoff/1"
    assert summary["score"]["model_version"] == "knockoff/1"
    flagged = scores.filter("flagged")
    assert flagged.height == summary["score"]["flagged"] > 0
    assert "The most suspicious listings and why" in captured.err
    assert "gain over logistic" in captured.err and "95% interval" in captured.err
    top = flagged.sort("score", descending=True).row(0, named=True)
    assert top["listing_id"] in captured.err and top["reasons"][0] in captured.err
