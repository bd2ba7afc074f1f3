"""Serving stands on its own: a scoring process imports neither training/ nor the training
libraries (checked in a fresh interpreter, where nothing else has imported them yet)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_SERVING = ("training", "onnx", "onnxmltools", "optuna", "sklearn", "lightgbm", "mlflow")


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True,
                          env={"PATH": "/usr/bin:/bin", "POLARS_MAX_THREADS": "2",
                               "OMP_WAIT_POLICY": "PASSIVE", "ORT_DISABLE_TELEMETRY": "1"})
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


def test_importing_the_scorer_imports_no_training_code_or_library() -> None:
    loaded = _modules_after("import serving.scorer")
    assert "serving" in loaded and "onnxruntime" in loaded
    assert loaded.isdisjoint(NOT_IN_SERVING), sorted(loaded & set(NOT_IN_SERVING))


def test_the_check_sees_training_imports() -> None:
    """The same check on training's export module finds what serving must not import."""
    assert {"training", "onnx", "onnxmltools", "lightgbm"} <= _modules_after(
        "import training.export")
