"""The model bundle, reading side: one folder that scores without MLflow, verified before use.

Layout (written by `training.export.write_bundle`)::

    model.onnx          LightGBM as an ONNX TreeEnsembleRegressor (raw score) + Sigmoid
                        (input "input" float32 [N, F]; output "probability" [N, 1] = P(fake))
    model.txt           the same LightGBM model as text (the reasons' decision paths)
    feature_state/      fitted feature state
    feature_spec.json   ordered features, dtype, threshold, model identity, windows, parity
    train.toml          the training config as given
    parity_sample.npz   a few validation feature rows (X, float32) and LightGBM's scores (score)
    digests.json        the sha256 of every other file, feature_state/ included
    reference.parquet   drift reference: cut points and bin shares of every feature and the
                        score on the validation window, over all listings and the flagged
                        ones (`serving.drift`; absent in older bundles, flagged-less in some)

`Bundle.load` refuses (BundleError naming the file) a bundle whose files do not match their
digests, that lacks digests (written before bundles were verified), or whose ONNX model does
not give the parity sample's scores; `Bundle.predict` never returns a score outside 0..1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import polars as pl
from numpy.typing import NDArray

from serving.explain import ModelTextError, Trees
from serving.inference import onnx_input_width, onnx_predict, onnx_session

if TYPE_CHECKING:
    import lightgbm as lgb

MODEL_ONNX = "model.onnx"
MODEL_TXT = "model.txt"
FEATURE_STATE = "feature_state"
FEATURE_SPEC = "feature_spec.json"
TRAIN_TOML = "train.toml"
PARITY_SAMPLE = "parity_sample.npz"
DIGESTS = "digests.json"
REFERENCE = "reference.parquet"  # optional: bundles exported before drift was measured lack it
BUNDLE_FILES: tuple[str, ...] = (MODEL_ONNX, MODEL_TXT, FEATURE_SPEC, TRAIN_TOML, PARITY_SAMPLE)

# 1: TreeEnsembleClassifier, "probabilities" [N, 2]; 2: regressor + Sigmoid, [N, 1];
# 3: format 2 with digests and a parity sample (older bundles are refused: retrain)
FORMAT_VERSION = 3
INPUT_NAME = "input"
OUTPUT_NAME = "probability"  # [N, 1] = P(fake); scoring reads the last output's last column
ONNX_FEATURES_KEY = "knockoff.features"  # ONNX metadata: the ordered feature names (JSON list)

# Parity gate, at export and at load: at most this share of rows may differ by more than
# DIFF_TOLERANCE, and no flag may flip.
DIFF_TOLERANCE = 1e-4
MAX_SHARE_OVER = 1e-4  # 0.01 %

_DEFAULT_LGB_NAME = "Column_"  # LightGBM's names for unnamed features: Column_0, Column_1, ...
_RETRAIN = "re-export it by retraining (`knockoff train`)"


class BundleError(RuntimeError):
    """A bundle folder is incomplete, inconsistent or modified since export."""


# --------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class Parity:
    """How far ONNX scores are from LightGBM's on the same rows."""

    rows: int
    max_abs_diff: float
    p99_abs_diff: float
    share_over_1e4: float
    flag_flips: int
    ok: bool

    @classmethod
    def of(cls, scores: NDArray[np.float64], reference: NDArray[np.float64],
           threshold: float) -> Parity:
        """ok when at most 0.01 % of rows differ by more than 1e-4 (a NaN on either side
        counts as differing) and no flag (score >= threshold) flips. Zero rows are never ok."""
        diff = np.abs(np.asarray(scores, dtype=np.float64) - reference)
        rows = int(diff.size)
        if rows == 0:
            return cls(0, float("nan"), float("nan"), float("nan"), 0, False)
        share = float(np.mean(~(diff <= DIFF_TOLERANCE)))
        flips = int(np.count_nonzero((reference >= threshold) != (scores >= threshold)))
        return cls(rows=rows, max_abs_diff=float(diff.max()),
                   p99_abs_diff=float(np.quantile(diff, 0.99)), share_over_1e4=share,
                   flag_flips=flips, ok=share <= MAX_SHARE_OVER and flips == 0)

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "p99_abs_diff": self.p99_abs_diff,
            "share_over_1e4": self.share_over_1e4,
            "flag_flips": self.flag_flips,
            "ok": self.ok,
        }

    def describe(self) -> str:
        return (
            f"{self.rows} rows: max |diff| {self.max_abs_diff:.3g}, p99 {self.p99_abs_diff:.3g}, "
            f"{self.share_over_1e4:.4%} of rows over {DIFF_TOLERANCE:g} "
            f"(limit {MAX_SHARE_OVER:.2%}), {self.flag_flips} flag flips (limit 0)"
        )


# --------------------------------------------------------------------------- digests


def _files(root: Path) -> list[str]:
    """Every file under root but the digests, as sorted relative POSIX paths."""
    found = (p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(p.relative_to(root).as_posix() for p in found if p != root / DIGESTS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(root: str | os.PathLike[str]) -> Path:
    """Write digests.json: the sha256 of every file of the bundle (call it after any change)."""
    folder = Path(root)
    digests = {name: _sha256(folder / name) for name in _files(folder)}
    path = folder / DIGESTS
    path.write_text(json.dumps({"sha256": digests}, indent=2) + "\n")
    return path


def _recorded_digests(root: Path) -> dict[str, str]:
    path = root / DIGESTS
    if not path.is_file():
        raise BundleError(f"{root}: no {DIGESTS}; this bundle was written before bundles were "
                          f"verified (or was tampered with) and cannot be trusted: {_RETRAIN}")
    try:
        digests = json.loads(path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as error:
        raise BundleError(f"{path}: unreadable ({error})") from error
    if not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        raise BundleError(f"{path}: 'sha256' must map file names to digests")
    return digests


def verify_digests(root: Path) -> None:
    """Every file listed in digests.json is there with its digest, and nothing else is."""
    recorded = _recorded_digests(root)
    present = _files(root)
    missing = sorted(set(recorded) - set(present))
    if missing:
        raise BundleError(f"{root}: incomplete bundle, missing {', '.join(missing)} (listed "
                          f"in {DIGESTS}); {_RETRAIN}")
    unknown = sorted(set(present) - set(recorded))
    if unknown:
        raise BundleError(f"{root / unknown[0]}: not part of the bundle (not in {DIGESTS}); "
                          "remove it or re-export the bundle")
    for name in present:
        if not (root / name).is_file() or _sha256(root / name) != recorded[name]:
            raise BundleError(f"{root / name}: content differs from its sha256 in {DIGESTS}: "
                              f"the bundle was modified after export; {_RETRAIN}")


# --------------------------------------------------------------------------- loading


def _read_spec(path: Path) -> dict[str, Any]:
    """feature_spec.json, checked for the fields scoring relies on."""
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BundleError(f"{path}: unreadable JSON ({error})") from error
    features = spec.get("features") if isinstance(spec, dict) else None
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise BundleError(f"{path}: 'features' must be a non-empty list of names")
    if len(set(features)) != len(features):
        raise BundleError(f"{path}: 'features' has duplicate names")
    if spec.get("dtype") != "float32":
        raise BundleError(f"{path}: dtype must be 'float32', got {spec.get('dtype')!r}")
    threshold = spec.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0.0 <= threshold <= 1.0):
        raise BundleError(f"{path}: 'threshold' must be a probability in [0, 1], got "
                          f"{threshold!r}")
    return spec


def _check_onnx(path: Path, session: ort.InferenceSession, features: tuple[str, ...]) -> None:
    """The ONNX input width (and recorded feature order, if any) must match the spec."""
    width = onnx_input_width(session)
    if width != len(features):
        raise BundleError(
            f"{path}: expects {width} input features but {FEATURE_SPEC} lists {len(features)}"
        )
    recorded = session.get_modelmeta().custom_metadata_map.get(ONNX_FEATURES_KEY)
    if recorded is not None and tuple(json.loads(recorded)) != features:
        raise BundleError(
            f"{path}: feature order recorded in the model differs from {FEATURE_SPEC}"
        )


def _check_trees(path: Path, trees: Trees, features: tuple[str, ...]) -> None:
    """model.txt must have the spec's feature count (and names, when it has real names)."""
    if trees.n_features != len(features):
        raise BundleError(
            f"{path}: has {trees.n_features} features but {FEATURE_SPEC} lists {len(features)}"
        )
    names = trees.feature_names
    if not all(n.startswith(_DEFAULT_LGB_NAME) for n in names) and names != features:
        raise BundleError(f"{path}: feature names/order differ from {FEATURE_SPEC}")


def check_parity_sample(root: Path, session: ort.InferenceSession, threshold: float) -> None:
    """The ONNX model must give the sample's rows the scores LightGBM gave them at export."""
    path = root / PARITY_SAMPLE
    try:
        with np.load(path, allow_pickle=False) as sample:
            X, reference = sample["X"], sample["score"]
    except (OSError, ValueError, KeyError) as error:
        raise BundleError(f"{path}: unreadable parity sample ({error})") from error
    if X.ndim != 2 or X.dtype != np.float32 or reference.shape != (len(X),) or not len(X):
        raise BundleError(f"{path}: expected X float32 [N, F] and score [N], N > 0")
    try:
        scores = onnx_predict(session, X)
    except ValueError as error:
        raise BundleError(f"{path}: {error}") from error
    parity = Parity.of(scores, reference.astype(np.float64), threshold)
    if not parity.ok:
        raise BundleError(f"{root / MODEL_ONNX}: does not reproduce LightGBM's scores on the "
                          f"parity sample ({parity.describe()}); {_RETRAIN}")


def _check_files(root: Path) -> None:
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    verify_digests(root)
    missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
    if not (root / FEATURE_STATE).is_dir():
        missing.append(FEATURE_STATE + "/")
    if missing:
        raise BundleError(f"{root}: incomplete bundle, missing {', '.join(missing)}")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified scoring bundle: spec, ONNX session (scoring) and the LightGBM trees
    read from model.txt (explaining)."""

    path: Path
    spec: dict[str, Any]
    features: tuple[str, ...]
    threshold: float
    session: ort.InferenceSession
    trees: Trees
    threads: int = 2

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 2) -> Bundle:
        """Open and verify a bundle folder (digests, files, spec, ONNX model, parity sample);
        BundleError names the file when anything is missing, modified or inconsistent."""
        root = Path(path)
        _check_files(root)
        spec = _read_spec(root / FEATURE_SPEC)
        features = tuple(spec["features"])
        try:
            session = onnx_session(root / MODEL_ONNX, threads)
        except Exception as error:  # onnxruntime raises its own exception types
            raise BundleError(f"{root / MODEL_ONNX}: cannot be loaded ({error})") from error
        _check_onnx(root / MODEL_ONNX, session, features)
        try:
            trees = Trees.from_text((root / MODEL_TXT).read_text())
        except (OSError, ValueError, ModelTextError) as error:
            raise BundleError(f"{root / MODEL_TXT}: cannot be loaded ({error})") from error
        _check_trees(root / MODEL_TXT, trees, features)
        threshold = float(spec["threshold"])
        check_parity_sample(root, session, threshold)
        return cls(root, spec, features, threshold, session, trees, threads)

    @property
    def state_dir(self) -> Path:
        """The feature_state/ folder written at export."""
        return self.path / FEATURE_STATE

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """P(fake) per row (ONNX); columns in the order of `features`. Raises BundleError
        rather than return a score that is NaN or outside 0..1."""
        scores = onnx_predict(self.session, X)
        bad = ~((scores >= 0.0) & (scores <= 1.0))
        if bad.any():
            raise BundleError(f"{self.path / MODEL_ONNX}: gave {int(bad.sum())} of {len(scores)} "
                              f"scores outside 0..1 or NaN (e.g. {scores[bad][0]}); nothing is "
                              "written from such a model")
        return scores

    @cached_property
    def reference(self) -> pl.DataFrame | None:
        """The drift reference (`serving.drift.reference_table`), None if the bundle has none."""
        path = self.path / REFERENCE
        if not path.is_file():
            return None
        try:
            return pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as error:
            raise BundleError(f"{path}: unreadable ({error})") from error

    @cached_property
    def booster(self) -> lgb.Booster:
        """model.txt as a LightGBM Booster, for checks and exact TreeSHAP only (LightGBM is
        imported on first use: scoring and path reasons do not need it)."""
        import lightgbm as lgb

        return lgb.Booster(model_file=self.path / MODEL_TXT)

    def contributions(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """LightGBM pred_contrib (n, features + 1; last column the bias) in log-odds."""
        matrix = np.ascontiguousarray(X, dtype=np.float32)
        return self.booster.predict(matrix, pred_contrib=True, num_threads=self.threads)
