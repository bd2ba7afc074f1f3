"""The variants step: schema variants configured, trained on rows without their inputs, and
exported (threshold on their own validation rows, parity-checked) inside the main bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.catalog import read_catalog
from features.contract import LABEL
from features.pipeline import build_features
from features.registry import OPTIONAL_GROUPS
from serving.bundle import DIGESTS, FEATURE_SPEC, Bundle, BundleError
from serving.variants import VARIANTS_DIR, absent_columns, schema_key
from tests.serving.variants_world import CONFIG, NO_CONTACT, SPARSE, World, build_world
from training.config import OPTIONAL_GROUP_NAMES, TrainConfig
from training.dataset import KEEP, labels, matrix
from training.evaluate import choose_threshold
from training.split import split
from training.variants import variant_features


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("variants"), listings=20_000, batch=2_000)


def test_schema_variants_round_trip_through_toml_and_are_checked(tmp_path: Path) -> None:
    config = TrainConfig(schema_variants=(("description",), ("images", "list_price")))
    path = tmp_path / "train.toml"
    path.write_text(config.to_toml())
    assert TrainConfig.from_toml(path) == config
    assert TrainConfig().schema_variants[-1] == OPTIONAL_GROUP_NAMES  # required-only
    for bad, message in (((("photos",),), "must name optional input groups"),
                         (((),), "must name optional input groups"),
                         ((("images",), ("images",)), "listed twice")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(schema_variants=bad)


def test_variant_features_are_those_of_a_catalog_without_its_columns(
        world: World, tmp_path: Path) -> None:
    """Features needing the absent groups are null; batch aggregates (seller clusters) are
    computed as from a catalog that never had those columns."""
    rows = read_catalog(world.catalog, currency=CONFIG.currency).rows
    train_rows, valid_rows = split(rows, world.prepared.windows)
    train, valid = variant_features(train_rows, valid_rows, world.prepared.state, SPARSE, CONFIG)
    hidden = [name for group in SPARSE for name in OPTIONAL_GROUPS[group]]
    for frame in (train, valid):
        assert frame.select(pl.col(hidden).is_null().all()).row(0) == (True,) * len(hidden)
    assert train[LABEL].null_count() == 0 and train.height == world.prepared.train.height
    assert valid.height == world.prepared.valid.height  # every row: the drift reference's
    sparse = tmp_path / "sparse.parquet"
    pl.read_parquet(world.catalog).drop(absent_columns(SPARSE)).write_parquet(sparse)
    _, sparse_valid = split(read_catalog(sparse, currency=CONFIG.currency).rows,
                            world.prepared.windows)
    expected = build_features(sparse_valid, world.prepared.state, keep=KEEP).collect()
    assert_frame_equal(valid, expected)
    full_clusters = world.prepared.valid["seller_cluster_size"]
    assert not valid["seller_cluster_size"].equals(full_clusters)  # contact links are gone


def test_each_variant_is_exported_with_its_own_threshold_and_parity(world: World) -> None:
    assert {v.key for v in world.variants} == {schema_key(SPARSE), schema_key(NO_CONTACT),
                                               schema_key(OPTIONAL_GROUP_NAMES)}
    for model in world.variants:
        folder = world.served / VARIANTS_DIR / model.key
        bundle = Bundle.load(folder)
        assert bundle.spec["schema"] == {"key": model.key, "absent_groups": list(model.absent),
                                         "absent_columns": list(absent_columns(model.absent))}
        assert bundle.spec["parity"]["ok"] and bundle.spec["parity"]["rows"] == len(
            model.valid_X)
        # the threshold is chosen on the variant's own validation scores
        scores = model.booster.predict(model.valid_X)
        _, valid = variant_features(*split(read_catalog(world.catalog, currency=CONFIG.currency)
                                           .rows, world.prepared.windows),
                                    world.prepared.state, model.absent, CONFIG)
        labelled = valid.filter(pl.col(LABEL).is_not_null())
        np.testing.assert_array_equal(matrix(labelled), model.valid_X)
        own = choose_threshold(labels(labelled), scores, CONFIG.target_precision)
        assert bundle.threshold == own.threshold == model.threshold.threshold
        # its own drift reference: its scores on every validation row, flagged at its threshold
        reference = bundle.reference
        assert reference is not None
        everyone = reference.filter(population="all", name="score").row(0, named=True)
        flagged = reference.filter(population="flagged", name="score").row(0, named=True)
        assert everyone["rows"] == valid.height
        assert flagged["rows"] == int((model.booster.predict(matrix(valid))
                                       >= bundle.threshold).sum())
    thresholds = {Bundle.load(world.served).threshold, *(v.threshold.threshold
                                                         for v in world.variants)}
    assert len(thresholds) == 4


def test_variant_files_are_sealed_by_the_main_bundle(world: World, tmp_path: Path) -> None:
    digests = json.loads((world.served / DIGESTS).read_text())["sha256"]
    key = schema_key(SPARSE)
    assert f"{VARIANTS_DIR}/{key}/model.onnx" in digests
    copy = Path(shutil.copytree(world.served, tmp_path / "bundle"))
    spec = copy / VARIANTS_DIR / key / FEATURE_SPEC
    spec.write_text(spec.read_text().replace('"threshold"', '"threshold" ', 1))
    with pytest.raises(BundleError, match="content differs"):
        Bundle.load(copy)
    assert not (world.champion / VARIANTS_DIR).exists()  # no variants: the bundle as before
