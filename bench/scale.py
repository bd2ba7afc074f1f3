"""Scale benchmark: `knockoff score` with the local engine against the Dask engine (2 worker
processes x 1 thread on this machine), and a projection to 10 billion listings.

For each `--rows` size (a catalog `catalog_<rows>.parquet` in `--data`, generated with
`knockoff generate --seed 0` if missing, shared with bench/score.py):

- local: `knockoff score` in a fresh subprocess (2 onnxruntime threads, POLARS_MAX_THREADS=2):
  wall time and peak RSS;
- dask: `serving.distributed.score_catalog_dask` on a fresh LocalCluster of two one-thread
  workers (the same two cores): wall time, each worker's peak RSS (the largest of the worker
  process's own ru_maxrss and its children's, read inside the worker), and the bytes shuffled
  per input row: the Parquet files of the shuffle (partial aggregates, ids and the aggregate
  rows routed back, as written) plus what the workers sent each other through Dask (duplicate
  ids, edges, the bundle); the two outputs are checked to agree (row counts, flags, sum of
  scores);
- the seller network's edge list (contacts and main images shared by 2 to 25 sellers), its
  size per listing, and the peak memory of one `forest` (connected components) over all of it.

Then the projection for 10B listings on 100 workers x 16 cores, from the largest size measured;
every assumption is printed next to the figure. Run from the repo root:

    OMP_WAIT_POLICY=PASSIVE ORT_DISABLE_TELEMETRY=1 MLFLOW_DISABLE_TELEMETRY=true \\
        POLARS_MAX_THREADS=2 .venv/bin/python bench/scale.py [--rows 10000000,40000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# run by path, bench/ comes first on sys.path and bench/features.py would shadow the package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]
KNOCKOFF = ROOT / ".venv" / "bin" / "knockoff"
TARGET = {"listings": 10_000_000_000, "workers": 100, "cores": 16}
NETWORK_GBPS_PER_WORKER = 10.0  # assumed NIC per worker (each byte shuffled crosses once)
SCHEDULER_TASKS_PER_SECOND = 4_000  # Dask's documented order of magnitude (~200 us a task)
SECONDS_PER_PIECE = 0.005  # assumed: open a shuffle file, read its footer and one row group
BYTES_PER_EDGE_IN_MEMORY = 120  # used when the measured growth is too small to tell


def _ensure_catalog(data: Path, rows: int) -> Path:
    catalog = data / f"catalog_{rows}.parquet"
    if not catalog.exists():
        subprocess.run([str(KNOCKOFF), "generate", "--listings", str(rows), "--seed", "0",
                        "--out", str(catalog)], check=True, stdout=subprocess.DEVNULL)
    return catalog


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def run_local(catalog: Path, out: Path, bundle: str) -> dict[str, Any]:
    """`knockoff score` in a child process; peak RSS from the kernel's accounting of it."""
    started, load = time.perf_counter(), _load()
    code = ("import resource, sys; from knockoff.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "score", str(catalog), "--out",
                           str(out), "--model", bundle, "--threads", "2"],
                          check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(int(done.stderr.strip().splitlines()[-1]) / 2**20, 2),
            "scored": summary["scored"], "flagged": summary["flagged"], "load_before": load}


def _worker_stats(dask_worker: Any) -> dict[str, int]:
    peak = max(resource.getrusage(who).ru_maxrss
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"peak_rss_kb": peak, "sent_bytes": int(dask_worker.transfer_outgoing_bytes_total)}


def run_dask(catalog: Path, out: Path, bundle: str, partition_rows: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from features.cluster import WORKER_ENV
    from serving.distributed import score_catalog_dask

    with LocalCluster(host="127.0.0.1", processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=":0", env=WORKER_ENV) as cluster, \
            Client(cluster) as client:
        started, load = time.perf_counter(), _load()
        summary = score_catalog_dask(catalog, out, model=bundle,
                                     scheduler=cluster.scheduler_address,
                                     partition_rows=partition_rows)
        seconds = time.perf_counter() - started
        stats = client.run(_worker_stats)
    rows = int(summary["rows"])  # type: ignore[call-overload]
    sent = sum(s["sent_bytes"] for s in stats.values())
    files = int(summary["shuffle_bytes"])  # type: ignore[call-overload]
    return {"seconds": round(seconds, 1), "load_before": load,
            "partitions": summary["partitions"], "scored": summary["scored"],
            "flagged": summary["flagged"],
            "peak_rss_gb_per_worker": [round(s["peak_rss_kb"] / 2**20, 2)
                                       for s in stats.values()],
            "shuffle_file_bytes_per_row": round(files / rows, 1),
            "bytes_between_workers_per_row": round(sent / rows, 1),
            "bytes_shuffled_per_row": round((files + sent) / rows, 1)}


def agree(local_out: Path, dask_out: Path) -> dict[str, Any]:
    """The two engines' outputs: same rows and flags, same sum of scores."""
    def totals(lf: pl.LazyFrame) -> tuple[int, int, float]:
        row = lf.select(pl.len(), pl.col("flagged").sum(), pl.col("score").sum()).collect()
        return int(row[0, 0]), int(row[0, 1]), float(row[0, 2])

    a, b = totals(pl.scan_parquet(local_out)), totals(pl.scan_parquet(dask_out / "*.parquet"))
    return {"same_rows_and_flags": a[:2] == b[:2], "score_sum_diff": abs(a[2] - b[2])}


def network_edges(catalog: Path, data: Path, max_image_sellers: int = 25) -> dict[str, Any]:
    """The seller network's edge list as the engines build it (written to `data`), and the
    peak memory growth of one `forest` over all of it, in a fresh process (the edges only)."""
    edges_file = data / f"edges_{catalog.stem}.parquet"
    build = f"""
import polars as pl
lf = pl.scan_parquet({str(catalog)!r}).select("seller_id", "seller_contact_hash",
    pl.col("image_hashes").list.first().alias("img"))
def edges(col, kind, most):
    pairs = lf.select("seller_id", pl.format(kind + ":{{}}", col).alias("node")).drop_nulls()
    shared = pairs.unique().group_by("node").len().filter(pl.col("len").is_between(2, most))
    return pairs.unique().join(shared, on="node", how="semi")
pl.concat([edges("seller_contact_hash", "c", 10**12),
           edges("img", "i", {max_image_sellers})]).sink_parquet({str(edges_file)!r})
"""
    subprocess.run([sys.executable, "-c", build], check=True)
    measure = f"""
import resource, time, polars as pl
from features.distributed import forest
e = pl.read_parquet({str(edges_file)!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); f = forest([e]); t = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(e.height, f.height, round(t, 2), after - before)
"""
    out = subprocess.run([sys.executable, "-c", measure], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout.split()
    edges, sellers, seconds, grew_kb = (float(x) for x in out)
    return {"edges": int(edges), "linked_sellers": int(sellers),
            "forest_seconds": seconds, "forest_peak_growth_mb": round(grew_kb / 1024, 1),
            "forest_bytes_per_edge": round(grew_kb * 1024 / max(edges, 1))}


def projection(rows: int, dask: dict[str, Any], net: dict[str, Any],
               partition_rows: int) -> dict[str, Any]:
    """Wall time for TARGET from this run's per-core throughput and shuffle volume."""
    from features.shuffle import BUCKET_ROWS, bucket_count

    n, workers, cores = TARGET["listings"], TARGET["workers"], TARGET["cores"]
    per_core = rows / (dask["seconds"] * 2)  # rows per second per core, overheads included
    compute = n / (per_core * workers * cores)
    # shuffle files are written once and read once, both over the network on a shared store
    shuffled = (2 * dask["shuffle_file_bytes_per_row"]
                + dask["bytes_between_workers_per_row"] * 2 * (workers - 1) / workers) * n
    network = shuffled / (workers * NETWORK_GBPS_PER_WORKER / 8 * 1e9)
    parts, buckets = n // partition_rows, bucket_count(workers, n)
    tasks = parts * 3 + buckets * 6  # ids, partials, score; 4 reducers and 2 getitems a bucket
    scheduler = tasks / SCHEDULER_TASKS_PER_SECOND
    pieces = parts * buckets * 7  # read: ids and 3 partials by reducers, 3 routed by partitions
    piece_reads = pieces * SECONDS_PER_PIECE / (workers * cores)
    edges, linked = net["edges"] / rows * n, net["linked_sellers"] / rows * n
    # a bucket's forest holds its edges; the last forests of the tree one row per linked seller
    largest_forest = max(edges / buckets, linked)
    measured = net["forest_bytes_per_edge"]
    per_edge = measured if measured > 10 else BYTES_PER_EDGE_IN_MEMORY
    return {
        "per_core_rows_per_second": round(per_core),
        "compute_hours": round(compute / 3600, 2),
        "shuffle_tb": round(shuffled / 1e12, 2), "network_hours": round(network / 3600, 2),
        "tasks": tasks, "scheduler_hours": round(scheduler / 3600, 2),
        "shuffle_pieces": pieces, "piece_read_hours": round(piece_reads / 3600, 2),
        "total_hours_if_not_overlapped": round(
            (compute + network + scheduler + piece_reads) / 3600, 2),
        "edges_at_target": int(edges), "linked_sellers_at_target": int(linked),
        "bytes_per_edge": round(per_edge),
        "largest_forest_memory_gb": round(largest_forest * per_edge / 1e9, 1),
        "edges_one_worker_of_64gb_could_hold": int(32e9 / per_edge),
        "assumptions": [
            f"per-core throughput as measured here ({round(per_core)} rows/s/core, shared "
            "2-core machine) holds on a 16-core worker running 16 one-thread tasks",
            f"{NETWORK_GBPS_PER_WORKER:g} Gbit/s per worker; the shuffle's files on a shared "
            "store (each byte written and read once over the network), not overlapped with "
            "compute (pessimistic)",
            f"{partition_rows:,} rows per partition, {buckets} buckets (at most "
            f"{BUCKET_ROWS:,} input rows each), ~{SCHEDULER_TASKS_PER_SECOND} tasks/s on one "
            f"Dask scheduler, {SECONDS_PER_PIECE * 1000:g} ms to read one piece (a row group "
            "of a shuffle file) spread over every core",
            "edges grow linearly with listings (same seller mix, contact and photo sharing)",
            f"~{round(per_edge)} bytes per edge or linked seller for a forest on one worker "
            "(peak growth measured here, else a default), half of a 64 GB worker for it",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000000", help="comma-separated catalog sizes")
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--bundle", default=str(ROOT / "tests" / "data" / "golden" / "bundle"))
    parser.add_argument("--partition-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-local", action="store_true",
                        help="dask engine only (the local figures of an earlier run stand)")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for rows in (int(r) for r in args.rows.split(",")):
        catalog = _ensure_catalog(args.data, rows)
        local_out, dask_out = args.data / f"scale_local_{rows}.parquet", \
            args.data / f"scale_dask_{rows}"
        local = None if args.skip_local else run_local(catalog, local_out, args.bundle)
        dask = run_dask(catalog, dask_out, args.bundle, args.partition_rows)
        net = network_edges(catalog, args.data)
        results[str(rows)] = {"local": local, "dask": dask, "network": net}
        if local is not None:
            results[str(rows)] |= {"agree": agree(local_out, dask_out),
                                   "dask_over_local_wall": round(dask["seconds"]
                                                                 / local["seconds"], 2)}
        print(json.dumps({rows: results[str(rows)]}), flush=True)
    largest = max(results, key=int)
    print(json.dumps({"projection_10B": projection(int(largest), results[largest]["dask"],
                                                   results[largest]["network"],
                                                   args.partition_rows)}, indent=1))


if __name__ == "__main__":
    main()
