"""Scores of one bundle on one catalog do not change when the code around them does."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from serving.scorer import score_catalog
from synthetic.generate import generate_catalog

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def test_scores_identical_to_the_code_before_the_restructure(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.parquet"
    generate_catalog(catalog, 20_000, 11)
    summary = score_catalog(catalog, tmp_path / "scores.parquet", model=str(GOLDEN / "bundle"),
                            threads=1)
    expected = pl.read_parquet(GOLDEN / "scores.parquet")
    assert summary["scored"] == expected.height == 20_000
    assert summary["flagged"] == expected["flagged"].sum() > 0
    assert_frame_equal(pl.read_parquet(tmp_path / "scores.parquet"), expected, check_exact=True)
