"""Schema-aware scoring: the scorer picks the bundle's variant that fits each file's columns,
checks variants at load like the main model, and leaves full-schema scores unchanged."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import average_precision_score

from features.catalog import read_catalog
from features.contract import TRUTH
from serving.bundle import FEATURE_SPEC, PARITY_SAMPLE, seal
from serving.drift import BatchDrift, catalog_drift
from serving.scorer import ModelLoadError, Scorer, score_catalog
from serving.variants import (
    FULL,
    GROUPS,
    REQUIRED_ONLY,
    VARIANTS_DIR,
    Variant,
    Variants,
    absent_columns,
    absent_groups,
    schema_key,
)
from tests.serving.variants_world import NO_CONTACT, SPARSE, World, build_world

SPARSE_KEY = schema_key(SPARSE)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("variants"))


@pytest.fixture(scope="module")
def served(world: World) -> Scorer:
    return Scorer.load(str(world.served))


def _without(source: Path, out: Path, groups: tuple[str, ...]) -> Path:
    pl.read_parquet(source).drop(absent_columns(groups)).write_parquet(out)
    return out


def _score(scorer: Scorer, source: Path, out: Path) -> tuple[dict[str, object], pl.DataFrame]:
    summary = score_catalog(source, out, scorer=scorer)
    return summary, pl.read_parquet(out)


# --------------------------------------------------------------------------- schemas, picking


def test_schema_keys_name_the_absent_groups_in_declared_order() -> None:
    assert schema_key(()) == FULL
    assert schema_key(GROUPS) == REQUIRED_ONLY
    assert schema_key(("list_price", "description")) == "no_description+list_price"
    assert absent_groups(["image_hashes"]) == {"images"}  # one column of a group is enough
    assert absent_columns(("images",)) == ("image_count", "image_hashes")


def _fake(absent: tuple[str, ...]) -> Variant:
    return Variant(frozenset(absent), None, None)  # type: ignore[arg-type]


def test_pick_takes_the_largest_schema_the_batch_can_feed() -> None:
    variants = Variants((_fake(()), _fake(SPARSE), _fake(NO_CONTACT), _fake(GROUPS)))
    assert variants.pick(frozenset()).key == FULL
    assert variants.pick(frozenset(NO_CONTACT)).key == schema_key(NO_CONTACT)
    assert variants.pick(frozenset({"images", "description"})).key == SPARSE_KEY
    assert variants.pick(frozenset({"ships_from"})).key == REQUIRED_ONLY
    assert Variants((_fake(()), _fake(SPARSE))).pick(frozenset({"ships_from"})).key == FULL


# --------------------------------------------------------------------------- scoring


def test_a_file_missing_groups_is_scored_by_its_variant(world: World, served: Scorer,
                                                        tmp_path: Path) -> None:
    sparse = _without(world.batch, tmp_path / "sparse.parquet", SPARSE)
    summary, scores = _score(served, sparse, tmp_path / "scores.parquet")
    variant = served.variants.get(SPARSE_KEY)  # type: ignore[union-attr]
    assert summary["schema"] == SPARSE_KEY
    assert summary["threshold"] == variant.bundle.threshold != served.threshold
    assert summary["model_version"] == served.model_version
    assert (scores["flagged"] == (scores["score"] >= variant.bundle.threshold)).all()
    # a column sent but null on every row is absent too
    blank = tmp_path / "blank.parquet"
    pl.read_parquet(sparse).with_columns(pl.lit(None, pl.String).alias("description")) \
        .write_parquet(blank)
    summary_blank, scores_blank = _score(served, blank, tmp_path / "blank_scores.parquet")
    assert summary_blank["schema"] == SPARSE_KEY
    assert_frame_equal(scores_blank, scores)
    # the in-memory API picks the same variant and gives the same scores
    rows = read_catalog(sparse, currency=served.state.currency).rows
    in_memory = served.score(rows).drop("reason_features")
    assert_frame_equal(in_memory, scores, check_dtypes=False)


def test_drift_of_a_sparse_file_is_measured_against_its_variant(
        world: World, served: Scorer, tmp_path: Path) -> None:
    """A file scored by a schema variant is compared with that variant's own reference
    (exported with it: its scores on every validation row, flagged at its threshold), the same
    while scoring (the observer) as by `knockoff drift`."""
    sparse = _without(world.batch, tmp_path / "sparse.parquet", SPARSE)
    variant = served.variants.get(SPARSE_KEY)  # type: ignore[union-attr]
    assert variant.bundle.reference is not None
    monitor = BatchDrift()
    summary = score_catalog(sparse, tmp_path / "scores.parquet",
                            scorer=dataclasses.replace(served, observer=monitor.add))
    assert set(monitor.counters) == {variant.bundle.path}  # the main model scored nothing
    counted, whole = monitor.report(), catalog_drift(sparse, served)
    assert counted is not None and counted.schema == whole.schema == SPARSE_KEY
    assert counted.score_psi == pytest.approx(whole.score_psi, abs=1e-9)
    assert counted.flagged is not None and whole.flagged is not None
    assert counted.flagged.rows == whole.flagged.rows == summary["flagged"]
    flagged_rows = variant.bundle.reference.filter(population="flagged", name="score")["rows"]
    assert whole.flagged.reference_rows == flagged_rows.item()
    assert "scored by schema variant" in whole.describe()
    full = catalog_drift(world.batch, served)  # every column: the main model and its reference
    assert full.schema == FULL and full.flagged is not None
    assert full.flagged.reference_rows != whole.flagged.reference_rows


def test_after_sale_columns_are_absent_only_when_the_file_lacks_them(
        world: World, served: Scorer, tmp_path: Path) -> None:
    """A batch of listings younger than 30 days has no sales history on any row: the main
    model is trained for that; a file without the columns gets the required-only variant."""
    after_sale = list(absent_columns(("after_sale",)))
    frame = pl.read_parquet(world.batch)
    new = tmp_path / "new.parquet"
    frame.with_columns(pl.lit(None, pl.Int64).alias(c) for c in after_sale).write_parquet(new)
    summary, _ = _score(served, new, tmp_path / "new_scores.parquet")
    assert summary["schema"] == FULL
    rows = read_catalog(new, currency=served.state.currency).rows
    assert_frame_equal(served.score(rows), served.with_variant(FULL).score(rows))
    lacking = tmp_path / "lacking.parquet"
    frame.drop(after_sale).write_parquet(lacking)
    summary, _ = _score(served, lacking, tmp_path / "lacking_scores.parquet")
    assert summary["schema"] == REQUIRED_ONLY


def test_full_schema_scores_are_those_of_the_bundle_without_variants(
        world: World, served: Scorer, tmp_path: Path) -> None:
    summary, with_variants = _score(served, world.batch, tmp_path / "a.parquet")
    _, without = _score(Scorer.load(str(world.champion)), world.batch, tmp_path / "b.parquet")
    assert summary["schema"] == FULL
    assert_frame_equal(with_variants, without)


def _split_by_seller(batch: Path, folder: Path, sparse_b: bool) -> tuple[Path, pl.DataFrame]:
    """Two files of one batch, sellers in one or the other; file b without SPARSE's columns,
    file a too unless `sparse_b`."""
    frame = pl.read_parquet(batch)
    in_b = pl.col("seller_id").hash(seed=1) % 2 == 0
    folder.mkdir()
    b = frame.filter(in_b).drop(absent_columns(SPARSE))
    a = frame.filter(~in_b)
    (a if sparse_b else a.drop(absent_columns(SPARSE))).write_parquet(folder / "a.parquet")
    b.write_parquet(folder / "b.parquet")
    return folder, pl.concat([a.select("listing_id"), b.select("listing_id")])


def test_a_folder_of_two_schemas_scores_each_file_with_its_variant(
        world: World, served: Scorer, tmp_path: Path) -> None:
    mixed, order = _split_by_seller(world.batch, tmp_path / "mixed", sparse_b=True)
    summary, scores = _score(served, mixed, tmp_path / "mixed.parquet")
    assert summary["schema"] == "mixed"
    assert summary["schema_by_file"] == {str(mixed / "a.parquet"): FULL,
                                         str(mixed / "b.parquet"): SPARSE_KEY}
    assert scores["listing_id"].to_list() == order["listing_id"].to_list()  # input order
    threshold = {FULL: served.threshold,
                 SPARSE_KEY: served.variants.get(SPARSE_KEY).bundle.threshold}  # type: ignore[union-attr]
    assert summary["schema_thresholds"] == threshold
    b_ids = pl.read_parquet(mixed / "b.parquet", columns=["listing_id"])["listing_id"]
    is_b = scores["listing_id"].is_in(b_ids.implode())
    expected = pl.when(is_b).then(threshold[SPARSE_KEY]).otherwise(threshold[FULL])
    assert scores.select((pl.col("flagged") == (pl.col("score") >= expected)).all()).item()
    # file b's rows score as when the whole folder is sparse (its sellers are its own)
    uniform, _ = _split_by_seller(world.batch, tmp_path / "uniform", sparse_b=False)
    summary_u, scores_u = _score(served, uniform, tmp_path / "uniform.parquet")
    assert summary_u["schema"] == SPARSE_KEY
    assert_frame_equal(scores.filter(is_b), scores_u.filter(is_b))
    assert not scores.filter(~is_b).equals(scores_u.filter(~is_b))


def test_the_served_model_beats_the_champion_on_a_sparse_batch(
        world: World, served: Scorer, tmp_path: Path) -> None:
    sparse = _without(world.batch, tmp_path / "sparse.parquet", SPARSE)
    truth = pl.read_parquet(world.batch, columns=["listing_id", TRUTH])
    ap = {}
    for name, scorer in (("served", served), ("champion", Scorer.load(str(world.champion)))):
        _, scores = _score(scorer, sparse, tmp_path / f"{name}.parquet")
        joined = scores.join(truth, on="listing_id")
        assert joined.height == scores.height
        ap[name] = average_precision_score(joined[TRUTH].to_numpy(), joined["score"].to_numpy())
    assert ap["served"] >= ap["champion"], ap


# --------------------------------------------------------------------------- checks at load


def _copy(bundle: Path, to: Path) -> Path:
    return Path(shutil.copytree(bundle, to))


def test_a_variant_threshold_and_parity_are_checked_at_load(world: World,
                                                             tmp_path: Path) -> None:
    bad_threshold = _copy(world.served, tmp_path / "t")
    variant = bad_threshold / VARIANTS_DIR / SPARSE_KEY
    spec = json.loads((variant / FEATURE_SPEC).read_text())
    (variant / FEATURE_SPEC).write_text(json.dumps({**spec, "threshold": 1.5}))
    with pytest.raises(ModelLoadError, match="content differs"):  # the main digests see it
        Scorer.load(str(bad_threshold))
    seal(variant)
    seal(bad_threshold)
    with pytest.raises(ModelLoadError, match=re.escape(SPARSE_KEY) + ".*threshold"):
        Scorer.load(str(bad_threshold))

    bad_parity = _copy(world.served, tmp_path / "p")
    variant = bad_parity / VARIANTS_DIR / SPARSE_KEY
    with np.load(variant / PARITY_SAMPLE) as sample:
        X, score = sample["X"], sample["score"]
    np.savez(variant / PARITY_SAMPLE, X=X, score=np.clip(score + 0.01, 0, 1))
    seal(variant)
    seal(bad_parity)
    with pytest.raises(ModelLoadError, match=re.escape(SPARSE_KEY) + ".*does not reproduce"):
        Scorer.load(str(bad_parity))


def test_a_variant_whose_schema_does_not_match_its_folder_is_refused(
        world: World, tmp_path: Path) -> None:
    bundle = _copy(world.served, tmp_path / "s")
    variant = bundle / VARIANTS_DIR / SPARSE_KEY
    spec = json.loads((variant / FEATURE_SPEC).read_text())
    spec["schema"]["absent_groups"] = ["images"]
    (variant / FEATURE_SPEC).write_text(json.dumps(spec))
    seal(variant)
    seal(bundle)
    with pytest.raises(ModelLoadError, match="does not match the folder"):
        Scorer.load(str(bundle))
