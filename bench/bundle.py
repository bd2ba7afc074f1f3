"""Bundle benchmark: what verifying a bundle costs at load, and the numpy path contributions
against LightGBM's `pred_leaf` (the former implementation) on the same rows.

    .venv/bin/python bench/bundle.py BUNDLE_FOLDER [--rows 10000] [--repeat 9]

BUNDLE_FOLDER is any bundle (`knockoff train` prints where it is; `models:/` downloads sit in
the cache, see README "Scoring"). Times are medians of interleaved repetitions on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402

from serving.bundle import PARITY_SAMPLE, Bundle, check_parity_sample, verify_digests  # noqa: E402
from serving.explain import PathContributions  # noqa: E402


def median_ms(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median milliseconds of each call, the calls interleaved in every repetition."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def lightgbm_contributions(booster: lgb.Booster, explain: PathContributions,
                           X: NDArray[np.float32], threads: int) -> NDArray[np.float64]:
    """The former implementation: LightGBM's pred_leaf, then the same table product."""
    leaves = booster.predict(X, pred_leaf=True, num_threads=threads).astype(np.int64)
    n, trees = leaves.shape
    one_hot = csr_matrix((np.ones(n * trees), (leaves + explain.offsets).ravel(),
                          np.arange(0, n * trees + 1, trees)), shape=(n, len(explain.table)))
    return np.asarray(one_hot @ explain.table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the contributions")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    root = args.bundle
    bundle = Bundle.load(root, threads=1)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"{root}: {len(bundle.trees.roots)} trees, {size:.2f} MB")
    load = median_ms({
        "Bundle.load, all of it": lambda: Bundle.load(root, threads=1),
        "  sha256 digests": lambda: verify_digests(root),
        "  parity sample re-scored": lambda: check_parity_sample(root, bundle.session,
                                                                   bundle.threshold),
    }, args.repeat)
    for name, ms in load.items():
        print(f"{name:28s} {ms:7.1f} ms")

    with np.load(root / PARITY_SAMPLE) as sample:
        rows = sample["X"]
    rng = np.random.default_rng(0)
    X = rows[rng.integers(0, len(rows), args.rows)].copy()
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values too
    booster = lgb.Booster(model_file=root / "model.txt")
    explain = PathContributions.from_trees(bundle.trees)
    for threads in (1, 2):
        assert np.array_equal(explain(X, threads),
                              lightgbm_contributions(booster, explain, X, threads))
        ms = median_ms({
            "numpy": lambda t=threads: explain(X, t),
            "pred_leaf": lambda t=threads: lightgbm_contributions(booster, explain, X, t),
        }, args.repeat)
        print(f"contributions, {args.rows} rows, {threads} thread(s): numpy {ms['numpy']:.0f} ms, "
              f"LightGBM pred_leaf {ms['pred_leaf']:.0f} ms (identical), "
              f"ratio {ms['numpy'] / ms['pred_leaf']:.2f}")


if __name__ == "__main__":
    main()
