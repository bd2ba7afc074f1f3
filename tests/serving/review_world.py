"""A small real world for the officers' tests: a generated catalog, a champion trained on it in
a temp MLflow store, `knockoff serve` in a subprocess on 127.0.0.1 with a temp SQLite
database, two platforms whose later batches were scored into cases, and five accounts.
Nothing is mocked; the tests talk HTTP to the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.serving.conftest import free_port

FAST_TOML = "num_boost_round = 60\nearly_stopping_rounds = 20\nthreads = 1\nvalid_days = 40\n"
PARQUET = {"Content-Type": "application/vnd.apache.parquet"}
USERS = {"ana": "officer", "bob": "officer", "sue": "supervisor", "sam": "supervisor",
         "ada": "admin", "locky": "officer"}


def password(user: str) -> str:
    return f"correct horse {user} battery"


def knockoff(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "knockoff", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@dataclass
class World:
    url: str
    db: str
    data: Path
    env: dict[str, str]
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def token(self, user: str) -> dict[str, str]:
        answer = httpx.post(f"{self.url}/v1/auth/token",
                            json={"user": user, "password": password(user)})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def platform(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def _environment(root: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "POLARS_MAX_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "KNOCKOFF_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1",
            "KNOCKOFF_POLL_SECONDS": "0.2", "KNOCKOFF_AUDIT_SHARE": "0.02"}


def _serve(env: dict[str, str], db: str, data: Path, log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "knockoff", "serve", "--port", str(port),
                                 "--db", db, "--data", str(data), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("model_version"):
                return url, proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not start: {log.read_text()[-3000:]}")


def _score(world: World, platform: str, batch: Path) -> None:
    answer = httpx.post(f"{world.url}/v1/batches", content=batch.read_bytes(), timeout=120,
                        headers={**world.platform(platform), **PARQUET})
    assert answer.status_code == 202, answer.text
    where = f"{world.url}/v1/batches/{answer.json()['batch_id']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = httpx.get(where, headers=world.platform(platform)).json()
        if status["status"] in ("done", "failed"):
            assert status["status"] == "done", status
            return
        time.sleep(0.2)
    raise AssertionError(f"{where} not done")


def build_world(root: Path, listings: int = 20000, batch: int = 4000) -> World:
    """Train, serve, create accounts, score one batch per platform (alpha, beta)."""
    env = _environment(root)
    (root / "fast.toml").write_text(FAST_TOML)
    knockoff(env, "generate", "--listings", str(listings), "--seed", "5", "--days", "150",
             "--out", str(root / "catalog.parquet"))
    knockoff(env, "train", "--catalog", str(root / "catalog.parquet"), "--config",
             str(root / "fast.toml"))
    db = f"sqlite:///{root / 'knockoff.db'}"
    keys = {name: json.loads(knockoff(env, "platforms", "add", name, "--db", db))["api_key"]
            for name in ("alpha", "beta")}
    for user, role in USERS.items():
        knockoff(env, "users", "add", user, "--role", role, "--db", db, stdin=password(user))
    url, proc = _serve(env, db, root / "data", root / "serve.log")
    world = World(url, db, root / "data", env, keys, proc, root / "serve.log")
    for seed, platform in ((99, "alpha"), (98, "beta")):
        path = root / f"{platform}.parquet"
        knockoff(env, "generate", "--listings", str(batch), "--seed", str(seed), "--days", "60",
                 "--id-prefix", platform[0].upper(), "--out", str(path))
        _score(world, platform, path)
    return world
