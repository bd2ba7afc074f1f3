"""Training end to end on a small generated catalog, with a real MLflow store in a temp folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.catalog import read_catalog
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS, MONOTONE, OPTIONAL_GROUPS
from features.state import FeatureState
from serving import tracking
from serving.bundle import Bundle
from synthetic.generate import generate_catalog
from training.config import TrainConfig
from training.dataset import TrainError, hide_optional, matrix
from training.report import TrainResult
from training.split import SplitError, split, time_windows
from training.train import train

# ~30 labelled rows a day: a daily capacity of 10 keeps precision@k measurable
FAST = TrainConfig(num_boost_round=60, early_stopping_rounds=20, threads=1, valid_days=40,
                   review_capacity=10)
WEAK = FAST.replace(num_boost_round=1, num_leaves=2, learning_rate=0.01)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.parquet"
    generate_catalog(path, 40_000, seed=11, days=150)
    return path


@pytest.fixture(scope="module")
def runs(store: Path, catalog: Path) -> list[TrainResult]:
    """Weak model first (loses to the logistic baseline: not promoted, though there is no
    champion), then a real one (beats logistic: first champion), then weak again (beats
    neither)."""
    return [train(catalog, config, progress=False) for config in (WEAK, FAST, WEAK)]


# --- the split --------------------------------------------------------------------------------

def test_split_has_no_time_overlap_and_respects_the_gap() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame({"listed_at": [t0 + timedelta(hours=6 * i) for i in range(4 * 100)]})
    windows = time_windows(t0, frame["listed_at"].max(), valid_from=None, valid_days=20,
                           delay_days=14)
    train_lf, valid_lf = split(frame.lazy(), windows)
    tr, va = train_lf.collect()["listed_at"], valid_lf.collect()["listed_at"]
    assert tr.max() < windows.train_end <= windows.valid_start <= va.min()
    assert va.min() - tr.max() >= timedelta(days=14)
    assert windows.valid_start - windows.train_end == timedelta(days=14)
    gap = frame.filter(pl.col("listed_at").is_between(windows.train_end, windows.valid_start,
                                                      closed="left"))
    assert tr.len() + va.len() + gap.height == frame.height and gap.height > 0


def test_split_refuses_a_catalog_too_short() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(SplitError, match="no training window"):
        time_windows(t0, t0 + timedelta(days=20), valid_from=None, valid_days=10, delay_days=14)
    with pytest.raises(SplitError, match="no validation window"):
        time_windows(t0, t0 + timedelta(days=90), valid_from=t0 + timedelta(days=100),
                     valid_days=10, delay_days=14)


# --- the config -------------------------------------------------------------------------------

def test_config_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(FAST.to_toml())
    assert TrainConfig.from_toml(path) == FAST


def test_config_rejects_typos_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text("[train]\nnum_leafs = 10\n")
    with pytest.raises(ValueError, match="unknown config key.*num_leafs"):
        TrainConfig.from_toml(path)
    path.write_text("[train]\ntarget_precision = 1.5\n")
    with pytest.raises(ValueError, match="target_precision"):
        TrainConfig.from_toml(path)


def test_train_refuses_a_catalog_without_labels(tmp_path: Path, store: Path,
                                                catalog: Path) -> None:
    unlabelled = tmp_path / "unlabelled.parquet"
    pl.read_parquet(catalog).with_columns(pl.lit(None, pl.Boolean).alias("is_counterfeit")) \
        .write_parquet(unlabelled)
    with pytest.raises(TrainError, match="labelled"):
        train(unlabelled, FAST, progress=False)


# --- runs, registry, champion -----------------------------------------------------------------

def test_model_beats_both_baselines(runs: list[TrainResult]) -> None:
    real = runs[1]
    for baseline in ("rules", "logistic"):
        assert real.metrics["average_precision"] > real.baselines[baseline]["average_precision"]
    assert 0.0 < real.threshold < 1.0


def test_champion_moves_only_on_improvement(runs: list[TrainResult]) -> None:
    weak, real, weak_again = runs
    # the contract's rule: a first model is promoted only if it beats the logistic baseline
    assert weak.metrics["average_precision"] < weak.baselines["logistic"]["average_precision"]
    assert not weak.promoted and weak.champion_before is None
    assert "does not beat the logistic baseline" in weak.promotion_reason
    assert "still no champion" in weak.promotion_reason
    assert real.promoted and real.champion_before is None
    assert "no champion before" in real.promotion_reason
    assert not weak_again.promoted and weak_again.champion_before == real.model_version
    assert weak_again.champion_before_metric == pytest.approx(real.metrics["average_precision"])
    assert tracking.champion("knockoff").label == real.model_version


def test_run_is_in_the_mlflow_store(runs: list[TrainResult]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(runs[1].run_id)
    assert run.data.params["num_leaves"] == str(FAST.num_leaves)
    assert run.data.params["review_capacity"] == "10"
    for key in ("average_precision", "precision_at_k", "seller_precision_at_k", "recall_at_p90",
                "brier", "roc_auc", "rules_average_precision", "logistic_average_precision",
                "threshold"):
        assert key in run.data.metrics
    assert run.data.metrics["average_precision"] == pytest.approx(
        runs[1].metrics["average_precision"])
    for tag in ("git_commit", "catalog_fingerprint", "train_labelled", "window_valid_start"):
        assert run.data.tags[tag]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pr_curve.png", "calibration.png", "feature_importance.png", "shap_summary.png",
            "per_category.csv", "model_card.md", "train.toml", "bundle"} <= artifacts
    card = Path(client.download_artifacts(run.info.run_id, "model_card.md")).read_text()
    assert "| average_precision |" in card and "rules" in card and "logistic" in card
    assert "LightGBM minus logistic, average precision" in card
    assert "precision_at_k_ceiling" in card
    gain = run.data.metrics["ap_gain_vs_rules"]
    assert run.data.metrics["ap_gain_vs_rules_low"] <= gain <= run.data.metrics[
        "ap_gain_vs_rules_high"]
    versions = client.search_model_versions("name='knockoff'")
    assert {str(v.version) for v in versions} >= {"1", "2", "3"}


def test_bundle_loads_from_a_folder_and_matches_lightgbm(runs: list[TrainResult],
                                                         catalog: Path) -> None:
    bundle = Bundle.load(runs[1].bundle, threads=1)
    assert bundle.features == FEATURE_COLUMNS
    assert bundle.spec["model_version"] == runs[1].model_version
    state = FeatureState.load(bundle.state_dir)
    rows = read_catalog(catalog).rows.head(3000)
    X = matrix(build_features(rows, state).collect())
    lgb_score = bundle.booster.predict(X, num_threads=1)
    assert np.abs(bundle.predict(X) - lgb_score).max() < 1e-5


def test_download_bundle_by_registry_reference(runs: list[TrainResult]) -> None:
    folder, ref = tracking.download_bundle("models:/knockoff@champion")
    assert ref is not None and ref.label == runs[1].model_version
    assert Bundle.load(folder, threads=1).spec["run_id"] == runs[1].run_id
    with pytest.raises(tracking.RegistryError, match="no such registered model"):
        tracking.download_bundle("models:/knockoff@nobody")


# --- behaviour --------------------------------------------------------------------------------

def _scores(bundle: Bundle, rows: pl.LazyFrame, state: FeatureState) -> pl.DataFrame:
    frame = build_features(rows, state).collect()
    return frame.select("listing_id", pl.Series("score", bundle.predict(matrix(frame))))


def test_lowering_a_fakes_price_does_not_lower_its_score(runs: list[TrainResult],
                                                         catalog: Path) -> None:
    bundle = Bundle.load(runs[1].bundle, threads=1)
    state = FeatureState.load(bundle.state_dir)
    rows = read_catalog(catalog).rows.collect().tail(8000)
    fakes = rows.filter(pl.col("is_counterfeit").fill_null(False))["listing_id"]
    assert fakes.len() > 20
    cheaper = rows.with_columns(
        pl.when(pl.col("listing_id").is_in(fakes.implode())).then(pl.col("price") * 0.6)
        .otherwise(pl.col("price")).alias("price")
    )
    before = _scores(bundle, rows.lazy(), state)
    after = _scores(bundle, cheaper.lazy(), state)
    both = before.join(after, on="listing_id", suffix="_after").filter(
        pl.col("listing_id").is_in(fakes.implode()))
    assert (both["score_after"] >= both["score"] - 1e-6).all()
    assert (both["score_after"] > both["score"] + 1e-6).any()  # and price does matter


def test_adding_copy_words_does_not_lower_the_score(runs: list[TrainResult],
                                                    catalog: Path) -> None:
    bundle = Bundle.load(runs[1].bundle, threads=1)
    state = FeatureState.load(bundle.state_dir)
    frame = build_features(read_catalog(catalog).rows.tail(5000), state).collect()
    more = frame.with_columns(pl.col("title_copy_words") + 1, pl.col("description_copy_words") + 1)
    before, after = bundle.predict(matrix(frame)), bundle.predict(matrix(more))
    assert (after >= before - 1e-6).all()
    assert set(MONOTONE) <= set(FEATURE_COLUMNS)


def test_same_catalog_same_config_same_model(runs: list[TrainResult]) -> None:
    weak, _, weak_again = runs
    # equal up to the summation order of polars' parallel group means
    assert weak.metrics == pytest.approx(weak_again.metrics, rel=1e-12, nan_ok=True)
    assert_frame_equal(pl.DataFrame(weak.baselines), pl.DataFrame(weak_again.baselines),
                       rtol=1e-12)


def test_tune_runs_nested_trials_and_writes_a_loadable_config(
    runs: list[TrainResult], catalog: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from training.tune import tune

    out = tmp_path / "best.toml"
    summary = tune(catalog, 2, out, FAST, progress=False)
    best = TrainConfig.from_toml(out)
    assert best.num_leaves == summary["best_params"]["num_leaves"]  # type: ignore[index]
    assert best.threads == FAST.threads  # unsearched settings kept
    children = MlflowClient().search_runs(
        [MlflowClient().get_run(str(summary["run_id"])).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'",
    )
    assert len(children) == 2
    assert all("average_precision" in c.data.metrics for c in children)
    # tuning never saw the validation window train reports on
    tuned = summary["tuned_on"]
    assert tuned["valid_start"] < tuned["held_out_from"]  # type: ignore[index]


def test_cli_train_without_labels_exits_2(tmp_path: Path, store: Path, catalog: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from knockoff.cli import main

    unlabelled = tmp_path / "unlabelled.csv"
    pl.read_parquet(catalog).head(500).drop("is_counterfeit", "image_hashes").write_csv(unlabelled)
    assert main(["train", "--catalog", str(unlabelled)]) == 2
    err = capsys.readouterr().err
    assert "labelled" in err and "Traceback" not in err


def test_optional_features_are_hidden_on_seeded_shares_of_training_rows() -> None:
    names = [n for group in OPTIONAL_GROUPS.values() for n in group]
    frame = pl.DataFrame({name: [1.0] * 2000 for name in (*names, "price_brand_ratio")})
    config = FAST.replace(after_sale_mask_share=0.5, optional_mask_share=0.1,
                          all_optional_mask_share=0.0)
    hidden = hide_optional(frame, config)
    after_sale = hidden.select(pl.col(OPTIONAL_GROUPS["after_sale"]).null_count()).row(0)
    assert len(set(after_sale)) == 1 and 800 < after_sale[0] < 1200  # a group goes together
    images = hidden["image_count"].null_count()
    assert 100 < images < 300 and hidden["main_image_sellers"].null_count() == images
    assert hidden["price_brand_ratio"].null_count() == 0
    assert_frame_equal(hidden, hide_optional(frame, config))  # seeded
    none = hide_optional(frame, config.replace(after_sale_mask_share=0.0,
                                               optional_mask_share=0.0))
    assert_frame_equal(none, frame)
    every = hide_optional(frame, config.replace(after_sale_mask_share=0.0,
                                                optional_mask_share=0.0,
                                                all_optional_mask_share=0.2))
    all_gone = every.select(pl.all_horizontal(pl.col(names).is_null()))[:, 0]
    assert 300 < all_gone.sum() < 500 and every.select(pl.col(names).null_count()).row(0) == (
        (all_gone.sum(),) * len(names))
