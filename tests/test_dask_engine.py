"""The Dask engine against the local one on a 2-worker LocalCluster (127.0.0.1, one thread each):
the same features, scores, flags, reasons and rejects on a catalog written as several files of
several row groups (sellers, rings and duplicate ids split across partitions), the same schema
variant per file as the local engine, and a Dask trained model as good as a locally trained one
on the validation window."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import average_precision_score

from features import shuffle
from features.cluster import WORKER_ENV, feature_table_dask, publishing_folders
from features.contract import CatalogError
from features.distributed import cluster_sizes, forest
from features.network import seller_clusters
from features.table import feature_table
from knockoff.cli import main
from serving.bundle import Bundle
from serving.distributed import score_catalog_dask, score_upload
from serving.scorer import Scorer, score_catalog
from serving.variants import FULL, absent_columns, schema_key
from synthetic.generate import generate_catalog
from tests.serving.variants_world import SPARSE, build_world
from training.config import TrainConfig
from training.dataset import labels, matrix, prepare
from training.distributed import dask_fit_step, early_stopping_rounds
from training.export import write_bundle
from training.train import fit_models

BUNDLE = Path(__file__).resolve().parent / "data" / "golden" / "bundle"
PARTITION_ROWS = 2_000  # under the 2,500-row groups: one partition per row group, 9 in all


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(host="127.0.0.1", processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=":0", env=WORKER_ENV) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 listings shuffled into three files of 2,500-row groups, with bad rows and ids
    repeated in a later file and in a later row group of the same file."""
    folder = tmp_path_factory.mktemp("dask") / "batch"
    folder.mkdir()
    whole = folder.parent / "whole.parquet"
    generate_catalog(whole, 20_000, 3)
    rows = pl.read_parquet(whole).sample(fraction=1.0, shuffle=True, seed=1)
    bad = rows.slice(0, 4).with_columns(
        pl.Series("listing_id", ["X1", "X2", "X3", "X4"]),
        pl.Series("price", [-1.0, 0.0, 5.0, 5.0]), pl.Series("title", ["a", "b", " ", "d"]))
    third = rows.height // 3
    files = [rows.slice(0, third), rows.slice(third, third), rows.slice(2 * third)]
    files[1] = pl.concat([files[1], rows.slice(5, 2)])  # repeats an id of file 0
    files[2] = pl.concat([files[2], bad, files[2].slice(0, 1)])  # repeats one of its own ids
    for i, frame in enumerate(files):
        frame.write_parquet(folder / f"part{i}.parquet", row_group_size=2_500)
    return folder


def _same_scores(tmp_path: Path, min_flagged: int) -> None:
    """The dask parts under tmp_path/dask equal local.parquet (scores within 1e-6, every other
    column exactly, more than `min_flagged` flags), and so do the two engines' rejects."""
    expected = pl.read_parquet(tmp_path / "local.parquet")
    got = pl.read_parquet(tmp_path / "dask" / "*.parquet")
    assert expected["flagged"].sum() > min_flagged
    assert np.abs(got["score"].to_numpy() - expected["score"].to_numpy()).max() <= 1e-6
    assert_frame_equal(got.drop("score"), expected.drop("score"))
    assert_frame_equal(pl.read_parquet(tmp_path / "dask.rejects" / "*.parquet"),
                       pl.read_parquet(tmp_path / "local.rejects.parquet"))


def test_features_equal_the_local_engine(batch: Path, scheduler: str, tmp_path: Path) -> None:
    local = feature_table(batch, tmp_path / "local.parquet", state_dir=tmp_path / "state")
    dask = feature_table_dask(batch, tmp_path / "dask", scheduler=scheduler,
                              state_dir=tmp_path / "state", partition_rows=PARTITION_ROWS)
    assert (dask["features"], dask["rejected"]) == (local["features"], local["rejected"])
    assert dask["rejected"] == 6 and dask["partitions"] == 9
    parts = pl.read_parquet(tmp_path / "dask" / "*.parquet", include_file_paths="part")
    assert_frame_equal(parts.drop("part"), pl.read_parquet(tmp_path / "local.parquet"))
    assert_frame_equal(pl.read_parquet(tmp_path / "dask.rejects" / "*.parquet"),
                       pl.read_parquet(tmp_path / "local.rejects.parquet"))
    # what makes it a test of the shuffle: sellers and rings span partitions
    spread = parts.group_by("seller_id").agg(pl.col("part").n_unique().alias("n"),
                                             pl.col("seller_cluster_size").first())
    assert (spread["n"] > 1).mean() > 0.9
    assert spread.filter(pl.col("seller_cluster_size") > 2).height > 0


def test_scores_equal_the_local_engine(batch: Path, scheduler: str, tmp_path: Path) -> None:
    local = score_catalog(batch, tmp_path / "local.parquet", model=str(BUNDLE), threads=1)
    dask = score_catalog_dask(batch, tmp_path / "dask", model=str(BUNDLE), scheduler=scheduler,
                              partition_rows=PARTITION_ROWS)
    for key in ("scored", "rejected", "flagged", "model_version", "absent_columns",
                "ignored_columns"):
        assert dask[key] == local[key], key
    _same_scores(tmp_path, min_flagged=100)
    # the shuffle went through files, and its scratch folder is gone
    assert dask["shuffle_bytes"] > 10_000
    assert sorted(os.listdir(tmp_path)) == ["dask", "dask.rejects", "local.parquet",
                                            "local.rejects.parquet"]


def test_shuffle_pieces_read_back_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shuffle, "GROUP_ROWS", 3)  # several row groups for one key
    frame = pl.DataFrame({"_piece": [3, 0, 3, 3, 1, 3, 0], "seller_id": list("abcdefg"),
                          "_ratios": [[0.5], [], [1.0, 2.0], [3.0], [4.0], [5.0], [6.0]]})
    first = shuffle.write_pieces(frame, tmp_path / "a.parquet")
    second = shuffle.write_pieces(frame.head(2), tmp_path / "b.parquet")
    assert sorted(first.groups) == [0, 1, 3] and len(first.groups[3]) == 2
    got = shuffle.read_pieces([first, second], 3)
    assert got["seller_id"].to_list() == ["a", "c", "d", "f", "a"]
    assert got["_ratios"].to_list() == [[0.5], [1.0, 2.0], [3.0], [5.0], [0.5]]
    empty = shuffle.read_pieces([first.only(2), second], 2)
    assert empty.height == 0 and empty.schema == frame.drop("_piece").schema


def test_buckets_grow_with_the_batch() -> None:
    """A reducer never gets the partials of more than BUCKET_ROWS input rows."""
    assert shuffle.bucket_count(2, 1_000_000) == 4  # two per worker at least
    for workers, rows in ((2, 10_000_000), (2, 40_000_000), (100, 10_000_000_000)):
        buckets = shuffle.bucket_count(workers, rows)
        assert buckets >= 2 * workers and rows / buckets <= shuffle.BUCKET_ROWS


@pytest.fixture(scope="module")
def two_schemas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a bundle with schema variants, a folder of two files of its later batch): a.parquet
    with every column, b.parquet without description, list_price and the image columns; rows
    dealt at random, so sellers span both files; a bad row and an id of a repeated in b."""
    world = build_world(tmp_path_factory.mktemp("variants"), listings=15_000, batch=6_000)
    folder = world.batch.parent / "two"
    folder.mkdir()
    rows = pl.read_parquet(world.batch).sample(fraction=1.0, shuffle=True, seed=2)
    a, b = rows.head(3_000), rows.tail(3_000).drop("description", "list_price",
                                                  *absent_columns(("images",)))
    bad = b.head(1).with_columns(pl.lit("BAD1").alias("listing_id"), pl.lit(-2.0).alias("price"))
    b = pl.concat([b, bad, a.slice(7, 1).select(b.columns)])
    for name, frame in (("a", a), ("b", b)):
        frame.write_parquet(folder / f"{name}.parquet", row_group_size=1_000)
    return world.served, folder


def test_each_file_is_scored_by_the_local_engines_variant(
        two_schemas: tuple[Path, Path], scheduler: str, tmp_path: Path) -> None:
    bundle, folder = two_schemas
    local = score_catalog(folder, tmp_path / "local.parquet", model=str(bundle), threads=1)
    dask = score_catalog_dask(folder, tmp_path / "dask", model=str(bundle), scheduler=scheduler,
                              partition_rows=800)
    assert dask["partitions"] == 7 and dask["rejected"] == 2
    assert local["schema_by_file"] == {str(folder / "a.parquet"): FULL,
                                       str(folder / "b.parquet"): schema_key(SPARSE)}
    for key in ("scored", "rejected", "flagged", "schema", "schema_by_file",
                "schema_thresholds", "threshold"):
        assert dask[key] == local[key], key
    _same_scores(tmp_path, min_flagged=50)


def test_the_service_sends_batches_above_a_size_to_dask(batch: Path, scheduler: str,
                                                         tmp_path: Path) -> None:
    upload, scorer = batch / "part2.parquet", Scorer.load(str(BUNDLE), threads=1)
    local = score_upload(upload, tmp_path / "a" / "scores.parquet", scorer, 1, 0, scheduler)
    dask = score_upload(upload, tmp_path / "b" / "scores.parquet", scorer, 1, 5_000, scheduler)
    assert dask["engine"] == "dask" and "engine" not in local
    assert dask["rejected"] == local["rejected"] == 4
    for name in ("scores.parquet", "scores.rejects.parquet"):
        assert_frame_equal(pl.read_parquet(tmp_path / "b" / name),
                           pl.read_parquet(tmp_path / "a" / name))
    assert sorted(os.listdir(tmp_path / "b")) == ["scores.parquet", "scores.rejects.parquet"]


def test_command_line_refusals(batch: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(BUNDLE)]
    assert main(["score", str(batch), "--out", str(tmp_path / "s.parquet"), "--scheduler",
                 "tcp://127.0.0.1:1", *model]) == 2
    assert main(["score", str(batch), "--out", str(tmp_path / "s"), "--engine", "dask",
                 "--format", "csv", *model]) == 2
    csv = tmp_path / "batch.csv"
    pl.read_parquet(batch / "part0.parquet").head(10).drop("image_hashes").write_csv(csv)
    assert main(["score", str(csv), "--out", str(tmp_path / "s"), "--engine", "dask",
                 *model]) == 2
    err = capsys.readouterr().err
    assert "need --engine dask" in err and "--format csv" in err and "Parquet files only" in err
    assert not (tmp_path / "s").exists()


def test_an_unfinished_output_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "scores"
    with pytest.raises(CatalogError), publishing_folders(out) as (temp,):
        (temp / "part-00000.parquet").write_bytes(b"half")
        raise CatalogError("stopped")
    assert os.listdir(tmp_path) == []


def test_early_stopping_rule_matches_lightgbm() -> None:
    assert early_stopping_rounds([0.5, 0.4, 0.41, 0.42, 0.39, 0.45], patience=3) == 5
    assert early_stopping_rounds([0.5, 0.4, 0.41, 0.42, 0.43, 0.3], patience=3) == 2


def test_dask_training_matches_local_average_precision(scheduler: str, tmp_path: Path) -> None:
    from distributed import Client

    catalog = tmp_path / "catalog.parquet"
    generate_catalog(catalog, 60_000, 5)
    config = TrainConfig(num_boost_round=80, learning_rate=0.12, threads=1)
    prepared = prepare(catalog, config, None)
    valid = prepared.valid_labelled
    local = fit_models(prepared, config, progress=False).booster
    with Client(scheduler) as client:
        booster = dask_fit_step(client)(prepared, config, False).booster
    write_bundle(tmp_path / "bundle", booster, tuple(booster.feature_name()), 0.5,
                 matrix(valid), write_state=prepared.state.save, config_text=config.to_toml(),
                 spec_extra={"model_name": "knockoff", "git_commit": "test",
                             "train_window": {}, "valid_window": {}}, threads=1)
    bundle = Bundle.load(tmp_path / "bundle", threads=1)
    ap_local = average_precision_score(labels(valid), local.predict(matrix(valid)))
    ap_dask = average_precision_score(labels(valid), bundle.predict(matrix(valid)))
    assert ap_local > 0.9 and abs(ap_dask - ap_local) <= 0.005, (ap_local, ap_dask)


def test_forests_combined_give_the_local_seller_clusters() -> None:
    rng = np.random.default_rng(0)
    edges = pl.DataFrame({
        "seller_id": [f"S{i}" for i in rng.integers(0, 300, 400)],
        "node": [f"n{i}" for i in rng.integers(0, 250, 400)],
    })  # every node's edges in one bucket, as the contact and image reducers leave them
    bucketed = [edges.filter(pl.col("node").hash(seed=0) % 4 == b) for b in range(4)]
    expected = seller_clusters(edges.with_columns(pl.lit("x").alias("kind"))).sort("seller_id")
    assert expected["seller_cluster_size"].max() > 10  # components span buckets
    staged = cluster_sizes(tree_forests(bucketed)).sort("seller_id")
    assert_frame_equal(staged, expected)


def tree_forests(buckets: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Two levels of the tree reduction, as the cluster runs it with fan-in 2."""
    level = [forest([b]) for b in buckets]
    return [forest(level[i:i + 2]) for i in range(0, len(level), 2)]
