"""The process environment every entry point sets first (the command line and the tests).

Library telemetry off, and idle OpenMP threads that sleep instead of spinning (the machine may be
shared). Polars, LightGBM and onnxruntime read these once, when first imported, so this runs
before any of them is imported. Values already in the environment win.
"""

from __future__ import annotations

import os

QUIET: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def quiet_environment(threads: int | None = None) -> dict[str, str]:
    """Set QUIET (and, with `threads`, Polars' and OpenMP's thread counts) unless already set;
    returns the values now in effect for those keys."""
    wanted = dict(QUIET)
    if threads is not None:
        wanted |= {"POLARS_MAX_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return {key: os.environ.setdefault(key, value) for key, value in wanted.items()}
