"""Feature pipeline benchmark: time and peak memory of the Polars pipeline against its floors.

Measures, on synthetic catalogs from `synthetic.generate` (seed 0, kept in `--data`):

* fit         `fit_state` on the largest catalog (the state every measurement then loads);
* bare read   `scan_parquet(...).select(<columns the features use>).collect()`, the I/O floor;
* in-memory   `read_catalog` + `build_features(...).collect(engine="in-memory")`;
* streaming   the same, `.sink_parquet(..., engine="streaming")` to a scratch file;
* pandas      a plain pandas 3 implementation of the same 34 features and row validation
              (`bench/_pandas_features.py`), from the same saved state;
* parts       the in-memory pipeline split in one process: read_catalog materialised, then
              batch_aggregates, then build_features given those aggregates;
* streaming peak memory at every `--sizes` catalog, and the ratio between sizes.

Every measurement runs in a fresh subprocess; its peak RSS is the child's own high-water mark
(`VmHWM` in /proc/self/status: `ru_maxrss` of a child inherits the parent's peak across exec).
Times are `time.perf_counter` around the work only (interpreter start and imports excluded,
loading the saved state included), one repetition each; the CPU seconds of the timed block and
the load average are printed beside them, because the machine is shared. Before timing, a
correctness guard computes both feature tables on a `--check-rows` catalog and reports every
column where pandas and Polars disagree (NaN-aware, rtol 1e-4).

Run (from the repo root; the machine is shared, so keep the thread caps):

    OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=2 .venv/bin/python bench/features.py
    OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=2 .venv/bin/python bench/features.py --quick

It prints tables, then one JSON line with every figure as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# This script is itself called features.py: put the repo root first so that `features` is the
# project's package, and keep bench/ importable for the pandas reference.
sys.path[:] = [str(ROOT), str(BENCH)] + [
    p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)
]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("POLARS_MAX_THREADS", "2")

SEED = 0
GB = 1024**3
# contract columns the features never read (validation reads them, the features do not);
# `build_features` on a bare scan projects exactly the other 21 (PROJECT 21/24 in its plan)
UNUSED_COLUMNS = ("currency", "is_counterfeit")
RTOL, ATOL = 1e-4, 1e-6


# ------------------------------------------------------------------ helpers


def catalog_path(data: Path, listings: int) -> Path:
    return data / f"catalog_{listings}.parquet"


def peak_rss_bytes() -> int:
    """This process's peak resident set size (high-water mark of its own address space)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def code_fingerprint() -> str:
    """A short hash of the `features` package sources, to tell which code a worker ran."""
    import hashlib

    digest = hashlib.sha256()
    for source in sorted((ROOT / "features").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> dict[str, Any]:
    """HEAD commit and whether `features/` has uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "features")
    return {"head": git("rev-parse", "--short", "HEAD"),
            "features_uncommitted": None if status is None else bool(status)}


def needed_columns() -> list[str]:
    """Contract columns the 34 features (and the kept ids) are computed from."""
    from features.contract import LISTING_COLUMNS

    return [c.name for c in LISTING_COLUMNS if c.name not in UNUSED_COLUMNS]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


class Timer:
    """Wall seconds (`time.perf_counter`) and CPU seconds of this process (all threads) over a
    `with` block; CPU seconds barely move when other jobs compete for the cores, wall does."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu

    def figures(self) -> dict[str, float]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


# ------------------------------------------------------------------ work done in a subprocess
# Each returns {"rows": output rows, "seconds": timed seconds, ...extra}.


def work_generate(catalog: Path, listings: int, **_: Any) -> dict[str, Any]:
    from synthetic.generate import generate_catalog

    scratch = catalog.with_name(f".partial_{catalog.name}")
    with Timer() as t:
        generate_catalog(scratch, listings, SEED)
    scratch.rename(catalog)
    return {"rows": listings, **t.figures()}


def work_fit(catalog: Path, state_dir: Path, **_: Any) -> dict[str, Any]:
    from features.catalog import read_catalog
    from features.state import fit_state

    with Timer() as t:
        state = fit_state(read_catalog(catalog).rows)
        state.save(state_dir)
    return {"rows": _parquet_rows(catalog), **t.figures(),
            "known_brands": state.lexicon.known.height,
            "typosquat_patterns": state.lexicon.variants.height}


def work_bare(catalog: Path, **_: Any) -> dict[str, Any]:
    import polars as pl

    columns = needed_columns()
    with Timer() as t:
        frame = pl.scan_parquet(catalog).select(columns).collect()
    return {"rows": frame.height, **t.figures(), "columns": len(columns)}


def work_in_memory(catalog: Path, state_dir: Path, **_: Any) -> dict[str, Any]:
    from features.catalog import read_catalog
    from features.pipeline import build_features
    from features.state import FeatureState

    with Timer() as t:
        state = FeatureState.load(state_dir)
        frame = build_features(read_catalog(catalog).rows, state).collect(engine="in-memory")
    return {"rows": frame.height, **t.figures()}


def work_streaming(catalog: Path, state_dir: Path, scratch: Path, **_: Any) -> dict[str, Any]:
    from features.catalog import read_catalog
    from features.pipeline import build_features
    from features.state import FeatureState

    out = scratch / f"features_{os.getpid()}.parquet"
    try:
        with Timer() as t:
            state = FeatureState.load(state_dir)
            build_features(read_catalog(catalog).rows, state).sink_parquet(
                out, engine="streaming"
            )
        rows = _parquet_rows(out)
    finally:
        out.unlink(missing_ok=True)
    return {"rows": rows, **t.figures()}


def work_pandas(catalog: Path, state_dir: Path, **_: Any) -> dict[str, Any]:
    import _pandas_features as reference

    with Timer() as t:
        with Timer() as read:
            state = reference.load_state(state_dir)
            rows = reference.read_rows(catalog)
        frame = reference.build_features(rows, state)
    return {"rows": len(frame), **t.figures(),
            "parts": {"read_validate": read.seconds, "features": t.seconds - read.seconds}}


def work_parts(catalog: Path, state_dir: Path, **_: Any) -> dict[str, Any]:
    from features.aggregates import batch_aggregates
    from features.catalog import read_catalog
    from features.pipeline import build_features
    from features.state import FeatureState

    state = FeatureState.load(state_dir)
    with Timer() as t:
        with Timer() as read:
            rows = read_catalog(catalog).rows.collect(engine="in-memory")
        with Timer() as agg:
            aggregates = batch_aggregates(rows.lazy(), state)
        with Timer() as build:
            frame = build_features(rows.lazy(), state, aggregates=aggregates).collect(
                engine="in-memory"
            )
    return {"rows": frame.height, **t.figures(),
            "parts": {"read_catalog": read.seconds, "batch_aggregates": agg.seconds,
                      "build_features": build.seconds}}


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


WORK: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": work_generate,
    "fit": work_fit,
    "bare": work_bare,
    "in-memory": work_in_memory,
    "streaming": work_streaming,
    "pandas": work_pandas,
    "parts": work_parts,
}


def run_worker(args: argparse.Namespace) -> None:
    """Child side: do one piece of work, then write its figures and peak RSS as JSON."""
    code = code_fingerprint()
    result = WORK[args.worker](
        catalog=Path(args.catalog), state_dir=Path(args.state), scratch=Path(args.data),
        listings=args.listings,
    )
    result["peak_rss"] = peak_rss_bytes()
    result["code"] = code
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------ the parent side


@dataclass
class Measurement:
    name: str
    kind: str
    listings: int
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss: int
    load_after: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "listings": self.listings, "rows": self.rows,
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "rows_per_s": round(self.rows_per_second),
                "peak_rss_gb": round(self.peak_rss / GB, 3),
                "load_1m_after": round(self.load_after, 2), **self.extra}


def measure(name: str, kind: str, listings: int, data: Path, state_dir: Path) -> Measurement:
    """Run one piece of work in a fresh interpreter and collect what it reports."""
    with tempfile.NamedTemporaryFile(dir=data, prefix=".result_", suffix=".json") as tmp:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--worker", kind,
            "--catalog", str(catalog_path(data, listings)), "--state", str(state_dir),
            "--data", str(data), "--listings", str(listings), "--result", tmp.name,
        ]
        print(f"  running {name} ...", file=sys.stderr, flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        report = json.loads(Path(tmp.name).read_text())
    m = Measurement(name, kind, listings, report.pop("rows"), report.pop("seconds"),
                    report.pop("cpu_seconds"), report.pop("peak_rss"), load_average()[0], report)
    print(f"  {name}: {m.seconds:.1f} s, {m.peak_rss / GB:.2f} GB", file=sys.stderr, flush=True)
    return m


def ensure_catalog(listings: int, data: Path, state_dir: Path) -> Measurement | None:
    if catalog_path(data, listings).exists():
        return None
    return measure(f"generate {listings:,}", "generate", listings, data, state_dir)


# ------------------------------------------------------------------ correctness guard


def check_agreement(catalog: Path, state_dir: Path, examples: int = 5) -> dict[str, Any]:
    """Both feature tables on one catalog; per column, the rows where they disagree."""
    import _pandas_features as reference
    import numpy as np
    import polars as pl

    from features.catalog import read_catalog
    from features.pipeline import build_features
    from features.registry import FEATURE_COLUMNS
    from features.state import FeatureState

    polars_table = build_features(
        read_catalog(catalog).rows, FeatureState.load(state_dir)
    ).collect(engine="in-memory")
    pandas_table = pl.from_pandas(reference.features_from_file(catalog, state_dir))
    report: dict[str, Any] = {"rows_polars": polars_table.height,
                              "rows_pandas": pandas_table.height, "columns": {}}
    joined = polars_table.join(pandas_table, on="listing_id", how="full", suffix="_pd",
                               coalesce=True)
    only_one_side = joined.filter(pl.col("seller_id").is_null() | pl.col("seller_id_pd").is_null())
    if only_one_side.height:
        report["rows_on_one_side"] = only_one_side["listing_id"].head(examples).to_list()
    both = joined.filter(pl.col("seller_id").is_not_null() & pl.col("seller_id_pd").is_not_null())
    for col in FEATURE_COLUMNS:
        a = both[col].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        b = both[f"{col}_pd"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        a_nan, b_nan = np.isnan(a), np.isnan(b)
        close = np.isclose(np.where(a_nan, 0, a), np.where(b_nan, 0, b), rtol=RTOL, atol=ATOL)
        bad = np.flatnonzero((a_nan != b_nan) | ~close)
        if len(bad):
            report["columns"][col] = {
                "rows": len(bad),
                "examples": [
                    {"listing_id": both["listing_id"][int(i)],
                     "polars": None if a_nan[i] else float(a[i]),
                     "pandas": None if b_nan[i] else float(b[i])}
                    for i in bad[:examples]
                ],
            }
    report["agree"] = not report["columns"] and "rows_on_one_side" not in report and (
        polars_table.height == pandas_table.height
    )
    return report


# ------------------------------------------------------------------ printing


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(
        zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(
            zip(r, widths, strict=True))))


MEASUREMENT_HEADER = ["rows", "seconds", "CPU s", "rows/s", "peak RSS GB", "load 1m"]


def measurement_rows(ms: list[Measurement]) -> list[list[str]]:
    return [[m.name, f"{m.rows:,}", f"{m.seconds:.1f}", f"{m.cpu_seconds:.1f}",
             f"{m.rows_per_second:,.0f}", f"{m.peak_rss / GB:.2f}", f"{m.load_after:.1f}"]
            for m in ms]


def versions() -> dict[str, str]:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    return {"python": platform.python_version(), "polars": pl.__version__,
            "pandas": pd.__version__, "pyarrow": pa.__version__}


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listings", type=int, default=10_000_000,
                   help="catalog size for the main measurements (default 10M)")
    p.add_argument("--sizes", default="2500000,10000000",
                   help="comma-separated catalog sizes for streaming memory vs size")
    p.add_argument("--data", type=Path, default=BENCH / "out",
                   help="folder for catalogs, the fitted state and scratch files")
    p.add_argument("--check-rows", type=int, default=20_000,
                   help="catalog size for the pandas-vs-Polars correctness guard")
    p.add_argument("--quick", action="store_true",
                   help="a fast trial: --listings 1M, --sizes 250k,1M")
    p.add_argument("--no-pandas", action="store_true", help="skip the pandas measurement")
    p.add_argument("--worker", choices=sorted(WORK), help=argparse.SUPPRESS)
    p.add_argument("--catalog", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.listings, args.sizes = 1_000_000, "250000,1000000"
    args.size_list = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    data: Path = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    largest = max([args.listings, *args.size_list])
    code_before, git_before = code_fingerprint(), git_state()
    state_dir = data / f"state_{largest}"
    load_before = load_average()
    print(f"load average before: {load_before}; POLARS_MAX_THREADS="
          f"{os.environ['POLARS_MAX_THREADS']}, {os.cpu_count()} CPUs", file=sys.stderr)

    # 1. catalogs (reused when present) and the state, fitted once on the largest
    generated = [
        m for n in sorted({args.listings, largest, args.check_rows, *args.size_list})
        if (m := ensure_catalog(n, data, state_dir)) is not None
    ]
    fit = measure(f"fit {largest:,}", "fit", largest, data, state_dir)

    # 2. correctness guard: the reference must compute the same table
    check = check_agreement(catalog_path(data, args.check_rows), state_dir)

    # 3. the main measurements, then streaming memory at the other sizes
    n = args.listings
    main_ms = [
        measure("bare read", "bare", n, data, state_dir),
        measure("pipeline in-memory", "in-memory", n, data, state_dir),
        measure("pipeline streaming", "streaming", n, data, state_dir),
    ]
    if not args.no_pandas:
        main_ms.append(measure("pandas", "pandas", n, data, state_dir))
    parts = measure("pipeline parts (in-memory)", "parts", n, data, state_dir)
    by_kind = {m.kind: m for m in main_ms}
    streaming = {n: by_kind["streaming"]}
    for size in args.size_list:
        if size not in streaming:
            streaming[size] = measure(f"streaming {size:,}", "streaming", size, data, state_dir)
    load_after = load_average()
    all_ms = [*generated, fit, *main_ms, parts, *streaming.values()]
    worker_codes = {m.extra.pop("code", None) for m in all_ms} - {None}
    codes = {code_before, code_fingerprint(), *worker_codes}

    # ---- print
    print(f"\nKnockoff feature benchmark — {n:,} listings; Polars threads "
          f"{os.environ['POLARS_MAX_THREADS']}; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"code: git HEAD {git_before['head']}, features/ uncommitted changes: "
          f"{git_before['features_uncommitted']}, features fingerprint {code_before}")
    if len(codes) > 1:
        print(f"WARNING: features/ changed during the run (fingerprints {sorted(codes)}); "
              "the measurements did not all run the same code")
    print("CPU s = CPU time of the measured process, all threads; load 1m = 1-minute load "
          "average when it ended (well above the thread count = other jobs competed)")
    print_table("Setup", ["step", *MEASUREMENT_HEADER],
                measurement_rows([*generated, fit]))
    print_table(f"Measurements at {n:,} listings (fresh process each)",
                ["measurement", *MEASUREMENT_HEADER],
                measurement_rows(main_ms))

    bare = by_kind["bare"]
    ratios: dict[str, float] = {}
    ratio_rows: list[list[str]] = []
    pairs = [("in-memory", "bare"), ("streaming", "bare")]
    if "pandas" in by_kind:
        pairs += [("pandas", "in-memory"), ("pandas", "streaming")]
    for top, bottom in pairs:
        t = ratio(by_kind[top].seconds, by_kind[bottom].seconds)
        r = ratio(by_kind[top].peak_rss, by_kind[bottom].peak_rss)
        label = f"{by_kind[top].name} ÷ {by_kind[bottom].name}"
        ratios[f"{top}/{bottom} time"] = round(t, 3)
        ratios[f"{top}/{bottom} rss"] = round(r, 3)
        ratio_rows.append([label, f"{t:.2f}x", f"{r:.2f}x"])
    print_table("Ratios", ["ratio", "time", "peak RSS"], ratio_rows)

    part_rows = [[k, f"{v:.1f}", f"{100 * v / parts.seconds:.0f}%"]
                 for k, v in parts.extra["parts"].items()]
    part_rows.append(["total", f"{parts.seconds:.1f}", "100%"])
    part_rows.append(["(peak RSS GB)", f"{parts.peak_rss / GB:.2f}", ""])
    print_table(f"Pipeline parts, in-memory, one process (catalog materialised once; "
                f"{bare.name} is {bare.seconds:.1f} s)", ["part", "seconds", "share"], part_rows)
    if "pandas" in by_kind:
        pandas_parts = by_kind["pandas"].extra["parts"]
        print_table("pandas parts", ["part", "seconds"],
                    [[k, f"{v:.1f}"] for k, v in pandas_parts.items()])

    sizes = sorted(streaming)
    print_table("Streaming pipeline: peak RSS vs catalog size",
                ["listings", *MEASUREMENT_HEADER],
                [[f"{s:,}", *r[1:]] for s, r in zip(
                    sizes, measurement_rows([streaming[s] for s in sizes]), strict=True)])
    size_ratio = ratio(sizes[-1], sizes[0])
    rss_ratio = ratio(streaming[sizes[-1]].peak_rss, streaming[sizes[0]].peak_rss)
    print(f"  {sizes[-1]:,} / {sizes[0]:,} rows = {size_ratio:.1f}x -> peak RSS {rss_ratio:.2f}x")

    print(f"\nCorrectness guard on {check['rows_polars']:,} rows "
          f"(catalog_{args.check_rows}; rtol {RTOL}, NaN-aware): "
          + ("pandas and Polars agree on all 34 features" if check["agree"] else "DISAGREE"))
    for col, info in check["columns"].items():
        print(f"  {col}: {info['rows']} rows differ, e.g. {info['examples'][:3]}")
    if "rows_on_one_side" in check:
        print(f"  rows on one side only, e.g. {check['rows_on_one_side']}")

    summary = {
        "listings": n,
        "polars_max_threads": int(os.environ["POLARS_MAX_THREADS"]),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": versions(),
        "code": {**git_before, "features_fingerprint": code_before,
                 "changed_during_run": len(codes) > 1},
        "setup": {m.name: m.as_json() for m in [*generated, fit]},
        "measurements": {m.kind: m.as_json() for m in [*main_ms, parts]},
        "ratios": ratios,
        "streaming_memory": {
            "by_size": {str(s): streaming[s].as_json() for s in sizes},
            "size_ratio": round(size_ratio, 3),
            "peak_rss_ratio": round(rss_ratio, 3),
        },
        "correctness": check,
    }
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
