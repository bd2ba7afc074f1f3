"""MLflow as data scientists expect it, in a real temp store: a named run opened before training
(FAILED on a crash), the training data as a dataset input, per-iteration curves, an ONNX model
with a signature and input example, the model card as the version's description, challenger
and champion aliases with the reason for each decision, and `score` without a champion."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

import training.train as train_module
from knockoff.cli import main
from serving import tracking
from synthetic.generate import generate_catalog
from training.config import TrainConfig
from training.report import TrainResult

FAST = TrainConfig(num_boost_round=40, early_stopping_rounds=10, threads=1, valid_days=30,
                   review_capacity=10)
WEAK = FAST.replace(num_boost_round=1, num_leaves=2, learning_rate=0.01)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A weak model (loses to logistic: challenger only), `score` with no champion, then a real
    model (first champion)."""
    folder = tmp_path_factory.mktemp("catalog")
    catalog = folder / "catalog.parquet"
    generate_catalog(catalog, 20_000, seed=5, days=120)
    err = io.StringIO()
    with redirect_stderr(err):
        weak = train_module.train(catalog, WEAK, progress=False)
    no_champion = _cli("score", str(catalog), "--out", str(folder / "scores.parquet"))
    challenger = tracking.resolve("models:/knockoff@challenger").label
    real = train_module.train(catalog, FAST, progress=False)
    return {"catalog": catalog, "weak": weak, "real": real, "weak_stderr": err.getvalue(),
            "no_champion": no_champion, "challenger_after_weak": challenger}


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def test_a_weak_first_model_stays_challenger_and_score_says_there_is_no_champion(
    world: dict[str, Any]
) -> None:
    weak: TrainResult = world["weak"]
    assert not weak.promoted and world["challenger_after_weak"] == weak.model_version
    assert f"knockoff train: {weak.model_version} not promoted: does not beat the logistic " \
        "baseline" in world["weak_stderr"]
    code, out, err = world["no_champion"]
    assert code == 2 and "Traceback" not in err
    message = json.loads(out.strip().splitlines()[-1])["error"]
    assert "there is no champion model yet" in message and "beats the logistic" in message
    version = _client().get_model_version("knockoff", weak.model_version.split("/")[1])
    assert version.tags["promoted"] == "false"
    assert version.tags["promotion_reason"] == weak.promotion_reason
    run = _client().get_run(weak.run_id)
    assert run.data.tags["promotion_reason"] == weak.promotion_reason


def test_the_promoted_model_is_champion_and_no_longer_challenger(world: dict[str, Any]) -> None:
    real: TrainResult = world["real"]
    assert real.promoted and tracking.champion("knockoff").label == real.model_version
    with pytest.raises(tracking.RegistryError):
        tracking.resolve("models:/knockoff@challenger")  # the challenger won: none pending
    version = _client().get_model_version("knockoff", real.model_version.split("/")[1])
    assert version.tags["promoted"] == "true"
    assert version.description.startswith(f"# Model card: {real.model_version}")
    assert real.promotion_reason in version.description


def test_the_run_is_named_finished_and_lasts_the_whole_training(world: dict[str, Any]) -> None:
    real: TrainResult = world["real"]
    run = _client().get_run(real.run_id)
    assert run.info.run_name.startswith("lgbm-catalog-")
    assert run.info.status == "FINISHED"
    steps = real.seconds["features"] + real.seconds["fit"]  # before the old run opened
    assert (run.info.end_time - run.info.start_time) / 1000 >= steps


def test_the_training_data_is_a_dataset_input(world: dict[str, Any]) -> None:
    real: TrainResult = world["real"]
    (dataset_input,) = _client().get_run(real.run_id).inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "catalog-train"
    assert dataset.digest == _client().get_run(real.run_id).data.tags["catalog_fingerprint"]
    assert json.loads(dataset.source)["uri"] == world["catalog"].resolve().as_uri()
    assert json.loads(dataset.profile)["num_rows"] == int(
        _client().get_run(real.run_id).data.tags["train_labelled"])
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_training_curves_have_one_step_per_tree(world: dict[str, Any]) -> None:
    real: TrainResult = world["real"]
    trees = int(_client().get_run(real.run_id).data.tags["best_iteration"])
    for name in ("curve_train_logloss", "curve_valid_logloss", "curve_valid_average_precision"):
        history = _client().get_metric_history(real.run_id, name)
        assert [m.step for m in history] == list(range(trees))
    train_loss = [m.value for m in _client().get_metric_history(real.run_id,
                                                                "curve_train_logloss")]
    assert train_loss[-1] < train_loss[0]  # boosting lowers the loss it fits


def test_the_registered_onnx_model_has_a_signature_and_an_input_example(
    world: dict[str, Any]
) -> None:
    import mlflow

    from features.registry import FEATURE_COLUMNS

    info = mlflow.models.get_model_info(f"models:/{world['real'].model_version}")
    (tensor,) = info.signature.inputs.inputs
    assert tensor.name == "input" and tensor.shape == (-1, len(FEATURE_COLUMNS))
    assert info.signature.outputs.inputs[0].name == "probability"
    assert info.metadata["features"] == list(FEATURE_COLUMNS)
    assert info.saved_input_example_info is not None


def test_a_crash_ends_the_run_failed_and_registers_nothing(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("fit crashed")

    monkeypatch.setattr(train_module, "fit_models", broken)
    versions = len(_client().search_model_versions("name='knockoff'"))
    with pytest.raises(RuntimeError, match="fit crashed"):
        train_module.train(world["catalog"], FAST, progress=False)
    experiment = _client().get_experiment_by_name(tracking.EXPERIMENT)
    (latest,) = _client().search_runs([experiment.experiment_id],
                                      order_by=["attributes.start_time DESC"], max_results=1)
    assert latest.info.status == "FAILED" and latest.info.run_name.startswith("lgbm-catalog-")
    assert len(_client().search_model_versions("name='knockoff'")) == versions


def test_raw_scores_by_iteration_equal_lightgbm_with_that_many_trees() -> None:
    import lightgbm as lgb
    import numpy as np

    from training.report import _raw_by_iteration

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0]) + rng.normal(size=500) > 1
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1,
                         "min_data_in_leaf": 5}, lgb.Dataset(X, y), num_boost_round=12)
    raw = _raw_by_iteration(booster, X)
    assert raw.shape == (500, 12)
    for trees in (1, 5, 12):
        np.testing.assert_allclose(raw[:, trees - 1],
                                   booster.predict(X, raw_score=True, num_iteration=trees),
                                   rtol=0, atol=1e-12)
