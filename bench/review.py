"""Officers' console benchmark: server time of the pages with `--cases` cases in the database.

Seeds a database (a temp SQLite file, or `--db URL`, e.g. a PostgreSQL database) with
`--cases` open cases over 2 platforms, 20,000 sellers and 40 brands, starts `knockoff serve
--workers 0` on 127.0.0.1, logs in as an officer and times `--requests` requests of each:
the queue page (first page, and a page 500,000 cases deep by its keyset cursor), the JSON
queue, a case page (random cases), and a decision (`POST /v1/cases/{id}/decision` on distinct
open cases). Times are wall time per request on the loopback from a client in this process;
p50/p95 in milliseconds (aim p95 < 300 ms). Case pages here have no batch files, so the photo
and price-level lookups of a real batch are not included.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/review.py [--cases 1000000] \
        [--requests 200] [--db URL]

The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from serving import store

BRANDS = [f"Brand{i:02d}" for i in range(40)]
CATEGORIES = ["Watches", "Bags", "Shoes", "Perfume", "Electronics"]
REASONS = ["shown discount of 79% off the list price", "seller account 42 days old",
           "60% of the seller's listings are priced far below their brand"]


def seed(url: str, n: int, chunk: int = 50_000) -> None:
    engine = store.connect(url)
    for name in ("alpha", "beta"):
        store.add_platform(engine, name, "bench")
    store.add_user(engine, "officer", "officer", "bench-password", "bench")
    rng = random.Random(0)
    at = store.now()
    started = time.perf_counter()
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(start + chunk, n)):
            brand = rng.choice(BRANDS)
            rows.append({
                "platform_id": 1 + i % 2, "batch_id": f"{i // 200_000:032x}",
                "listing_id": f"L{i:09d}", "seller_id": f"S{rng.randrange(20_000):07d}",
                "title": f"{brand} item {i}", "brand": brand,
                "category": rng.choice(CATEGORIES), "price": round(rng.uniform(5, 900), 2),
                "list_price": None, "currency": "EUR", "listed_at": at,
                "image_hashes": [f"{rng.getrandbits(64):016x}"],
                "seller_contact_hash": f"{rng.randrange(15_000):016x}",
                "score": rng.betavariate(5, 2), "reasons": REASONS,
                "model_version": "knockoff/1", "kind": "audit" if i % 100 == 0 else "flag",
                "status": "open", "created_at": at})
        with engine.begin() as conn:
            conn.execute(store.cases.insert(), rows)
    print(f"seeded {n:,} cases in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def deep_cursor(url: str, depth: int) -> str:
    engine = store.connect(url)
    c = store.cases.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(c.score, c.id).where(c.status == "open", c.kind == "flag")
                           .order_by(c.score.desc(), c.id).offset(depth).limit(1)).one()
    return f"{row.score!r}_{row.id}"


def serve(url: str, folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "knockoff", "serve", "--port", str(port),
                             "--db", url, "--data", str(folder / "data"), "--workers", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/health", timeout=2)
            return base, proc
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def timed(label: str, count: int, request: Callable[[int], httpx.Response]
          ) -> dict[str, float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        answer = request(i)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code < 400, (label, answer.status_code, answer.text[:300])
    times.sort()
    figures = {"p50_ms": round(statistics.median(times), 1),
               "p95_ms": round(times[int(0.95 * len(times)) - 1], 1)}
    print(f"{label:28s} p50 {figures['p50_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f} ms",
          file=sys.stderr)
    return figures


def measure(base: str, cursor: str, n_cases: int, count: int) -> dict[str, dict[str, float]]:
    client = httpx.Client(base_url=base, timeout=60)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    client.post("/login", data={"user": "officer", "password": "bench-password",
                                "csrf_token": token})
    bearer = httpx.post(f"{base}/v1/auth/token", json={"user": "officer",
                                                       "password": "bench-password"})
    api = httpx.Client(base_url=base, timeout=60, headers={
        "Authorization": f"Bearer {bearer.json()['access_token']}"})
    rng = random.Random(1)
    picks = rng.sample(range(1, n_cases + 1), 2 * count)
    verdict = {"verdict": "genuine", "reason_code": "authentic_goods", "note": ""}
    return {
        "queue_first_page": timed("queue page, first", count,
                                  lambda i: client.get("/review/queue")),
        "queue_deep_page": timed("queue page, 500k deep", count,
                                 lambda i: client.get("/review/queue", params={"after": cursor})),
        "cases_json_first_page": timed("GET /v1/cases", count,
                                       lambda i: api.get("/v1/cases")),
        "case_page": timed("case page", count,
                           lambda i: client.get(f"/review/cases/{picks[i]}")),
        "decision": timed("decision (POST)", count, lambda i: api.post(
            f"/v1/cases/{picks[count + i]}/decision", json=verdict)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", help="database URL (default: a temp SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="knockoff-bench-review-") as tmp:
        folder = Path(tmp)
        url = args.db or f"sqlite:///{folder / 'knockoff.db'}"
        seed(url, args.cases)
        cursor = deep_cursor(url, min(500_000, args.cases // 2))
        base, proc = serve(url, folder)
        try:
            figures = measure(base, cursor, args.cases, args.requests)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps({"cases": args.cases, "requests": args.requests,
                      "database": sa.make_url(url).get_backend_name(), **figures}))


if __name__ == "__main__":
    main()
