"""Service benchmark: the platform API against the command line, on the same machine and run.

Sections (all in one temp folder, with a temp MLflow store whose champion is trained here):

1. api       one `--listings` batch submitted over HTTP and scored by `knockoff serve`'s worker
             vs `knockoff score` on the same file: rows/s of each (submit -> done for the API,
             upload and validation included) and their ratio (aim >= 0.85).
2. upload    a ~`--upload-gb` GB CSV (copies of the batch with distinct ids) streamed to an
             API-only server: its RSS growth, sampled every 0.1 s, until the 202 (aim < 300 MB).
3. poll      `--clients` concurrent clients polling one batch's status for `--poll-seconds` s
             while a `--listings` batch is scored: p50/p99 latency (aim p99 < 50 ms), with
             serve's worker as a thread in its process (the old way, KNOCKOFF_WORKER_THREADS=1),
             as its niced child process (the default) and with no worker (the floor), back to
             back; threads / processes ratios, the load average while polling and the seconds
             per scored batch (two are queued, so scoring lasts the whole window).
4. fleet     `--platforms` platforms x `--batches` batches of `--batch-rows` listings submitted
             at once to a server with 2 workers: all done, counts exact, batches/min; on SQLite
             and on a throwaway PostgreSQL cluster (Debian's binaries).

Run from the repo root (the last stdout line is one JSON object with every figure):

    OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=2 .venv/bin/python bench/service.py \
        [--sections api,upload,poll,fleet] [--listings 1000000] [--upload-gb 2]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psutil

PARQUET = "application/vnd.apache.parquet"


def knockoff(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "knockoff", *args], env=env, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"knockoff {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(env: dict[str, str], db: str, data: Path, workers: int) -> Iterator[tuple[str, int]]:
    """`knockoff serve` in a subprocess; yields (url, pid); kill -9 by pid afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data.parent / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "knockoff", "serve", "--port", str(port),
                             "--db", db, "--data", str(data), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def submit(url: str, key: str, path: Path, media: str = PARQUET) -> str:
    with path.open("rb") as body:
        answer = httpx.post(f"{url}/v1/batches", content=body, timeout=3600,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": media})
    if answer.status_code != 202:
        raise SystemExit(f"submit {path}: {answer.status_code} {answer.text}")
    return str(answer.json()["batch_id"])


def wait_done(url: str, key: str, batch_id: str) -> dict[str, Any]:
    while True:
        batch = httpx.get(f"{url}/v1/batches/{batch_id}", timeout=30,
                          headers={"Authorization": f"Bearer {key}"}).json()
        if batch["status"] in ("done", "failed"):
            return dict(batch)
        time.sleep(0.1)


def prepare(root: Path, listings: int) -> tuple[dict[str, str], Path]:
    """A champion trained on 200k listings, and a later `listings` batch."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "POLARS_MAX_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
           "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1",
           "KNOCKOFF_POLL_SECONDS": "0.2"}
    knockoff(env, "generate", "--listings", "200000", "--seed", "7", "--out",
             str(root / "train.parquet"))
    knockoff(env, "train", "--catalog", str(root / "train.parquet"))
    batch = root / "batch.parquet"
    knockoff(env, "generate", "--listings", str(listings), "--seed", "8", "--start",
             "2026-07-01", "--days", "120", "--id-prefix", "b", "--out", str(batch))
    return env, batch


def bench_api(env: dict[str, str], root: Path, batch: Path) -> dict[str, Any]:
    started = time.perf_counter()
    cli = knockoff(env, "score", str(batch), "--out", str(root / "cli.parquet"))
    cli_seconds = time.perf_counter() - started
    db = f"sqlite:///{root / 'api.db'}"
    key = knockoff(env, "platforms", "add", "bench", "--db", db)["api_key"]
    with serve(env, db, root / "api-data", workers=1) as (url, _pid):
        started = time.perf_counter()
        done = wait_done(url, key, submit(url, key, batch))
        api_seconds = time.perf_counter() - started
    assert done["scored"] == cli["scored"] and done["flagged"] == cli["flagged"], (done, cli)
    cli_rate, api_rate = cli["rows"] / cli_seconds, done["rows"] / api_seconds
    return {"rows": done["rows"], "cli_seconds": round(cli_seconds, 1),
            "api_seconds": round(api_seconds, 1), "cli_rows_per_s": round(cli_rate),
            "api_rows_per_s": round(api_rate), "ratio": round(api_rate / cli_rate, 3)}


def bench_upload(env: dict[str, str], root: Path, batch: Path, gigabytes: float
                 ) -> dict[str, Any]:
    big = root / "big.csv"
    frame = pl.read_parquet(batch).with_columns(pl.col("image_hashes").list.join("|"))
    with big.open("wb") as out:
        copy = 0
        while out.tell() < gigabytes * 1e9:
            frame.with_columns(pl.format("c{}_{}", pl.lit(copy), "listing_id").alias(
                "listing_id")).write_csv(out, include_header=copy == 0)
            copy += 1
    db = f"sqlite:///{root / 'upload.db'}"
    key = knockoff(env, "platforms", "add", "bench", "--db", db)["api_key"]
    with serve(env, db, root / "upload-data", workers=0) as (url, pid):
        server = psutil.Process(pid)
        base, peak, stop = server.memory_info().rss, [0], threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                peak[0] = max(peak[0], server.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        submit(url, key, big, "text/csv")
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    return {"bytes": big.stat().st_size, "rows": copy * frame.height,
            "seconds_to_202": round(seconds, 1), "rss_before_mb": round(base / 1e6),
            "rss_growth_mb": round((peak[0] - base) / 1e6)}


async def _poll(url: str, key: str, batch_id: str, seconds: float, clients: int,
                interval: float) -> tuple[list[float], int]:
    """The latencies of the answered requests, and how many got no answer (a dropped
    connection: counted, not timed)."""
    latencies: list[float] = []
    dropped = [0]
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        async def one(phase: float) -> None:
            await asyncio.sleep(phase)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    answer = await client.get(f"{url}/v1/batches/{batch_id}")
                except httpx.TransportError:
                    dropped[0] += 1
                    continue
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
                if interval:  # a client polling every `interval` s, not hammering
                    await asyncio.sleep(max(0.0, interval - latencies[-1]))

        # spread over the interval, as independent platforms are (not in lockstep)
        await asyncio.gather(*(one(i * interval / clients) for i in range(clients)))
    return latencies, dropped[0]


WORKER_MODES = {  # serve's environment and --workers in each mode of the poll section
    "threads": ({"KNOCKOFF_WORKER_THREADS": "1"}, 1),  # the old way: in serve's process
    "processes": ({}, 1),  # serve's default: a niced child process
    "api_only": ({}, 0),  # nothing scored: the floor the machine's load leaves
}


def bench_poll(env: dict[str, str], root: Path, batch: Path, seconds: float, clients: int,
               interval: float = 1.0) -> dict[str, Any]:
    """`clients` polling one batch's status every `interval` s (as a platform's client does),
    and with no pause at all (a saturation test), while another batch is being scored by a
    worker running as a thread of serve, then as its child process, then with no worker (the
    floor); back to back, in the reverse order for the second pace (against a changing load).
    The ratios are threads / processes."""
    watched = root / "watched.parquet"
    pl.read_parquet(batch).head(1000).write_parquet(watched)
    figures: dict[str, Any] = {}
    for pace, modes in ((interval, list(WORKER_MODES)), (0.0, list(WORKER_MODES)[::-1])):
        runs = {}
        for mode in modes:
            extra, workers = WORKER_MODES[mode]
            runs[mode] = _bench_poll({**env, **extra}, root / f"{mode}-{pace:g}", watched,
                                     batch, workers, (seconds, clients, pace))
            print("poll", pace, mode, runs[mode], file=sys.stderr, flush=True)
        figures[f"every_{pace:g}s" if pace else "no_pause"] = {
            **runs, **{f"{q}_ratio": round(runs["threads"][f"{q}_ms"]
                                           / runs["processes"][f"{q}_ms"], 2)
                       for q in ("p50", "p99")}}
    return figures


def _bench_poll(env: dict[str, str], root: Path, watched: Path, batch: Path, workers: int,
                polling: tuple[float, int, float]) -> dict[str, Any]:
    """Polling (seconds, clients, interval) while two `batch`es are scored one after the other
    (the window stays busy; with no worker they stay queued)."""
    root.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{root / 'poll.db'}"
    key = knockoff(env, "platforms", "add", "bench", "--db", db)["api_key"]
    with serve(env, db, root / "poll-data", workers=workers) as (url, _pid):
        watched_id = submit(url, key, watched)
        if workers:
            wait_done(url, key, watched_id)  # the worker is up and the model loaded
        started = time.perf_counter()
        scoring = [submit(url, key, batch) for _ in range(2)]  # scored while the clients poll
        while workers and _status(url, key, scoring[0]) == "queued":
            time.sleep(0.1)
        load = [os.getloadavg()[0]]
        latencies, dropped = asyncio.run(_poll(url, key, watched_id, *polling))
        load.append(os.getloadavg()[0])
        status = _status(url, key, scoring[1])
        for batch_id in scoring if workers else []:
            wait_done(url, key, batch_id)
        scoring_seconds = (time.perf_counter() - started) / 2 if workers else None
    ms = sorted(x * 1000 for x in latencies)
    return {"clients": polling[1], "requests": len(ms), "dropped": dropped,
            "requests_per_s": round(len(ms) / polling[0]),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "other_batch_status_at_end": status,
            "scoring_seconds_per_batch": scoring_seconds and round(scoring_seconds, 1),
            "load_1min_polling": [round(x, 2) for x in load]}


def _status(url: str, key: str, batch_id: str) -> str:
    return str(httpx.get(f"{url}/v1/batches/{batch_id}", timeout=30,
                         headers={"Authorization": f"Bearer {key}"}).json()["status"])


def bench_fleet(env: dict[str, str], root: Path, db: str, platforms: int, batches: int,
                rows: int) -> dict[str, Any]:
    files = []
    for i in range(batches):
        files.append(root / f"fleet-{i}.parquet")
        if not files[-1].exists():
            knockoff(env, "generate", "--listings", str(rows), "--seed", str(100 + i),
                     "--days", "60", "--id-prefix", f"f{i}", "--out", str(files[-1]))
    keys = [knockoff(env, "platforms", "add", f"p{n}", "--db", db)["api_key"]
            for n in range(platforms)]
    data = root / f"fleet-data-{db.split(':')[0]}"
    with serve({**env, "KNOCKOFF_MAX_QUEUED": str(batches)}, db, data, workers=2) as (url, _):
        started = time.perf_counter()
        with ThreadPoolExecutor(platforms) as pool:  # every platform at once
            submitted = list(pool.map(lambda job: (job[0], submit(url, *job)),
                                      [(key, path) for key in keys for path in files]))
        done = [wait_done(url, key, batch_id) for key, batch_id in submitted]
        seconds = time.perf_counter() - started
    exact = all(b["status"] == "done" and b["rows"] == b["scored"] + b["rejected"] == rows
                for b in done)
    return {"batches": len(done), "all_done_and_exact": exact, "seconds": round(seconds, 1),
            "batches_per_min": round(len(done) / seconds * 60, 2),
            "rows_per_s": round(len(done) * rows / seconds)}


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A throwaway cluster from /usr/lib/postgresql/*/bin (as `postgres` when run as root)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise SystemExit("PostgreSQL binaries missing: apt-get install -y postgresql")
    bin_dir, folder, port = Path(bins[-1]).parent, Path(tempfile.mkdtemp()), free_port()
    user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    ctl = [*user, str(bin_dir / "pg_ctl"), "-D", str(folder / "data")]
    subprocess.run([*user, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust",
                    "-U", "knockoff"], check=True, capture_output=True)
    subprocess.run([*ctl, "-l", str(folder / "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://knockoff@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], check=True, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="api,upload,poll,fleet")
    parser.add_argument("--listings", type=int, default=1_000_000)
    parser.add_argument("--upload-gb", type=float, default=2.0)
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--platforms", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    figures: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="knockoff-bench-") as tmp:
        root = Path(tmp)
        env, batch = prepare(root, args.listings)
        if "api" in sections:
            figures["api"] = bench_api(env, root, batch)
            print("api", figures["api"], file=sys.stderr, flush=True)
        if "upload" in sections:
            figures["upload"] = bench_upload(env, root, batch, args.upload_gb)
            print("upload", figures["upload"], file=sys.stderr, flush=True)
        if "poll" in sections:
            figures["poll"] = bench_poll(env, root, batch, args.poll_seconds, args.clients)
            print("poll", figures["poll"], file=sys.stderr, flush=True)
        if "fleet" in sections:
            fleet = (args.platforms, args.batches, args.batch_rows)
            figures["fleet_sqlite"] = bench_fleet(env, root, f"sqlite:///{root / 'f.db'}",
                                                  *fleet)
            print("fleet sqlite", figures["fleet_sqlite"], file=sys.stderr, flush=True)
            with postgres(root) as url:
                figures["fleet_postgresql"] = bench_fleet(env, root, url, *fleet)
            print("fleet postgresql", figures["fleet_postgresql"], file=sys.stderr, flush=True)
    figures["load_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
