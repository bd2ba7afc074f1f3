"""The ONNX batch scorer on a small generated catalog, with a model trained in a temp store."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.aggregates import batch_aggregates
from features.catalog import read_catalog
from features.contract import REJECTS_SCHEMA
from features.outputs import rejects_path
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS
from knockoff.cli import main
from serving.bundle import seal
from serving.reasons import TEMPLATES, phrase, top_reasons
from serving.scorer import ModelLoadError, Scorer, score_catalog
from synthetic.generate import generate_catalog
from training.config import TrainConfig
from training.train import TrainResult, matrix, train

FAST = TrainConfig(num_boost_round=60, early_stopping_rounds=20, threads=1, valid_days=40)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.parquet"
    generate_catalog(path, 30_000, seed=5, days=150)
    return path


@pytest.fixture(scope="module")
def model(store: Path, catalog: Path) -> TrainResult:
    return train(catalog, FAST, progress=False)


@pytest.fixture(scope="module")
def scorer(model: TrainResult) -> Scorer:
    return Scorer.load(model.bundle, threads=1)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A later catalog from another seed: what a platform would submit."""
    path = tmp_path_factory.mktemp("batch") / "batch.parquet"
    generate_catalog(path, 8_000, seed=99, days=60)
    return path


def test_scores_match_the_bundles_lightgbm(scorer: Scorer, batch: Path) -> None:
    rows = read_catalog(batch).rows
    scored = scorer.score(rows)
    features = build_features(rows, scorer.state).collect()
    lgb = scorer.bundle.booster.predict(matrix(features), num_threads=1)
    assert scored["listing_id"].to_list() == features["listing_id"].to_list()
    assert np.abs(scored["score"].to_numpy() - lgb).max() < 1e-4
    assert scored["flagged"].to_list() == (scored["score"] >= scorer.threshold).to_list()
    assert 0 < scored["flagged"].sum() < scored.height
    assert scored["model_version"].unique().to_list() == [scorer.model_version]


def test_chunked_file_scoring_equals_scoring_whole(scorer: Scorer, batch: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    summary = score_catalog(batch, out, scorer=scorer, chunk_rows=1_500)
    chunked = pl.read_parquet(out)
    rows = read_catalog(batch).rows
    whole = scorer.score(rows).drop("reason_features")
    assert summary["scored"] == whole.height == chunked.height
    assert_frame_equal(chunked, whole)  # same rows, same order
    # and the streaming query really ran in several batches
    sizes: list[int] = []
    with pl.Config(streaming_chunk_size=1_000):
        scorer.scored(rows, batch_aggregates(rows, scorer.state),
                      on_batch=lambda b: sizes.append(b.height)).collect(engine="streaming")
    assert len(sizes) > 1 and sum(sizes) == whole.height
    # a clean batch still gets its (empty) rejects file, without a second read
    assert summary["rejected"] == 0
    assert pl.read_parquet(rejects_path(out)).schema == pl.Schema(REJECTS_SCHEMA)
    # the job reports where its time went; scoring's own steps fit inside the streaming query
    seconds = summary["seconds"]
    covered = sum(seconds[step] for step in ("inference", "reasons", "assembly"))
    assert 0 < covered <= seconds["scoring"] + 0.05


def test_every_row_is_scored_or_rejected(scorer: Scorer, batch: Path, tmp_path: Path) -> None:
    frame = pl.read_parquet(batch).head(2_000)
    bad = frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 50 == 1).then(-1.0).otherwise(pl.col("price"))
        .alias("price"),
        pl.when(pl.int_range(pl.len()) % 70 == 2).then(pl.lit("")).otherwise(pl.col("title"))
        .alias("title"),
    )
    bad = pl.concat([bad, bad.head(5)])  # five duplicate listing ids
    path = tmp_path / "bad.csv"
    bad.with_columns(pl.col("image_hashes").list.join("|")).write_csv(path)
    out = tmp_path / "scores.csv"
    summary = score_catalog(path, out, scorer=scorer)
    scores, rejects = pl.read_csv(out), pl.read_csv(rejects_path(out))
    assert scores.height + rejects.height == bad.height == summary["rows"]
    # 40 negative prices + 29 empty titles (no row both) + the 5 appended duplicates
    assert summary["rejected"] == rejects.height == 40 + 29 + 5
    assert set(scores["listing_id"]).isdisjoint(
        rejects.filter(~pl.col("reason").str.starts_with("duplicate"))["listing_id"])
    assert rejects.filter(pl.col("reason").str.contains("duplicate")).height == 5


def test_unknown_brands_and_missing_optional_columns_still_score(
    scorer: Scorer, batch: Path, tmp_path: Path
) -> None:
    frame = pl.read_parquet(batch).head(500).select(
        "listing_id", "seller_id", "title", "category", "price", "currency", "listed_at"
    ).with_columns(
        pl.lit("Brand-new-to-us Ltd").alias("brand"), pl.lit("Space > Rockets").alias("category")
    )
    path = tmp_path / "minimal.jsonl"
    frame.with_columns(pl.col("listed_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_ndjson(path)
    summary = score_catalog(path, tmp_path / "s.parquet", scorer=scorer)
    scores = pl.read_parquet(tmp_path / "s.parquet")
    assert summary["scored"] == 500 and summary["rejected"] == 0
    assert scores["score"].is_between(0, 1).all() and scores["score"].null_count() == 0


def test_bundle_whose_spec_does_not_match_its_onnx_is_refused(
    model: TrainResult, tmp_path: Path, batch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(model.bundle, broken)
    spec = json.loads((broken / "feature_spec.json").read_text())
    spec["features"] = spec["features"][:-1]
    (broken / "feature_spec.json").write_text(json.dumps(spec))
    seal(broken)  # digests recomputed: the spec/ONNX check still refuses it
    with pytest.raises(ModelLoadError, match="input features"):
        Scorer.load(broken)
    code = main(["score", str(batch), "--out", str(tmp_path / "s.parquet"),
                 "--model", str(broken)])
    err = capsys.readouterr().err
    assert code == 2 and "feature_spec.json" in err and "Traceback" not in err


def test_reasons_for_every_flagged_row_name_real_features(scorer: Scorer, batch: Path) -> None:
    scored = scorer.score(read_catalog(batch).rows)
    features = build_features(read_catalog(batch).rows, scorer.state).collect()
    flagged = scored.filter("flagged")
    assert flagged.height > 0
    assert flagged["reasons"].list.len().is_between(1, 3).all()
    assert scored.filter(~pl.col("flagged"))["reasons"].list.len().max() == 0
    values = features.filter(scored["flagged"])
    for i, (words, names) in enumerate(zip(flagged["reasons"], flagged["reason_features"],
                                           strict=True)):
        assert set(names.to_list()) <= set(FEATURE_COLUMNS)
        expected = [phrase(n, values[n][i]) for n in names.to_list()]
        assert words.to_list() == expected


def test_reasons_are_the_strongest_positive_contributions() -> None:
    contrib = np.zeros((2, len(FEATURE_COLUMNS) + 1))
    i_price, i_copy = FEATURE_COLUMNS.index("price_brand_ratio"), FEATURE_COLUMNS.index(
        "title_copy_words")
    contrib[0, i_price], contrib[0, i_copy], contrib[0, -1] = 2.0, 0.5, 9.0  # bias ignored
    contrib[1, :-1] = -1.0  # nothing pushes row 2 up: no reasons
    X = np.full((2, len(FEATURE_COLUMNS)), np.nan, dtype=np.float32)
    X[0, i_price], X[0, i_copy] = 0.29, 2
    words, names = top_reasons(contrib, X)
    assert names == [["price_brand_ratio", "title_copy_words"], []]
    assert words[0][0] == "price 71% below this brand's usual price"
    assert words[0][1].endswith("2 copy words")


def test_every_feature_can_be_put_into_words() -> None:
    assert set(TEMPLATES) == set(FEATURE_COLUMNS)
    for name in FEATURE_COLUMNS:
        for value in (0.0, 0.5, 1.0, 3.0, math.nan):
            assert phrase(name, value)


def test_cli_scores_with_the_registered_champion(model: TrainResult, batch: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.parquet"
    assert main(["score", str(batch), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model_version"] == model.model_version
    assert summary["scored"] + summary["rejected"] == 8_000
    assert summary["flagged"] == pl.read_parquet(out)["flagged"].sum()
    assert pl.read_parquet(out).columns == ["listing_id", "seller_id", "score", "flagged",
                                            "reasons", "model_version"]


def test_path_contributions_sum_to_the_raw_score_and_agree_with_treeshap(
    scorer: Scorer, batch: Path
) -> None:
    features = build_features(read_catalog(batch).rows, scorer.state).collect()
    X = matrix(features)
    contrib = scorer.explain(X, threads=1)
    raw = scorer.bundle.booster.predict(X, raw_score=True, num_threads=1)
    assert np.abs(contrib.sum(axis=1) - raw).max() < 1e-9
    flagged = scorer.bundle.predict(X) >= scorer.threshold
    shap = scorer.bundle.contributions(X[flagged])
    top_path = contrib[flagged, :-1].argmax(axis=1)
    top_shap = shap[:, :-1].argmax(axis=1)
    assert (top_path == top_shap).mean() > 0.6  # the strongest reason mostly the same feature
