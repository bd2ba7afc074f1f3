"""`knockoff demo` end to end on a small catalog: generate -> train -> a platform submits the batch
to the real service over HTTP -> flags with reasons; real MLflow store, real SQLite database."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

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
    assert summary["score"]["status"] == "done" and summary["score"]["batch_id"]
    assert "submits the batch to the service at http://127.0.0.1:" in captured.err
    db = sa.create_engine(f"sqlite:///{tmp_path / 'demo' / 'knockoff.db'}")
    with db.connect() as conn:  # the service made one case per flagged listing
        flag_cases = conn.execute(sa.text("select count(*) from cases where kind = 'flag'"))
        assert flag_cases.scalar() == summary["score"]["flagged"]
    assert pl.read_parquet(tmp_path / "demo" / "scores.rejects.parquet").height == 0
    flagged = scores.filter("flagged")
    assert flagged.height == summary["score"]["flagged"] > 0
    assert "The most suspicious listings and why" in captured.err
    assert "gain over logistic" in captured.err and "95% interval" in captured.err
    top = flagged.sort("score", descending=True).row(0, named=True)
    assert top["listing_id"] in captured.err and top["reasons"][0] in captured.err
