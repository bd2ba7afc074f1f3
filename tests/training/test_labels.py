"""Officers' decisions as training labels: `knockoff train --labels PATH [--platform NAME]`
overrides or fills `is_counterfeit` on a small generated catalog, says so in its JSON, and
refuses a labels file it cannot use (exit 2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features.catalog import read_catalog
from features.contract import LABEL, TRUTH
from knockoff.cli import main
from synthetic.generate import generate_catalog
from training.config import TrainConfig
from training.dataset import prepare
from training.labels import apply_labels, read_labels

FAST = TrainConfig(num_boost_round=30, early_stopping_rounds=10, threads=1, valid_days=30,
                   review_capacity=10)
FLIPPED, CONFIRMED, FILLED, UNKNOWN = 40, 15, 60, 7
AT = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.parquet"
    generate_catalog(path, 8_000, seed=3, days=100)
    return path


def _decisions(ids: list[str], verdicts: list[bool], platform: str, at: datetime
               ) -> pl.DataFrame:
    return pl.DataFrame({"listing_id": ids, "platform": [platform] * len(ids),
                         LABEL: verdicts, "decided_at": [at] * len(ids),
                         "model_version": ["knockoff/1"] * len(ids),
                         "kind": ["flag"] * len(ids)},
                        schema_overrides={"decided_at": pl.Datetime("us", "UTC")})


@pytest.fixture(scope="module")
def labels_file(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha's decisions flip some labels, confirm others, fill unlabelled rows and name
    listings the catalog lacks; an older alpha decision and all of beta's say otherwise."""
    rows = pl.read_parquet(catalog)
    labelled = rows.filter(pl.col(LABEL).is_not_null())
    flip = labelled.head(FLIPPED)
    keep = labelled.slice(FLIPPED, CONFIRMED)
    fill = rows.filter(pl.col(LABEL).is_null()).head(FILLED)
    alpha = pl.concat([
        _decisions(flip["listing_id"].to_list(), (~flip[LABEL]).to_list(), "alpha", AT),
        _decisions(keep["listing_id"].to_list(), keep[LABEL].to_list(), "alpha", AT),
        _decisions(fill["listing_id"].to_list(), fill[TRUTH].to_list(), "alpha", AT),
        _decisions([f"NOPE{i}" for i in range(UNKNOWN)], [True] * UNKNOWN, "alpha", AT),
    ])
    older = _decisions(flip["listing_id"].to_list(), flip[LABEL].to_list(), "alpha",
                       AT - timedelta(days=3))
    beta = alpha.with_columns(pl.lit("beta").alias("platform"), ~pl.col(LABEL))
    path = tmp_path_factory.mktemp("labels") / "labels.parquet"
    pl.concat([older, alpha, beta]).sample(fraction=1.0, shuffle=True, seed=1).write_parquet(
        path)
    return path


def test_decisions_override_and_fill_the_catalogs_labels(catalog: Path,
                                                         labels_file: Path) -> None:
    rows = read_catalog(catalog, keep=(TRUTH,)).rows.collect()
    out, joined = apply_labels(rows, read_labels(labels_file, "alpha"))
    assert (joined.joined, joined.overrode, joined.changed, joined.filled, joined.unmatched) == (
        FLIPPED + CONFIRMED + FILLED, FLIPPED + CONFIRMED, FLIPPED, FILLED, UNKNOWN)
    assert out["listing_id"].to_list() == rows["listing_id"].to_list()  # order kept
    changed = out[LABEL].ne_missing(rows[LABEL])
    assert int(changed.sum()) == FLIPPED + FILLED
    assert out[LABEL].null_count() == rows[LABEL].null_count() - FILLED
    filled = rows[LABEL].is_null() & out[LABEL].is_not_null()
    assert (out.filter(filled)[LABEL] == out.filter(filled)[TRUTH]).all()
    beta = apply_labels(rows, read_labels(labels_file, "beta"))[1]
    assert beta.changed == CONFIRMED  # beta's verdicts are the opposite of alpha's latest


def test_prepare_counts_the_joined_labels(catalog: Path, labels_file: Path) -> None:
    plain = prepare(catalog, FAST, None)
    joined = prepare(catalog, FAST, None, decided=read_labels(labels_file, "alpha"))
    assert joined.counts["labels_joined"] == FLIPPED + CONFIRMED + FILLED
    assert joined.counts["labels_filled"] == FILLED and "labels_joined" not in plain.counts
    labelled = plain.counts["train_labelled"] + plain.counts["valid_labelled"]
    assert joined.counts["train_labelled"] + joined.counts["valid_labelled"] > labelled
    assert joined.input.labels is not None and plain.input.labels is None


def test_train_with_labels_reports_the_join(store: Path, catalog: Path, labels_file: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.toml"
    config.write_text(FAST.to_toml())
    assert main(["train", "--catalog", str(catalog), "--config", str(config), "--labels",
                 str(labels_file), "--platform", "alpha"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["labels_joined"] == FLIPPED + CONFIRMED + FILLED
    assert (summary["labels_overrode"], summary["labels_filled"]) == (FLIPPED + CONFIRMED,
                                                                      FILLED)
    assert summary["labels_platform"] == "alpha" and summary["model_version"]
    assert f"{FILLED} filled a missing label" in err


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["train", *args]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return str(json.loads(out.strip().splitlines()[-1])["error"])


def test_unusable_labels_are_refused_before_training(
        store: Path, catalog: Path, labels_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--catalog", str(catalog))
    assert "--platform is required" in _fails(capsys, *base, "--labels", str(labels_file))
    assert "no decisions for platform 'gamma'" in _fails(
        capsys, *base, "--labels", str(labels_file), "--platform", "gamma")
    assert "give --labels too" in _fails(capsys, *base, "--platform", "alpha")
    thin = tmp_path / "thin.parquet"
    pl.read_parquet(labels_file).drop("decided_at").write_parquet(thin)
    assert "missing column(s) decided_at" in _fails(capsys, *base, "--labels", str(thin))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert f"{broken}: not a readable Parquet" in _fails(capsys, *base, "--labels", str(broken))
    assert "no such labels file" in _fails(capsys, *base, "--labels", str(tmp_path / "x.pq"))
    single = tmp_path / "alpha.parquet"
    pl.read_parquet(labels_file).filter(pl.col("platform") == "alpha").write_parquet(single)
    assert read_labels(single).platform == "alpha"  # one platform: --platform may be left out
