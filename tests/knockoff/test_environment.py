"""quiet_environment(): telemetry off and passive threads, never overriding what is set."""

from __future__ import annotations

import os

import pytest

from knockoff.environment import QUIET, quiet_environment

KEYS = [*QUIET, "POLARS_MAX_THREADS", "OMP_NUM_THREADS"]


def test_fills_what_is_missing_and_keeps_what_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    values = quiet_environment(threads=3)
    assert values == {key: os.environ[key] for key in KEYS}
    assert values["OMP_WAIT_POLICY"] == "ACTIVE"  # the caller's choice wins
    assert values["MLFLOW_DISABLE_TELEMETRY"] == "true" and values["ORT_DISABLE_TELEMETRY"] == "1"
    assert values["POLARS_MAX_THREADS"] == values["OMP_NUM_THREADS"] == "3"


def test_thread_counts_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    assert set(quiet_environment()) == set(QUIET)
    assert "POLARS_MAX_THREADS" not in os.environ and os.environ["DO_NOT_TRACK"] == "1"
