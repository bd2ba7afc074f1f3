"""Tests for training.export (threshold snapping, ONNX parity, writing a bundle) and the
round trip through serving.bundle."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.bundle import (  # noqa: E402
    Bundle,
    BundleError,
    Parity,
    onnx_predict,
    onnx_session,
    seal,
)
from training import export  # noqa: E402
from training.export import (  # noqa: E402
    ExportError,
    booster_to_onnx,
    parity_check,
    require_parity,
    snap_thresholds,
    write_bundle,
)

N_FEATURES = 8
NAMES = [f"f{i}" for i in range(N_FEATURES)]
THREADS = 2
SPEC_EXTRA = {
    "model_name": "knockoff-test",
    "train_window": {"start": "2025-01-01", "end": "2025-02-28"},
    "valid_window": {"start": "2025-03-01", "end": "2025-03-14"},
    "git_commit": "0123abc",
}


def _train(X: np.ndarray, y: np.ndarray, seed: int = 7, rounds: int = 50) -> lgb.Booster:
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "num_threads": THREADS,
        "deterministic": True,
        "seed": seed,
        "verbose": -1,
    }
    return lgb.train(params, lgb.Dataset(X, y, feature_name=NAMES), num_boost_round=rounds)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    X = rng.normal(size=(5_000, N_FEATURES)).astype(np.float32)
    logit = 1.5 * X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3] + np.sin(2 * X[:, 4])
    y = (rng.uniform(size=len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def booster(data: tuple[np.ndarray, np.ndarray]) -> lgb.Booster:
    return _train(*data)


def _write(booster: lgb.Booster, X: np.ndarray, out: Path, **overrides: object) -> Path:
    def write_state(folder: Path) -> None:
        (folder / "brand_prices.json").write_text('{"acme": 12.5}')

    kwargs: dict[str, object] = {
        "write_state": write_state,
        "config_text": "[train]\nrounds = 50\n",
        "spec_extra": SPEC_EXTRA,
        "threads": THREADS,
    }
    kwargs.update(overrides)
    return write_bundle(out, booster, NAMES, 0.5, X[:2_000], **kwargs)  # type: ignore[arg-type]


def _root_splits(booster: lgb.Booster) -> list[tuple[int, float]]:
    trees = booster.dump_model()["tree_info"]
    return [(t["tree_structure"]["split_feature"], t["tree_structure"]["threshold"]) for t in trees]


def test_snapping_keeps_lightgbm_predictions_and_makes_thresholds_float32(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    snapped = snap_thresholds(booster)
    X, _ = data
    assert np.array_equal(
        snapped.predict(X, num_threads=THREADS), booster.predict(X, num_threads=2)
    )
    before = [t for _, t in _root_splits(booster)]
    after = [t for _, t in _root_splits(snapped)]
    assert before != after  # some thresholds were not float32 and moved
    assert all(np.float64(np.float32(t)) == t for t in after)  # now exactly float32
    assert all(a <= b for a, b in zip(after, before, strict=True))  # never moved up


def test_onnx_matches_lightgbm_only_after_snapping_at_rounded_thresholds(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    # Put a feature exactly on float32(t) where that rounds above t: LightGBM (x <= t is false)
    # goes right, a float32 TreeEnsemble with the rounded threshold goes left.
    X, _ = data
    rows = []
    for i, (feature, t) in enumerate(_root_splits(booster)):
        if float(np.float32(t)) > t:
            row = X[i].copy()
            row[feature] = np.float32(t)
            rows.append(row)
    edge = np.array(rows, dtype=np.float32)
    assert len(edge) > 0
    reference = booster.predict(edge, num_threads=THREADS)
    raw = onnx_predict(onnx_session(booster_to_onnx(booster, N_FEATURES), THREADS), edge)
    snapped = onnx_session(booster_to_onnx(snap_thresholds(booster), N_FEATURES), THREADS)
    assert np.abs(raw - reference).max() > 1e-4
    assert np.abs(onnx_predict(snapped, edge) - reference).max() < 1e-5


def test_onnx_agrees_with_lightgbm_to_1e5(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    session = onnx_session(booster_to_onnx(snap_thresholds(booster), N_FEATURES), THREADS)
    scores = onnx_predict(session, X, chunk_rows=1_234)  # several chunks, ragged last one
    assert scores.dtype == np.float64 and scores.shape == (len(X),)
    assert np.abs(scores - booster.predict(X, num_threads=THREADS)).max() < 1e-5
    parity = parity_check(session, booster, X, 0.5, threads=THREADS)
    assert parity.ok and parity.flag_flips == 0 and parity.rows == len(X)


def test_onnx_output_batch_dim_is_symbolic(booster: lgb.Booster) -> None:
    model = booster_to_onnx(booster, N_FEATURES)
    # one output, P(fake) [N, 1], from the raw-score trees and a Sigmoid
    assert [o.name for o in model.graph.output] == ["probability"]
    assert [o.type.tensor_type.shape.dim[0].dim_param for o in model.graph.output] == ["N"]
    assert [n.op_type for n in model.graph.node] == ["TreeEnsembleRegressor", "Sigmoid"]
    with pytest.raises(ExportError, match="features"):
        booster_to_onnx(booster, N_FEATURES + 1)


def test_parity_check_fails_on_a_corrupted_model(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    # drop tree_sizes: with stale sizes LightGBM's parallel parser aborts the process
    lines = booster.model_to_string().splitlines(keepends=True)
    text = "".join(line for line in lines if not line.startswith("tree_sizes="))
    start = text.index("leaf_value=") + len("leaf_value=")
    first, rest = text[start:].split(" ", 1)
    corrupted = lgb.Booster(model_str=text[:start] + str(float(first) + 3.0) + " " + rest)
    session = onnx_session(booster_to_onnx(snap_thresholds(booster), N_FEATURES), THREADS)
    parity = parity_check(session, corrupted, X, 0.5, threads=THREADS)
    assert isinstance(parity, Parity)
    assert not parity.ok
    assert parity.share_over_1e4 > 1e-4 and parity.max_abs_diff > 0.05
    with pytest.raises(ExportError, match=r"disagree: 5000 rows: max \|diff\|"):
        require_parity(parity)


def test_write_bundle_refuses_mismatched_onnx_and_leaves_nothing(
    booster: lgb.Booster,
    data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, y = data
    other = _train(X, 1 - y, seed=3, rounds=20)
    monkeypatch.setattr(export, "booster_to_onnx", lambda b, n: booster_to_onnx(other, n))
    with pytest.raises(ExportError, match="flag flips"):
        _write(booster, X, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_write_bundle_cleans_up_when_the_state_callback_fails(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    def broken(folder: Path) -> None:
        (folder / "half.json").write_text("{")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write(booster, data[0], tmp_path / "bundle", write_state=broken)
    assert list(tmp_path.iterdir()) == []


def test_bundle_round_trip(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    path = _write(booster, X, tmp_path / "bundles" / "v1")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["model.onnx", "model.txt", "feature_state", "feature_spec.json", "train.toml",
         "parity_sample.npz", "digests.json"]
    )
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["v1"]  # no temp folder left

    bundle = Bundle.load(path, threads=THREADS)
    assert bundle.features == tuple(NAMES)
    assert bundle.threshold == 0.5
    assert bundle.spec["model_name"] == "knockoff-test" and bundle.spec["model_version"] is None
    assert bundle.spec["dtype"] == "float32" and bundle.spec["parity"]["ok"] is True
    assert bundle.spec["git_commit"] == "0123abc" and "created_at" in bundle.spec
    assert (bundle.state_dir / "brand_prices.json").read_text() == '{"acme": 12.5}'
    assert (path / "train.toml").read_text() == "[train]\nrounds = 50\n"

    reference = booster.predict(X, num_threads=THREADS)
    assert np.abs(bundle.predict(X) - reference).max() < 1e-5
    assert np.array_equal(bundle.booster.predict(X, num_threads=THREADS), reference)
    contrib = bundle.contributions(X[:10])
    assert contrib.shape == (10, N_FEATURES + 1)
    assert np.allclose(contrib.sum(axis=1), booster.predict(X[:10], raw_score=True), atol=1e-6)


def test_write_bundle_refuses_existing_folder_and_bad_spec_extra(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        _write(booster, X, tmp_path / "taken")
    lacking = {k: v for k, v in SPEC_EXTRA.items() if k != "git_commit"}
    with pytest.raises(ExportError, match="lacks git_commit"):
        _write(booster, X, tmp_path / "b", spec_extra=lacking)
    with pytest.raises(ExportError, match="may not set threshold"):
        _write(booster, X, tmp_path / "c", spec_extra={**SPEC_EXTRA, "threshold": 0.1})
    with pytest.raises(ExportError, match="not JSON-serialisable"):
        _write(booster, X, tmp_path / "d", spec_extra={**SPEC_EXTRA, "git_commit": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_bundle_with_wrong_feature_count_is_refused(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = _write(booster, data[0], tmp_path / "bundle")
    spec_path = path / "feature_spec.json"
    spec = json.loads(spec_path.read_text())
    spec["features"] = spec["features"][:-1]
    spec_path.write_text(json.dumps(spec))
    seal(path)  # digests recomputed: the structural check still refuses it
    with pytest.raises(BundleError, match=r"model\.onnx: expects 8 input .* lists 7"):
        Bundle.load(path, threads=THREADS)


def test_bundle_with_reordered_features_is_refused(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = _write(booster, data[0], tmp_path / "bundle")
    spec_path = path / "feature_spec.json"
    spec = json.loads(spec_path.read_text())
    spec["features"] = list(reversed(spec["features"]))
    spec_path.write_text(json.dumps(spec))
    seal(path)
    with pytest.raises(BundleError, match="order"):
        Bundle.load(path, threads=THREADS)


@pytest.mark.parametrize(
    "name", ["model.txt", "model.onnx", "feature_spec.json", "train.toml", "parity_sample.npz"])
def test_bundle_with_missing_file_is_refused(
    booster: lgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path, name: str
) -> None:
    path = _write(booster, data[0], tmp_path / "bundle")
    (path / name).unlink()
    with pytest.raises(BundleError, match=f"incomplete bundle, missing {name}"):
        Bundle.load(path, threads=THREADS)
    seal(path)  # even with digests recomputed, the file is required
    with pytest.raises(BundleError, match=f"missing {name}"):
        Bundle.load(path, threads=THREADS)


def test_missing_bundle_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle folder"):
        Bundle.load(tmp_path / "nowhere")
