"""The model bundle: one folder that scores without MLflow.

Layout::

    model.onnx          LightGBM as an ONNX TreeEnsembleRegressor (raw score) + Sigmoid
                        (input "input" float32 [N, F]; output "probability" [N, 1] = P(fake))
    model.txt           the same LightGBM model as text (pred_contrib explanations)
    feature_state/      fitted feature state, written by the caller's callback
    feature_spec.json   ordered features, dtype, threshold, model identity, windows, parity
    train.toml          the training config as given

onnxruntime's TreeEnsemble compares float32 inputs with float32 thresholds, while LightGBM
keeps double thresholds; an input lying between a double threshold and its float32 rounding
goes the other way. Before converting, every threshold is snapped to the largest float32 <= t,
which changes no LightGBM prediction on float32 inputs and makes both agree to ~1e-6.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
from numpy.typing import NDArray
from onnxmltools.convert.common.data_types import FloatTensorType

MODEL_ONNX = "model.onnx"
MODEL_TXT = "model.txt"
FEATURE_STATE = "feature_state"
FEATURE_SPEC = "feature_spec.json"
TRAIN_TOML = "train.toml"
BUNDLE_FILES: tuple[str, ...] = (MODEL_ONNX, MODEL_TXT, FEATURE_SPEC, TRAIN_TOML)

FORMAT_VERSION = 2  # 1: TreeEnsembleClassifier, "probabilities" [N, 2] (still readable)
TARGET_OPSET = 15  # onnxmltools' LightGBM converter supports opset <= 15
INPUT_NAME = "input"
OUTPUT_NAME = "probability"  # [N, 1] = P(fake); scoring reads the last output's last column
ONNX_FEATURES_KEY = "knockoff.features"  # ONNX metadata: the ordered feature names (JSON list)

# Parity limits: at most this share of rows may differ by more than DIFF_TOLERANCE.
DIFF_TOLERANCE = 1e-4
MAX_SHARE_OVER = 1e-4  # 0.01 %

REQUIRED_SPEC_EXTRA: tuple[str, ...] = ("model_name", "train_window", "valid_window", "git_commit")
RESERVED_SPEC_KEYS: tuple[str, ...] = (
    "format_version",
    "features",
    "n_features",
    "dtype",
    "threshold",
    "created_at",
    "onnx",
    "parity",
)

_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)
_DEFAULT_LGB_NAME = re.compile(r"^Column_\d+$")


class ExportError(RuntimeError):
    """Writing a bundle was refused (bad inputs or ONNX/LightGBM disagreement)."""


class BundleError(RuntimeError):
    """A bundle folder is incomplete or inconsistent."""


# --------------------------------------------------------------------------- snapping


def _floor_float32(values: NDArray[np.float64]) -> NDArray[np.float32]:
    """The largest float32 <= each value."""
    rounded = values.astype(np.float32)
    too_big = rounded.astype(np.float64) > values
    rounded[too_big] = np.nextafter(rounded[too_big], np.float32(-np.inf), dtype=np.float32)
    return rounded


def _snap_line(match: re.Match[str]) -> str:
    values = np.array(match.group(1).split(), dtype=np.float64)
    snapped = _floor_float32(values).astype(np.float64)
    return "threshold=" + " ".join(repr(float(v)) for v in snapped)


def snap_thresholds(booster: lgb.Booster) -> lgb.Booster:
    """A copy of the booster whose split thresholds are the largest float32 <= the originals.

    On float32 inputs x, `x <= t` and `x <= floor32(t)` agree, so predictions do not change;
    the float32 TreeEnsemble in onnxruntime then takes the same branches as LightGBM.
    """
    text = booster.model_to_string()
    text = _TREE_SIZES_LINE.sub("", text)  # sizes change with the new text; LightGBM re-parses
    return lgb.Booster(model_str=_THRESHOLD_LINE.sub(_snap_line, text))


# --------------------------------------------------------------------------- ONNX


def booster_to_onnx(booster: lgb.Booster, n_features: int) -> onnx.ModelProto:
    """Convert a binary LightGBM booster to ONNX (float32 input "input" [N, n_features])."""
    if booster.num_feature() != n_features:
        raise ExportError(f"booster has {booster.num_feature()} features, not {n_features}")
    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        zipmap=False,
    )
    return classifier_to_regressor(model)


def classifier_to_regressor(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxmltools' binary TreeEnsembleClassifier rewritten as TreeEnsembleRegressor (the raw
    score) + Sigmoid, with one output "probability" [N, 1]. The same trees, without the label
    and the [N, 2] probabilities: ~10% faster in onnxruntime (bench/score.py). The batch dim is
    symbolic ("N"), which silences onnxruntime's VerifyOutputSizes warnings."""
    node = next((n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"), None)
    if node is None:
        raise ExportError("the converted model has no TreeEnsembleClassifier")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("post_transform") != b"LOGISTIC" or list(attrs["classlabels_int64s"]) != [0, 1]:
        raise ExportError("expected a binary LOGISTIC TreeEnsembleClassifier")
    if set(attrs["class_ids"]) != {0}:
        raise ExportError("expected the weights of one class only (binary LightGBM)")
    trees = onnx.helper.make_node(
        "TreeEnsembleRegressor", [INPUT_NAME], ["raw_score"], domain="ai.onnx.ml", n_targets=1,
        post_transform="NONE", target_ids=attrs["class_ids"],
        target_nodeids=attrs["class_nodeids"], target_treeids=attrs["class_treeids"],
        target_weights=attrs["class_weights"],
        base_values=list(attrs.get("base_values", [])) or [0.0],
        **{k: v for k, v in attrs.items() if k.startswith("nodes_")},
    )
    graph = onnx.helper.make_graph(
        [trees, onnx.helper.make_node("Sigmoid", ["raw_score"], [OUTPUT_NAME])],
        "knockoff", [model.graph.input[0]],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", 1])],
    )
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name
    onnx.checker.check_model(out)
    return out


def onnx_session(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto, threads: int = 2
) -> ort.InferenceSession:
    """A CPU onnxruntime session for `onnx_predict`, which scores `threads` chunks at a time.

    Every `run` is single-threaded (intra_op_num_threads=1: no intra-op pool, nothing spins).
    Given a pool, onnxruntime's TreeEnsembleClassifier splits a large batch by trees and joins
    its threads every 128 rows: barely faster than one thread, and with spinning it burns the
    other core of a shared machine. `onnx_predict` instead runs chunks concurrently from
    `threads` Python threads (onnxruntime releases the GIL); the count is kept in the session's
    config entry "knockoff.predict_threads". Full graph optimisation. See bench/score.py.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("knockoff.predict_threads", str(threads))
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_input_width(session: ort.InferenceSession) -> int | None:
    """The feature count the session's input expects (None if not fixed)."""
    width = session.get_inputs()[0].shape[1]
    return width if isinstance(width, int) else None


def onnx_predict(
    session: ort.InferenceSession, X: NDArray[np.floating], chunk_rows: int = 1_000_000
) -> NDArray[np.float64]:
    """P(fake) for each row of X (cast to contiguous float32).

    Rows are scored in runs of at most `chunk_rows` rows, at least 4 runs per thread when X is
    big enough (so a thread slowed by other work on the machine hands chunks to the others),
    `threads` runs at a time for a session from `onnx_session(model, threads)`, one at a time
    for any other session.
    """
    matrix = np.ascontiguousarray(X, dtype=np.float32)
    width = onnx_input_width(session)
    if matrix.ndim != 2 or (width is not None and matrix.shape[1] != width):
        raise ValueError(f"expected a 2-d array with {width} columns, got shape {matrix.shape}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[-1].name  # format 1's [N, 2] or format 2's [N, 1]
    try:  # set by onnx_session; other sessions (or a bad value) score one chunk at a time
        options = session.get_session_options()
        threads = max(1, int(options.get_session_config_entry("knockoff.predict_threads")))
    except (RuntimeError, ValueError):
        threads = 1
    rows = matrix.shape[0]
    step = min(chunk_rows, max(4_096, -(-rows // (4 * threads))))
    out = np.empty(rows, dtype=np.float64)

    def score(start: int) -> None:
        chunk = matrix[start : start + step]
        (probabilities,) = session.run([output_name], {input_name: chunk})
        out[start : start + chunk.shape[0]] = probabilities[:, -1]

    starts = range(0, rows, step)
    if threads == 1 or len(starts) <= 1:
        for start in starts:
            score(start)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(starts))) as pool:
            list(pool.map(score, starts))  # each chunk goes to whichever thread is free
    return out


# --------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class Parity:
    """How far ONNX scores are from LightGBM's on a validation sample."""

    rows: int
    max_abs_diff: float
    p99_abs_diff: float
    share_over_1e4: float
    flag_flips: int
    ok: bool

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


def parity_check(
    session: ort.InferenceSession,
    booster: lgb.Booster,
    X_float32: NDArray[np.float32],
    threshold: float,
    *,
    threads: int = 2,
) -> Parity:
    """Compare ONNX and LightGBM P(fake) on the same float32 rows.

    ok when at most 0.01 % of rows differ by more than 1e-4 and no flag (score >= threshold)
    flips. Zero rows are never ok.
    """
    X = np.ascontiguousarray(X_float32, dtype=np.float32)
    reference = np.asarray(booster.predict(X, num_threads=threads), dtype=np.float64)
    scores = onnx_predict(session, X)
    diff = np.abs(scores - reference)
    rows = int(diff.size)
    if rows == 0:
        return Parity(0, float("nan"), float("nan"), float("nan"), 0, False)
    share = float(np.mean(diff > DIFF_TOLERANCE))
    flips = int(np.count_nonzero((reference >= threshold) != (scores >= threshold)))
    return Parity(
        rows=rows,
        max_abs_diff=float(diff.max()),
        p99_abs_diff=float(np.quantile(diff, 0.99)),
        share_over_1e4=share,
        flag_flips=flips,
        ok=share <= MAX_SHARE_OVER and flips == 0,
    )


def require_parity(parity: Parity) -> Parity:
    """Raise ExportError with the figures unless the parity check passed."""
    if not parity.ok:
        raise ExportError(f"ONNX and LightGBM disagree: {parity.describe()}")
    return parity


# --------------------------------------------------------------------------- writing


def _json_default(value: object) -> object:
    """JSON for dates/datetimes (ISO 8601), paths and numpy scalars; refuses anything else."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _checked_names(
    booster: lgb.Booster, feature_names: Sequence[str], threshold: float, X_check: np.ndarray
) -> list[str]:
    """Validate write_bundle's inputs; returns the feature names as a list."""
    names = [str(name) for name in feature_names]
    if len(set(names)) != len(names):
        raise ExportError("feature names are not unique")
    if booster.num_feature() != len(names):
        raise ExportError(f"booster has {booster.num_feature()} features, {len(names)} names given")
    trained = booster.feature_name()
    if not all(_DEFAULT_LGB_NAME.match(n) for n in trained) and trained != names:
        raise ExportError("feature_names differ from the booster's training feature names/order")
    if X_check.ndim != 2 or X_check.shape[1] != len(names) or X_check.shape[0] == 0:
        raise ExportError(f"X_check must be (rows > 0, {len(names)}), got {X_check.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"threshold must be a probability in [0, 1], got {threshold}")
    return names


def _checked_extra(spec_extra: Mapping[str, Any]) -> dict[str, Any]:
    """spec_extra with model_version defaulted; refuses missing, reserved or non-JSON values."""
    missing = [key for key in REQUIRED_SPEC_EXTRA if key not in spec_extra]
    if missing:
        raise ExportError(f"spec_extra lacks {', '.join(missing)}")
    reserved = sorted(set(spec_extra) & set(RESERVED_SPEC_KEYS))
    if reserved:
        raise ExportError(f"spec_extra may not set {', '.join(reserved)} (export writes them)")
    extra = dict(spec_extra)
    extra.setdefault("model_version", None)
    try:
        json.dumps(extra, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ExportError(f"spec_extra is not JSON-serialisable: {error}") from error
    return extra


def _tag_features(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Record the ordered feature names in the ONNX metadata (checked on load)."""
    entry = model.metadata_props.add()
    entry.key = ONNX_FEATURES_KEY
    entry.value = json.dumps(list(names))


def write_bundle(
    out_dir: str | os.PathLike[str],
    booster: lgb.Booster,
    feature_names: Sequence[str],
    threshold: float,
    X_check: NDArray[np.float32],
    *,
    write_state: Callable[[Path], None],
    config_text: str,
    spec_extra: Mapping[str, Any],
    threads: int = 2,
) -> Path:
    """Write a scoring bundle to out_dir (which must not exist) and return its path.

    Snaps thresholds, converts to ONNX, and refuses (ExportError, with the figures) unless ONNX
    matches LightGBM on X_check (validation rows, float32). spec_extra must hold model_name,
    train_window, valid_window and git_commit (model_version defaults to null). Everything is
    written into a hidden temporary folder next to out_dir, loaded back as a check, and renamed
    into place at the end, so a failure never leaves a half bundle.
    """
    out = Path(out_dir)
    X = np.ascontiguousarray(X_check, dtype=np.float32)
    names = _checked_names(booster, feature_names, float(threshold), X)
    extra = _checked_extra(spec_extra)
    if out.exists():
        raise ExportError(f"{out} already exists; bundles are written once, pick a new folder")

    snapped = snap_thresholds(booster)
    reference = booster.predict(X, num_threads=threads)
    if not np.array_equal(snapped.predict(X, num_threads=threads), reference):
        raise ExportError("snapping thresholds to float32 changed LightGBM predictions")
    model = booster_to_onnx(snapped, len(names))
    _tag_features(model, names)
    model_bytes = model.SerializeToString()
    parity = require_parity(
        parity_check(onnx_session(model_bytes, threads), booster, X, threshold, threads=threads)
    )
    spec = {
        "format_version": FORMAT_VERSION,
        "features": names,
        "n_features": len(names),
        "dtype": "float32",
        "threshold": float(threshold),
        **extra,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx": {
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "column": 0,
            "opset": TARGET_OPSET,
            "thresholds_snapped_to_float32": True,
        },
        "parity": parity.as_dict(),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / MODEL_ONNX).write_bytes(model_bytes)
        (tmp / MODEL_TXT).write_text(snapped.model_to_string())
        (tmp / FEATURE_STATE).mkdir()
        write_state(tmp / FEATURE_STATE)
        (tmp / FEATURE_SPEC).write_text(
            json.dumps(spec, indent=2, default=_json_default, allow_nan=False) + "\n"
        )
        (tmp / TRAIN_TOML).write_text(config_text)
        Bundle.load(tmp, threads=threads)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise BundleError(f"{path}: 'threshold' must be a number, got {threshold!r}")
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


def _check_booster(path: Path, booster: lgb.Booster, features: tuple[str, ...]) -> None:
    """model.txt must have the spec's feature count (and names, when it has real names)."""
    if booster.num_feature() != len(features):
        raise BundleError(
            f"{path}: has {booster.num_feature()} features but {FEATURE_SPEC} lists {len(features)}"
        )
    names = tuple(booster.feature_name())
    if not all(_DEFAULT_LGB_NAME.match(n) for n in names) and names != features:
        raise BundleError(f"{path}: feature names/order differ from {FEATURE_SPEC}")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded scoring bundle: spec, ONNX session (scoring) and LightGBM booster (explaining)."""

    path: Path
    spec: dict[str, Any]
    features: tuple[str, ...]
    threshold: float
    session: ort.InferenceSession
    booster: lgb.Booster
    threads: int = 2

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 2) -> Bundle:
        """Open a bundle folder; BundleError names the file when anything is missing or off."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle folder")
        missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
        if not (root / FEATURE_STATE).is_dir():
            missing.append(FEATURE_STATE + "/")
        if missing:
            raise BundleError(f"{root}: incomplete bundle, missing {', '.join(missing)}")
        spec = _read_spec(root / FEATURE_SPEC)
        features = tuple(spec["features"])
        try:
            session = onnx_session(root / MODEL_ONNX, threads)
        except Exception as error:  # onnxruntime raises its own exception types
            raise BundleError(f"{root / MODEL_ONNX}: cannot be loaded ({error})") from error
        _check_onnx(root / MODEL_ONNX, session, features)
        try:
            booster = lgb.Booster(model_file=root / MODEL_TXT)
        except lgb.basic.LightGBMError as error:
            raise BundleError(f"{root / MODEL_TXT}: cannot be loaded ({error})") from error
        _check_booster(root / MODEL_TXT, booster, features)
        return cls(root, spec, features, float(spec["threshold"]), session, booster, threads)

    @property
    def state_dir(self) -> Path:
        """The feature_state/ folder written at export."""
        return self.path / FEATURE_STATE

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """P(fake) per row (ONNX); columns in the order of `features`."""
        return onnx_predict(self.session, X)

    def contributions(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """LightGBM pred_contrib (n, features + 1; last column the bias) in log-odds."""
        matrix = np.ascontiguousarray(X, dtype=np.float32)
        return self.booster.predict(matrix, pred_contrib=True, num_threads=self.threads)
