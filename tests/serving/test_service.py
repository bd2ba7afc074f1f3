"""The platform service end to end: a real `knockoff serve` in a subprocess on 127.0.0.1 with a
temp SQLite database, data folder and MLflow store holding a small trained champion; httpx
as the platform. Nothing is mocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serving import store
from tests.serving.conftest import free_port

PARQUET = {"Content-Type": "application/vnd.apache.parquet"}
FAST_TOML = "num_boost_round = 60\nearly_stopping_rounds = 20\nthreads = 1\nvalid_days = 40\n"


def knockoff(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run the command line; its last stdout line (the JSON summary)."""
    done = subprocess.run([sys.executable, "-m", "knockoff", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


class Server:
    """`knockoff serve` in a subprocess; `kill` is kill -9 by pid."""

    def __init__(self, env: dict[str, str], db: str, data: Path, workers: int = 1,
                 **settings_env: str) -> None:
        self.env = {**env, **settings_env}
        self.db, self.data, self.workers = db, data, workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.data.parent / f"serve-{port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "knockoff", "serve", "--port", str(port), "--db",
                 self.db, "--data", str(self.data), "--workers", str(self.workers)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A temp MLflow store holding a small trained model as champion."""
    root = tmp_path_factory.mktemp("service")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "POLARS_MAX_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "KNOCKOFF_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1",
           "KNOCKOFF_POLL_SECONDS": "0.2"}
    (root / "fast.toml").write_text(FAST_TOML)
    catalog = root / "catalog.parquet"
    knockoff(env, "generate", "--listings", "30000", "--seed", "5", "--days", "150",
             "--out", str(catalog))
    knockoff(env, "train", "--catalog", str(catalog), "--config", str(root / "fast.toml"))
    return env


@pytest.fixture(scope="module")
def batch_file(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A later catalog as a platform sends it, with three bad rows (price <= 0)."""
    folder = tmp_path_factory.mktemp("batch")
    knockoff(env, "generate", "--listings", "6000", "--seed", "99", "--days", "60",
             "--out", str(folder / "raw.parquet"))
    raw = pl.read_parquet(folder / "raw.parquet")
    bad = pl.int_range(pl.len()).is_in([10, 200, 3000])
    raw.with_columns(price=pl.when(bad).then(-1.0).otherwise(pl.col("price"))).write_parquet(
        folder / "batch.parquet")
    return folder / "batch.parquet"


@pytest.fixture(scope="module")
def service(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    server = Server(env, f"sqlite:///{root / 'knockoff.db'}", root / "data",
                    KNOCKOFF_UPLOAD_LIMIT=str(2_000_000))
    yield server.start()
    server.kill()


@pytest.fixture(scope="module")
def keys(env: dict[str, str], service: Server) -> dict[str, str]:
    import json

    return {name: json.loads(knockoff(env, "platforms", "add", name, "--db", service.db))[
        "api_key"] for name in ("alpha", "beta")}


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def submit(server: Server, key: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/batches", content=body, timeout=120,
                      headers=auth(key, **(PARQUET | headers)))


def wait_done(server: Server, key: str, batch_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = httpx.get(f"{server.url}/v1/batches/{batch_id}", headers=auth(key)).json()
        if batch["status"] in ("done", "failed"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not done: {batch}")


@pytest.fixture(scope="module")
def done_batch(service: Server, keys: dict[str, str], batch_file: Path) -> dict[str, Any]:
    answer = submit(service, keys["alpha"], batch_file.read_bytes())
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"] == f"/v1/batches/{answer.json()['batch_id']}"
    assert answer.json()["status"] == "queued"
    return wait_done(service, keys["alpha"], answer.json()["batch_id"])


def test_a_platform_submits_a_batch_and_gets_the_clis_scores(
        service: Server, keys: dict[str, str], done_batch: dict[str, Any], batch_file: Path,
        env: dict[str, str], tmp_path: Path) -> None:
    expected = tmp_path / "cli.parquet"
    knockoff(env, "score", str(batch_file), "--out", str(expected))
    cli = pl.read_parquet(expected)
    assert done_batch["status"] == "done" and done_batch["error"] is None
    assert (done_batch["rows"], done_batch["scored"], done_batch["rejected"]) == (6000, 5997, 3)
    assert done_batch["flagged"] == cli["flagged"].sum() > 0
    assert done_batch["model_version"] == "knockoff/1" == cli["model_version"][0]
    base, key = f"{service.url}/v1/batches/{done_batch['batch_id']}", keys["alpha"]
    scores = httpx.get(f"{base}/scores", headers=auth(key))
    assert scores.headers["content-type"] == PARQUET["Content-Type"]
    (tmp_path / "api.parquet").write_bytes(scores.content)
    assert_frame_equal(pl.read_parquet(tmp_path / "api.parquet"), cli)
    csv = httpx.get(f"{base}/scores", params={"format": "csv"}, headers=auth(key))
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "listing_id,seller_id,score,flagged,reasons,model_version"
    assert len(csv.text.splitlines()) == 5998
    rejects = httpx.get(f"{base}/rejects", params={"format": "csv"}, headers=auth(key)).text
    assert rejects.count("price must be > 0") == 3
    listed = httpx.get(f"{service.url}/v1/batches", headers=auth(key)).json()
    assert done_batch["batch_id"] in [b["batch_id"] for b in listed["items"]]
    health = httpx.get(f"{service.url}/health").json()
    assert health == {"status": "ok", "model_version": "knockoff/1", "queued": 0}


def test_cases_are_the_flags_plus_an_audit_sample(
        service: Server, done_batch: dict[str, Any]) -> None:
    engine = store.connect(service.db)
    alpha = store.platform_named(engine, "alpha")
    counts = store.count_cases(engine, alpha, done_batch["batch_id"])
    assert counts["flag"] == done_batch["flagged"] and counts["duplicates"] == 0
    unflagged = done_batch["scored"] - done_batch["flagged"]
    assert 0 < counts["audit"] < 0.02 * unflagged  # ~0.5%, seeded
    with engine.connect() as conn:
        snapshot = conn.execute(store.cases.select().where(
            store.cases.c.batch_id == done_batch["batch_id"], store.cases.c.kind == "flag")
        ).mappings().first()
    assert snapshot["title"] and snapshot["price"] > 0 and snapshot["reasons"]


def test_another_platforms_ids_answer_404(service: Server, keys: dict[str, str],
                                          done_batch: dict[str, Any]) -> None:
    base = f"{service.url}/v1/batches/{done_batch['batch_id']}"
    for path in ("", "/scores", "/rejects", "/scores?format=csv"):
        theirs = httpx.get(f"{base}{path}", headers=auth(keys["beta"]))
        unknown = httpx.get(f"{service.url}/v1/batches/{'0' * 32}{path}",
                            headers=auth(keys["beta"]))
        assert theirs.status_code == unknown.status_code == 404, path
        assert theirs.json()["detail"].startswith("no batch")
    listed = httpx.get(f"{service.url}/v1/batches", headers=auth(keys["beta"])).json()
    assert done_batch["batch_id"] not in [b["batch_id"] for b in listed["items"]]
    notices = httpx.get(f"{service.url}/v1/notices", headers=auth(keys["beta"]))
    assert notices.json() == {"items": [], "next": None}


def test_a_retry_with_the_same_idempotency_key_gets_the_same_batch(
        service: Server, keys: dict[str, str], batch_file: Path) -> None:
    body = batch_file.read_bytes()
    first = submit(service, keys["beta"], body, **{"Idempotency-Key": "order-1"})
    retry = submit(service, keys["beta"], body, **{"Idempotency-Key": "order-1"})
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json()["batch_id"] == first.json()["batch_id"]
    assert retry.headers["Location"] == first.headers["Location"]
    other = pl.read_parquet(batch_file).head(100)
    other.write_parquet(batch_file.with_name("other.parquet"))
    conflict = submit(service, keys["beta"], batch_file.with_name("other.parquet").read_bytes(),
                      **{"Idempotency-Key": "order-1"})
    assert conflict.status_code == 409 and "Idempotency-Key" in conflict.json()["detail"]
    wait_done(service, keys["beta"], first.json()["batch_id"])


def test_bad_requests_get_clear_4xx_answers(service: Server, keys: dict[str, str],
                                             batch_file: Path) -> None:
    key, url = keys["alpha"], f"{service.url}/v1/batches"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=auth("ko_not-a-key")).status_code == 401
    assert httpx.get(url, headers=auth("ko_x")).headers["www-authenticate"] == "Bearer"
    wrong_type = httpx.post(url, content=b"a,b\n", headers=auth(key, **{"Content-Type":
                                                                         "text/plain"}))
    assert wrong_type.status_code == 415
    no_price = pl.read_parquet(batch_file).head(50).drop("price", "image_hashes").write_csv()
    missing = httpx.post(url, content=no_price.encode(), headers=auth(key, **{"Content-Type":
                                                                              "text/csv"}))
    assert missing.status_code == 422
    assert missing.json() == {"detail": "upload.csv: missing required column(s) price"}
    corrupt = submit(service, key, b"PAR1 this is not parquet")
    assert corrupt.status_code == 422 and corrupt.json()["detail"].startswith("upload.parquet:")
    too_big = submit(service, key, b"x" * 2_500_000)
    assert too_big.status_code == 413
    streamed = httpx.post(url, content=iter([b"y" * 500_000] * 5), headers=auth(key, **PARQUET))
    assert streamed.status_code == 413  # chunked, no Content-Length: counted while streaming
    left = [p for p in (service.data / "batches").iterdir()]
    assert len(left) == len(httpx.get(url, headers=auth(key)).json()["items"]) + len(
        httpx.get(url, headers=auth(keys["beta"])).json()["items"])  # refused uploads deleted


def test_a_full_queue_answers_429_and_results_409_until_done(
        env: dict[str, str], tmp_path: Path, batch_file: Path) -> None:
    import json

    db = f"sqlite:///{tmp_path / 'knockoff.db'}"
    key = json.loads(knockoff(env, "platforms", "add", "gamma", "--db", db))["api_key"]
    server = Server(env, db, tmp_path / "data", workers=0, KNOCKOFF_MAX_QUEUED="2").start()
    try:
        body = pl.read_parquet(batch_file).head(200)
        ids = []
        for n in range(2):
            answer = submit(server, key, _parquet(body.head(100 + n)))
            assert answer.status_code == 202
            ids.append(answer.json()["batch_id"])
        full = submit(server, key, _parquet(body))
        assert full.status_code == 429 and "limit 2" in full.json()["detail"]
        assert httpx.get(f"{server.url}/health").json()["queued"] == 2
        early = httpx.get(f"{server.url}/v1/batches/{ids[0]}/scores", headers=auth(key))
        assert early.status_code == 409 and "queued" in early.json()["detail"]
    finally:
        server.kill()


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def test_a_server_killed_mid_scoring_loses_nothing(env: dict[str, str], tmp_path: Path) -> None:
    import json

    big = tmp_path / "big.parquet"
    knockoff(env, "generate", "--listings", "200000", "--seed", "11", "--days", "60",
             "--out", str(big))
    expected = json.loads(knockoff(env, "score", str(big), "--out", str(tmp_path / "cli.parquet")))
    db, data = f"sqlite:///{tmp_path / 'knockoff.db'}", tmp_path / "data"
    key = json.loads(knockoff(env, "platforms", "add", "delta", "--db", db))["api_key"]
    server = Server(env, db, data, KNOCKOFF_LEASE_SECONDS="3").start()
    try:
        batch_id = submit(server, key, big.read_bytes()).json()["batch_id"]
        status_url = f"{server.url}/v1/batches/{batch_id}"
        while httpx.get(status_url, headers=auth(key)).json()["status"] == "queued":
            time.sleep(0.05)
        time.sleep(0.5)
        server.kill()  # kill -9 while it scores
        engine = store.connect(db)
        delta = store.platform_named(engine, "delta")
        assert store.get_batch(engine, delta, batch_id).status == "scoring"
        server.start()  # the lease expires, the batch is scored again
        batch = wait_done(server, key, batch_id)
    finally:
        server.kill()
    assert batch["status"] == "done", batch
    assert [batch[k] for k in ("rows", "scored", "rejected", "flagged")] == [
        expected[k] for k in ("rows", "scored", "rejected", "flagged")]
    counts = store.count_cases(engine, delta, batch_id)
    assert counts["flag"] == expected["flagged"] and counts["duplicates"] == 0
    files = sorted(p.name for p in (data / "batches" / batch_id).iterdir())
    assert files == ["scores.parquet", "scores.rejects.parquet", "upload.parquet"]
    with engine.connect() as conn:
        claims = conn.execute(store.audit_log.select().where(
            store.audit_log.c.entity_id == batch_id, store.audit_log.c.action == "batch.claim")
        ).all()
    assert len(claims) == 2


def test_the_api_answers_as_its_schema_says_and_never_500(service: Server,
                                                          keys: dict[str, str]) -> None:
    """schemathesis against /openapi.json with a valid key: a few examples per operation."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    platform_api = ("/health", "/v1/batches", "/v1/notices")  # the officers' routes: their tests
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if op.path.startswith(platform_api)]
    assert len(operations) == 7

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Any) -> None:
            # a catalog's validity is not expressible in the schema (any bytes are "valid"),
            # so random uploads may be refused with 422: that one check is left out for them
            upload = case.method == "POST"
            case.call_and_validate(headers=auth(keys["alpha"]),
                                   excluded_checks=[positive_data_acceptance] if upload else [])

        answers_as_documented()


def test_a_whole_batch_error_found_while_scoring_fails_the_batch(
        service: Server, keys: dict[str, str], batch_file: Path) -> None:
    frame = pl.read_parquet(batch_file).head(300).with_columns(price=pl.lit(True))
    answer = submit(service, keys["alpha"], _parquet(frame))  # the schema check passes it
    assert answer.status_code == 202
    failed = wait_done(service, keys["alpha"], answer.json()["batch_id"])
    assert failed["status"] == "failed" and failed["finished_at"] is not None
    assert failed["error"].startswith("upload.parquet:") and "price" in failed["error"]
    assert "/batches/" not in failed["error"]  # no server paths
    scores = httpx.get(f"{service.url}/v1/batches/{failed['batch_id']}/scores",
                       headers=auth(keys["alpha"]))
    assert scores.status_code == 409 and "failed" in scores.json()["detail"]


def test_accounts_from_the_command_line(env: dict[str, str], service: Server,
                                        keys: dict[str, str]) -> None:
    import json

    db = ["--db", service.db]
    added = json.loads(knockoff(env, "users", "add", "olga", "--role", "officer", *db,
                                stdin="correct horse battery\n"))
    assert added == {"user": "olga", "role": "officer"}
    engine = store.connect(service.db)
    assert store.verify_user(engine, "olga", "correct horse battery")["role"] == "officer"
    json.loads(knockoff(env, "users", "disable", "olga", *db))
    users = json.loads(knockoff(env, "users", "list", *db))["users"]
    assert [(u["user"], u["disabled"]) for u in users] == [("olga", True)]
    key = json.loads(knockoff(env, "platforms", "add", "epsilon", *db))["api_key"]
    assert httpx.get(f"{service.url}/v1/batches", headers=auth(key)).status_code == 200
    assert json.loads(knockoff(env, "platforms", "revoke", "epsilon", *db))["revoked"] is True
    assert httpx.get(f"{service.url}/v1/batches", headers=auth(key)).status_code == 401
    listed = json.loads(knockoff(env, "platforms", "list", *db))["platforms"]
    assert {p["platform"]: p["revoked"] for p in listed}["epsilon"] is True
    assert all(key not in json.dumps(p) for p in listed)
