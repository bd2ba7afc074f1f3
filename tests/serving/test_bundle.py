"""Bundles are verified before use: digests of every file, a parity sample re-scored at load,
no score outside 0..1 ever returned; model references stay inside a run and are cached."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import onnx
import polars as pl
import pytest

from features.registry import FEATURE_COLUMNS
from knockoff.cli import main
from serving import tracking
from serving.bundle import (
    DIGESTS,
    FEATURE_SPEC,
    MODEL_ONNX,
    PARITY_SAMPLE,
    Bundle,
    BundleError,
    onnx_session,
    seal,
)
from serving.scorer import ModelLoadError, Scorer
from training.export import write_bundle

THREADS = 1
NAMES = list(FEATURE_COLUMNS)  # the project's features, so a Scorer can hold the bundle
SPEC_EXTRA = {"model_name": "knockoff-test", "train_window": {}, "valid_window": {},
              "git_commit": "0123abc"}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2_000, len(NAMES))).astype(np.float32)
    logit = 2 * X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3]
    return X, (rng.uniform(size=len(X)) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.fixture(scope="module")
def booster(data: tuple[np.ndarray, np.ndarray]) -> lgb.Booster:
    params = {"objective": "binary", "num_leaves": 7, "num_threads": THREADS, "seed": 1,
              "deterministic": True, "verbose": -1}
    return lgb.train(params, lgb.Dataset(data[0], data[1], feature_name=NAMES), 20)


@pytest.fixture
def bundle(booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> Path:
    def write_state(folder: Path) -> None:
        (folder / "prices.parquet").write_bytes(b"not really parquet")
        (folder / "state.json").write_text("{}")

    return write_bundle(tmp_path / "bundle", booster, NAMES, 0.5, data[0], write_state=write_state,
                        config_text="[train]\n", spec_extra=SPEC_EXTRA, threads=THREADS)


def _edit_onnx(path: Path, base: float = 0.0, weight: float | None = None) -> None:
    """Add `base` to the trees' base value; set every leaf weight to `weight` if given."""
    model = onnx.load(str(path))
    (trees,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    for attribute in trees.attribute:
        if attribute.name == "base_values":
            attribute.floats[0] += base
        if attribute.name == "target_weights" and weight is not None:
            attribute.floats[:] = [weight] * len(attribute.floats)
    onnx.save(model, str(path))


def _refusal(path: Path) -> str:
    with pytest.raises(BundleError) as error:
        Bundle.load(path, threads=THREADS)
    return str(error.value)


def test_a_fresh_bundle_lists_every_file_in_its_digests(bundle: Path) -> None:
    digests = json.loads((bundle / DIGESTS).read_text())["sha256"]
    assert sorted(digests) == ["feature_spec.json", "feature_state/prices.parquet",
                               "feature_state/state.json", "model.onnx", "model.txt",
                               "parity_sample.npz", "train.toml"]
    with np.load(bundle / PARITY_SAMPLE) as sample:
        assert sample["X"].shape == (64, len(NAMES)) and sample["X"].dtype == np.float32
        assert sample["score"].min() < 0.5 < sample["score"].max()  # flagged rows included
    assert Bundle.load(bundle, threads=THREADS).threshold == 0.5


@pytest.mark.parametrize(("tamper", "names"), [
    (lambda b: _edit_onnx(b / MODEL_ONNX, base=2.0), "model.onnx"),
    (lambda b: _edit_onnx(b / MODEL_ONNX, base=math.nan), "model.onnx"),
    (lambda b: (b / FEATURE_SPEC).write_text(
        (b / FEATURE_SPEC).read_text().replace('"threshold": 0.5', '"threshold": 0.01')),
     "feature_spec.json"),
], ids=["base_values", "nan_base", "threshold"])
def test_an_edited_file_is_refused_naming_it(bundle: Path, tamper, names: str) -> None:
    tamper(bundle)
    message = _refusal(bundle)
    assert f"{bundle / names}: content differs from its sha256 in digests.json" in message
    assert "modified after export" in message


def test_a_deleted_or_added_state_file_is_refused_naming_it(bundle: Path) -> None:
    (bundle / "feature_state" / "state.json").unlink()
    message = _refusal(bundle)
    assert "incomplete bundle, missing feature_state/state.json" in message
    (bundle / "feature_state" / "state.json").write_text("{}")
    (bundle / "feature_state" / "extra.parquet").write_bytes(b"")
    assert f"{bundle / 'feature_state' / 'extra.parquet'}: not part of the bundle" in _refusal(
        bundle)


def test_a_bundle_without_digests_is_refused_as_old_format(bundle: Path) -> None:
    (bundle / DIGESTS).unlink()
    message = _refusal(bundle)
    assert f"{bundle}: no digests.json" in message and "re-export it by retraining" in message


@pytest.mark.parametrize("base", [0.5, math.nan], ids=["shifted", "nan"])
def test_a_resealed_edited_model_fails_the_parity_sample(bundle: Path, base: float) -> None:
    """Digests recomputed after the edit: the parity sample still catches the model."""
    _edit_onnx(bundle / MODEL_ONNX, base=base)
    seal(bundle)
    message = _refusal(bundle)
    assert f"{bundle / MODEL_ONNX}: does not reproduce LightGBM's scores" in message
    assert "flag flips" in message


def test_a_resealed_threshold_outside_0_1_is_refused(bundle: Path) -> None:
    spec = json.loads((bundle / FEATURE_SPEC).read_text())
    spec["threshold"] = 1.5
    (bundle / FEATURE_SPEC).write_text(json.dumps(spec))
    seal(bundle)
    assert "'threshold' must be a probability in [0, 1], got 1.5" in _refusal(bundle)


def test_predict_raises_instead_of_returning_nan_or_out_of_range_scores(
    bundle: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    loaded = Bundle.load(bundle, threads=THREADS)
    _edit_onnx(bundle / MODEL_ONNX, weight=math.nan)
    broken = replace(loaded, session=onnx_session(bundle / MODEL_ONNX, THREADS))
    with pytest.raises(BundleError, match=r"gave 10 of 10 scores outside 0\.\.1 or NaN"):
        broken.predict(data[0][:10])
    scorer = Scorer(broken, state=None, model_version="x", explain=None)  # type: ignore[arg-type]
    features = pl.DataFrame(data[0][:10], schema=NAMES).with_columns(
        listing_id=pl.lit("L"), seller_id=pl.lit("S"))
    with pytest.raises(ModelLoadError, match="outside 0..1 or NaN"):
        scorer.score_features(features)


@pytest.fixture
def catalog(tmp_path: Path, make_listings) -> Path:
    path = tmp_path / "batch.parquet"
    make_listings({"listing_id": "A"}).write_parquet(path)
    return path


def test_cli_refuses_a_tampered_bundle_with_exit_2_and_no_traceback(
    bundle: Path, catalog: Path, tmp_path: Path
) -> None:
    _edit_onnx(bundle / MODEL_ONNX, base=2.0)
    out = tmp_path / "scores.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "knockoff", "score", str(catalog), "--out", str(out),
         "--model", str(bundle)], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "POLARS_MAX_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
             "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"},
        cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{bundle / MODEL_ONNX}: content differs from its sha256" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(("tamper", "named"), [
    (lambda b: _edit_onnx(b / MODEL_ONNX, base=math.nan), "model.onnx: content differs"),
    (lambda b: (b / FEATURE_SPEC).write_text(
        (b / FEATURE_SPEC).read_text().replace('"threshold": 0.5', '"threshold": 0.01')),
     "feature_spec.json: content differs"),
    (lambda b: (b / "feature_state" / "prices.parquet").unlink(),
     "incomplete bundle, missing feature_state/prices.parquet"),
    (lambda b: (b / DIGESTS).unlink(), "no digests.json"),
], ids=["nan_base", "threshold", "state_file", "no_digests"])
def test_cli_refuses_every_tampered_bundle_with_exit_2(
    bundle: Path, catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper,
    named: str,
) -> None:
    tamper(bundle)
    out = tmp_path / "scores.parquet"
    assert main(["score", str(catalog), "--out", str(out), "--model", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not out.exists()


# --------------------------------------------------------------------------- references, cache


@pytest.fixture
def registered(bundle: Path, store: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tracking.ModelRef:
    monkeypatch.setenv("KNOCKOFF_CACHE_DIR", str(tmp_path / "cache"))
    with tracking.start_run("test", {}, {}) as run_id:
        return tracking.register_bundle(bundle, "knockoff-test", run_id)


def test_a_registered_bundle_is_resealed_and_downloaded_once(
    registered: tracking.ModelRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # what $TMPDIR sets
    folder, model = tracking.download_bundle(f"models:/knockoff-test/{registered.version}")
    assert list((tmp_path / "tmp").iterdir()) == []  # no copy left in the temp folder
    assert model == registered
    assert folder == tmp_path / "cache" / "bundles" / registered.run_id / "bundle"
    loaded = Bundle.load(folder, threads=THREADS)  # the spec gained model_version: resealed
    assert loaded.spec["model_version"] == registered.label
    assert [p.name for p in folder.parent.iterdir()] == ["bundle"]  # no temp folder left

    def no_download(**_: object) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    again, _ = tracking.download_bundle(f"runs:/{registered.run_id}/bundle")
    assert again == folder


def test_a_damaged_cache_entry_is_downloaded_again(registered: tracking.ModelRef) -> None:
    folder, _ = tracking.download_bundle(f"runs:/{registered.run_id}/bundle")
    (folder / "train.toml").write_text("edited in the cache")
    (folder / "feature_state" / "state.json").unlink()
    again, _ = tracking.download_bundle(f"runs:/{registered.run_id}/bundle")
    assert again == folder
    assert (again / "train.toml").read_text() == "[train]\n"
    assert Bundle.load(again, threads=THREADS).spec["run_id"] == registered.run_id
    assert [p.name for p in folder.parent.iterdir()] == ["bundle"]  # nothing set aside is left


def test_a_half_download_is_never_used(
    registered: tracking.ModelRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mlflow.artifacts.download_artifacts

    def interrupted(*, dst_path: str, **_: object) -> str:
        (Path(dst_path) / "bundle").mkdir()
        (Path(dst_path) / "bundle" / MODEL_ONNX).write_bytes(b"half")
        raise mlflow.exceptions.MlflowException("connection reset")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", interrupted)
    with pytest.raises(tracking.RegistryError, match="connection reset"):
        tracking.download_bundle(f"runs:/{registered.run_id}/bundle")
    entry = tmp_path / "cache" / "bundles" / registered.run_id
    assert list(entry.iterdir()) == []  # neither an entry nor a temporary folder
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", real)
    folder, _ = tracking.download_bundle(f"runs:/{registered.run_id}/bundle")
    assert Bundle.load(folder, threads=THREADS).spec["run_id"] == registered.run_id


@pytest.mark.parametrize("path", ["../..", "bundle/../..", "..", "", "/etc", "bundle//x",
                                  "%2e%2e/x", "./bundle"])
def test_references_outside_the_run_are_refused(
    registered: tracking.ModelRef, tmp_path: Path, path: str
) -> None:
    with pytest.raises(tracking.RegistryError, match="not a reference inside a run's artifacts"):
        tracking.download_bundle(f"runs:/{registered.run_id}/{path}")
    assert not (tmp_path / "cache").exists()


def test_cli_refuses_an_escaping_reference_with_exit_2(
    registered: tracking.ModelRef, catalog: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"runs:/{registered.run_id}/../../"
    code = main(["score", str(catalog), "--out", str(tmp_path / "s.parquet"),
                 "--model", ref])
    assert code == 2
    assert "not a reference inside a run's artifacts" in capsys.readouterr().err
