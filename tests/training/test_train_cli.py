"""`knockoff train` tells the truth about its input: rows, rejects and their top reasons in the
summary line and on stderr, and a refusal (exit 2) when too many rows were rejected."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from knockoff.cli import main
from serving import tracking
from synthetic.generate import generate_catalog
from training.config import TrainConfig

FAST = TrainConfig(num_boost_round=40, early_stopping_rounds=10, threads=1, valid_days=30,
                   review_capacity=10)
ROWS, NEGATIVE_PRICE, EMPTY_TITLE = 20_000, 1_000, 300  # 1,300 of 21,300 rows bad: 6.1%


@pytest.fixture(scope="module")
def bad_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated catalog with bad copies of some rows appended (new listing ids)."""
    folder = tmp_path_factory.mktemp("catalog")
    clean = folder / "clean.parquet"
    generate_catalog(clean, ROWS, seed=5, days=120)
    rows = pl.read_parquet(clean)
    bad = rows.head(NEGATIVE_PRICE + EMPTY_TITLE).with_columns(
        pl.format("BAD{}", pl.int_range(pl.len())).alias("listing_id"),
        pl.when(pl.int_range(pl.len()) < NEGATIVE_PRICE).then(-1.0).otherwise(pl.col("price"))
        .alias("price"),
        pl.when(pl.int_range(pl.len()) >= NEGATIVE_PRICE).then(pl.lit("")).otherwise(
            pl.col("title")).alias("title"),
    )
    path = folder / "with_bad_rows.parquet"
    pl.concat([rows, bad]).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "train.toml"
    path.write_text(FAST.to_toml())
    return path


def test_train_refuses_a_catalog_with_too_many_rejected_rows(
    store: Path, bad_catalog: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--catalog", str(bad_catalog), "--config", str(config_file)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "6.1%" in json.loads(out.strip().splitlines()[-1])["error"]
    assert str(bad_catalog) in err and "1300 of 21300 rows (6.1%)" in err
    assert "price must be > 0 (1000); title empty (300)" in err
    assert tracking.champion(FAST.model_name) is None  # nothing was trained or registered


def test_train_reports_rejects_and_trains_under_a_raised_limit(
    store: Path, bad_catalog: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--catalog", str(bad_catalog), "--config", str(config_file),
                 "--max-reject-share", "0.1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"] == ROWS + NEGATIVE_PRICE + EMPTY_TITLE
    assert summary["rows_rejected"] == NEGATIVE_PRICE + EMPTY_TITLE
    assert summary["top_reject_reasons"] == [
        {"reason": "price must be > 0", "rows": NEGATIVE_PRICE},
        {"reason": "title empty", "rows": EMPTY_TITLE},
    ]
    assert summary["promoted"] and "no champion before" in summary["promotion_reason"]
    assert "1300 of 21300 rows rejected (6.1%); top reasons: price must be > 0 (1000)" in err


def test_train_refuses_a_reject_limit_that_is_not_a_share(
    bad_catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--catalog", str(bad_catalog), "--max-reject-share", "5"]) == 2
    err = capsys.readouterr().err
    assert "max_reject_share must be between 0 and 1" in err and "Traceback" not in err
