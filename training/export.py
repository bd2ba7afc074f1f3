"""The model bundle, writing side: LightGBM to ONNX, checked, written once with its digests.

The layout and the reading side (load, verify, predict) are in `serving.bundle`.

onnxruntime's TreeEnsemble compares float32 inputs with float32 thresholds, while LightGBM
keeps double thresholds; an input lying between a double threshold and its float32 rounding
goes the other way. Before converting, every threshold is snapped to the largest float32 <= t,
which changes no LightGBM prediction on float32 inputs and makes both agree to ~1e-6.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import polars as pl
from numpy.typing import NDArray
from onnxmltools.convert.common.data_types import FloatTensorType

from serving.bundle import (
    FEATURE_SPEC,
    FEATURE_STATE,
    FORMAT_VERSION,
    INPUT_NAME,
    MODEL_ONNX,
    MODEL_TXT,
    ONNX_FEATURES_KEY,
    OUTPUT_NAME,
    PARITY_SAMPLE,
    REFERENCE,
    TRAIN_TOML,
    Bundle,
    Parity,
    onnx_predict,
    onnx_session,
    seal,
)

TARGET_OPSET = 15  # onnxmltools' LightGBM converter supports opset <= 15
PARITY_SAMPLE_ROWS = 64  # validation rows kept in the bundle, re-scored at every load

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


# --------------------------------------------------------------------------- parity


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
    return Parity.of(onnx_predict(session, X), reference, threshold)


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


def _parity_sample(
    X: NDArray[np.float32], reference: NDArray[np.float64]
) -> dict[str, NDArray[np.generic]]:
    """PARITY_SAMPLE_ROWS rows of X evenly spaced in LightGBM's score order (lowest to highest
    score, so flagged rows are in it) with those scores."""
    order = np.argsort(reference, kind="stable")
    picks = order[np.unique(np.linspace(0, len(X) - 1, PARITY_SAMPLE_ROWS).round().astype(int))]
    return {"X": X[picks], "score": np.asarray(reference, dtype=np.float64)[picks]}


def _spec(names: list[str], threshold: float, extra: Mapping[str, Any],
          parity: Parity) -> str:
    """feature_spec.json's text."""
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
    return json.dumps(spec, indent=2, default=_json_default, allow_nan=False) + "\n"


def _publish(out: Path, files: Mapping[str, bytes], sample: Mapping[str, NDArray[np.generic]],
             write_state: Callable[[Path], None], threads: int,
             write_extra: Callable[[Path], None] | None = None) -> None:
    """Write the files, the feature state and the parity sample into a hidden temporary folder
    next to `out`, seal it with digests, load it back as a check, then rename it to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        np.savez(tmp / PARITY_SAMPLE, **sample)
        (tmp / FEATURE_STATE).mkdir()
        write_state(tmp / FEATURE_STATE)
        if write_extra is not None:  # e.g. schema variants, sealed with the rest
            write_extra(tmp)
        seal(tmp)
        Bundle.load(tmp, threads=threads)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    write_extra: Callable[[Path], None] | None = None,
    drift_reference: pl.DataFrame | None = None,
) -> Path:
    """Write a scoring bundle to out_dir (which must not exist) and return its path.

    Snaps thresholds, converts to ONNX, and refuses (ExportError, with the figures) unless ONNX
    matches LightGBM on X_check (validation rows, float32). spec_extra must hold model_name,
    train_window, valid_window and git_commit (model_version defaults to null). Keeps a parity
    sample of X_check with LightGBM's scores and the sha256 of every file, both checked at
    every load. Everything is written into a hidden temporary folder next to out_dir, loaded
    back as a check, and renamed into place at the end, so a failure never leaves a half
    bundle. `write_extra(folder)`, if given, adds files (e.g. the schema variants of
    `training.variants`) before the digests are written. `drift_reference` (the reference of
    `serving.drift.reference_table`) is written as reference.parquet.
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
    files = {
        MODEL_ONNX: model_bytes,
        MODEL_TXT: snapped.model_to_string().encode(),
        FEATURE_SPEC: _spec(names, threshold, extra, parity).encode(),
        TRAIN_TOML: config_text.encode(),
    }
    if drift_reference is not None:
        buffer = io.BytesIO()
        drift_reference.write_parquet(buffer)
        files[REFERENCE] = buffer.getvalue()
    _publish(out, files, _parity_sample(X, reference), write_state, threads, write_extra)
    return out
