"""onnxruntime for Knockoff's models: a session that never spins and batched prediction over
a few Python threads (onnxruntime releases the GIL). See bench/score.py for the variants tried."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray


class SerializedModel(Protocol):
    """An in-memory ONNX model (onnx.ModelProto), without importing onnx here."""

    def SerializeToString(self) -> bytes: ...  # noqa: N802 (protobuf's name)


def onnx_session(
    model: str | os.PathLike[str] | bytes | SerializedModel, threads: int = 2
) -> ort.InferenceSession:
    """A CPU onnxruntime session for `onnx_predict`, which scores `threads` chunks at a time.

    Every `run` is single-threaded (intra_op_num_threads=1: no intra-op pool, nothing spins).
    Given a pool, onnxruntime's TreeEnsemble splits a large batch by trees and joins its
    threads every 128 rows: barely faster than one thread, and with spinning it burns the
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
    source: str | bytes
    if isinstance(model, bytes | str):
        source = model
    elif isinstance(model, os.PathLike):
        source = os.fspath(model)
    else:
        source = model.SerializeToString()
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
