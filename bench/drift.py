"""Drift detection: does `knockoff drift` tell a drifted batch from an undrifted one (issue 12)?

A model is trained (MLflow in a temp folder) on an undrifted generated catalog (`--train`
listings, seed 7, 150 days, `--drift 0`). Later batches of the same market (`--batch` listings
over 31 days from 2026-06-01) are drawn for each seed of `--seeds`, once undrifted (`--drift 0`)
and once with `--drift 2` (new rings, newly targeted brands, fewer copy words: the fakes change,
a few % of rows). For each batch `serving.drift.catalog_drift` measures, against the bundle's
reference window, the whole batch's score PSI and the flagged listings' score PSI, as `knockoff
drift` and the service do.

The reference in the same run: each statistic's separation = (lowest value on a drifted batch) /
(highest value on an undrifted batch); above 1, every drifted batch measured higher than every
undrifted one.

    OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=2 .venv/bin/python bench/drift.py

It prints a Markdown table, then one JSON line. Catalogs are kept in `--dir` (reused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# bench/ holds a script called features.py: the repo root must come first so that `features` is
# the project's package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]

from knockoff.environment import quiet_environment  # noqa: E402

quiet_environment(threads=2)

from serving.drift import DriftReport, catalog_drift  # noqa: E402
from serving.scorer import Scorer  # noqa: E402
from synthetic.generate import generate_catalog  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.train import train  # noqa: E402

LATER = date(2026, 6, 1)


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=150_000, help="training catalog listings")
    p.add_argument("--batch", type=int, default=20_000, help="listings per batch")
    p.add_argument("--seeds", default="8-15", help="batch seeds, FIRST-LAST")
    p.add_argument("--dir", type=Path, default=BENCH / "out" / "drift")
    return p.parse_args()


def _catalog(path: Path, listings: int, **kwargs: object) -> Path:
    if not path.exists():
        generate_catalog(path, listings, **kwargs)  # type: ignore[arg-type]
    return path


def _row(seed: int, drift: int, report: DriftReport) -> dict[str, object]:
    flagged = report.flagged
    assert flagged is not None  # a bundle trained by this code has the flagged reference
    return {"seed": seed, "drift": drift, "rows": report.rows, "score_psi": report.score_psi,
            "flagged_score_psi": flagged.score_psi, "flagged": flagged.rows,
            "flag_rate": flagged.flag_rate, "reference_flag_rate": flagged.reference_flag_rate,
            "warning": report.warning}


def _separation(rows: list[dict[str, object]], key: str) -> float:
    drifted = min(float(r[key]) for r in rows if r["drift"] == 2)  # type: ignore[arg-type]
    undrifted = max(float(r[key]) for r in rows if r["drift"] == 0)  # type: ignore[arg-type]
    return drifted / undrifted


def main() -> None:
    args = _arguments()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    args.dir.mkdir(parents=True, exist_ok=True)
    catalog = _catalog(args.dir / f"train_{args.train}.parquet", args.train, seed=7, days=150,
                       drift=0)
    with tempfile.TemporaryDirectory(prefix="knockoff-bench-drift-") as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        os.environ["KNOCKOFF_CACHE_DIR"] = f"{store}/cache"
        started = time.perf_counter()
        result = train(catalog, TrainConfig(threads=2, schema_variants=()), progress=False)
        trained = time.perf_counter() - started
        scorer = Scorer.load(Path(result.bundle), threads=2)
        rows = []
        for seed in seeds:
            for drift in (0, 2):
                batch = _catalog(args.dir / f"batch_{args.batch}_s{seed}_d{drift}.parquet",
                                 args.batch, seed=seed, start=LATER, days=31, drift=drift)
                rows.append(_row(seed, drift, catalog_drift(batch, scorer)))
                print(f"bench/drift: seed {seed} drift {drift} measured", file=sys.stderr)
    print("| seed | drift | score PSI (all listings) | score PSI (flagged) | flagged | flag rate "
          "| warning |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['drift']} | {r['score_psi']:.4f} | "
              f"{r['flagged_score_psi']:.4f} | {r['flagged']} | {r['flag_rate']:.2%} | "
              f"{'yes' if r['warning'] else 'no'} |")
    summary = {
        "train_listings": args.train, "batch_listings": args.batch, "seeds": list(seeds),
        "train_seconds": round(trained, 1),
        "reference_flag_rate": rows[0]["reference_flag_rate"],
        "separation_score_psi": round(_separation(rows, "score_psi"), 3),
        "separation_flagged_score_psi": round(_separation(rows, "flagged_score_psi"), 3),
        "rows": rows,
    }
    print(f"separation (lowest drifted / highest undrifted): all listings "
          f"{summary['separation_score_psi']}, flagged {summary['separation_flagged_score_psi']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
