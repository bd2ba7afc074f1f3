"""`knockoff serve`'s worker processes: niced, replaced when one dies, never left running after
serve (kill -9 included), stopped by its SIGTERM; bad worker settings exit 2. A real `serve` in a
subprocess with an empty MLflow store: the workers run, and wait, without a champion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.serving.test_service import Server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
            "POLARS_MAX_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "KNOCKOFF_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1",
            "KNOCKOFF_POLL_SECONDS": "0.2"}


def _workers(serve: psutil.Process, count: int, timeout: float = 30) -> list[psutil.Process]:
    """serve's `count` worker processes, once it has started them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [child for child in serve.children() if "worker" in _cmdline(child)]
        if len(children) == count:
            return children
        time.sleep(0.2)
    raise AssertionError(f"serve has {serve.children()} as workers, not {count}")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # exited (a zombie until serve reaps it)
        return []


def _still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after up to `timeout` s (a zombie has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    running.append(process)
            except psutil.NoSuchProcess:
                pass
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def test_serve_restarts_a_dead_worker_and_leaves_none_behind(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    server = Server(env, f"sqlite:///{tmp_path / 'knockoff.db'}", tmp_path / "data", workers=2)
    server.start()
    assert server.proc is not None
    try:
        serve = psutil.Process(server.proc.pid)
        first = _workers(serve, 2)
        assert [child.nice() for child in first] == [min(serve.nice() + 10, 19)] * 2
        first[0].kill()  # a worker that crashes is replaced
        deadline = time.monotonic() + 30
        while first[0].pid in [child.pid for child in _workers(serve, 2)]:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        assert f"worker 0 (pid {first[0].pid}) exited with status -9" in server.log.read_text()
        children = _workers(serve, 2)
        assert first[1] in children
    finally:
        server.kill()  # kill -9: the kernel kills the workers with it
    assert len(children) == 2 and _still_running(children, timeout=5) == []
    server.start()  # SIGTERM: serve stops its workers, then itself
    children = _workers(psutil.Process(server.proc.pid), 2)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 143
    assert _still_running(children, timeout=1) == []
    assert server.log.read_text().splitlines()[-1] == '{"error": "terminated (SIGTERM)"}'


def test_bad_worker_settings_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    where = ["--db", f"sqlite:///{tmp_path / 'knockoff.db'}", "--data", str(tmp_path / "data")]
    for args, extra, message in (
            (["worker", "--parent", "1"], {}, "--parent 1: not (or no longer) this process's"),
            (["serve", "--workers", "0"], {"KNOCKOFF_WORKER_NICE": "20"},
             "KNOCKOFF_WORKER_NICE must be an integer within 0..19, not '20'")):
        done = subprocess.run([sys.executable, "-m", "knockoff", *args, *where],
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["error"].startswith(message)
