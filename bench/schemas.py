"""Schema matrix: how well each optional-column subset is scored (issue 12, item 5).

On a generated catalog (`--listings` 300,000, seed 7) and a later batch (`--batch` 100,000,
seed 8, from 2026-04-01) evaluated against the ground truth `true_is_counterfeit`, for each
optional-column subset of MATRIX: average precision, and flag precision and recall, of

* served    the bundle with schema variants (trained with `schema_variants` = the matrix's
            sparse subsets), scored by `score_catalog` exactly as `knockoff score` does;
* subset    a model trained only on that subset (the catalog written without those columns,
            then the same training steps, no variants);
* champion  today's bundle: the same main model without variants.

Training runs the steps of `training.train` without MLflow; every bundle is exported and
loaded like a registered one. Catalogs and bundles are kept in `--dir` (reused when present).

    OMP_WAIT_POLICY=PASSIVE POLARS_MAX_THREADS=2 .venv/bin/python bench/schemas.py

It prints the table (Markdown), the training seconds per variant, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
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

import polars as pl  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from features.contract import TRUTH  # noqa: E402
from serving.scorer import Scorer, score_catalog  # noqa: E402
from serving.variants import GROUPS, absent_columns  # noqa: E402
from synthetic.generate import generate_catalog  # noqa: E402
from training.compare import evaluate_models  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dataset import prepare  # noqa: E402
from training.train import export_bundle, fit_final_lightgbm, fit_models  # noqa: E402
from training.variants import VariantModel, fit_variants  # noqa: E402

# name -> optional input groups absent (features.registry.OPTIONAL_INPUTS)
MATRIX: dict[str, tuple[str, ...]] = {
    "full": (),
    "no contact hash": ("seller_contact_hash",),
    "no images": ("images",),
    "no description, list price": ("description", "list_price"),
    "issue 12 (no contact, images, description, list price)":
        ("images", "seller_contact_hash", "description", "list_price"),
    "no seller profile (age, verified, reviews)":
        ("seller_registered_at", "seller_verified", "seller_reviews"),
    "no after-sale, no shipping": ("after_sale", "ships_from"),
    "required only": GROUPS,
    "no description (no variant of its own)": ("description",),
}
# subsets the served bundle has no variant for: scored by the largest variant they can feed
NOT_A_VARIANT: tuple[str, ...] = ("no description (no variant of its own)",)


def without(source: Path, target: Path, groups: tuple[str, ...]) -> Path:
    """A copy of a catalog without the columns of `groups`."""
    if not target.exists():
        pl.scan_parquet(source).drop(absent_columns(groups)).sink_parquet(target)
    return target


def train_bundle(catalog: Path, out: Path, config: TrainConfig, champion: Path | None = None,
                 seconds: dict[str, float] | None = None,
                 ) -> tuple[Path, tuple[VariantModel, ...]]:
    """The training steps without MLflow, the bundle exported into `out/bundle`; `champion`:
    also export it without its variants into `champion/bundle`. `seconds` gets the export
    times with and without variants."""
    prepared = prepare(catalog, config, None)
    models = fit_models(prepared, config, progress=False)
    evaluation = evaluate_models(prepared.valid, models.booster, models.logistic, config)
    variants = fit_variants(catalog, prepared, config, fit_final_lightgbm, progress=False)
    for folder in (out, champion):
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    timer = {} if seconds is None else seconds
    start = time.perf_counter()
    bundle = export_bundle(out, prepared, models.booster, evaluation, config, "bench", variants)
    timer["export_with_variants"] = time.perf_counter() - start
    if champion is not None:
        start = time.perf_counter()
        export_bundle(champion, prepared, models.booster, evaluation, config, "bench")
        timer["export_without_variants"] = time.perf_counter() - start
    return bundle, variants


def quality(scorer: Scorer, batch: Path, truth: pl.DataFrame, scratch: Path) -> dict[str, float]:
    """AP, flag precision and recall of one scorer on one batch, against the ground truth."""
    summary = score_catalog(batch, scratch, scorer=scorer)
    scored = pl.read_parquet(scratch).join(truth, on="listing_id", how="inner")
    y, flagged = scored[TRUTH].to_numpy(), scored["flagged"].to_numpy()
    return {
        "ap": float(average_precision_score(y, scored["score"].to_numpy())),
        "precision": float(y[flagged].mean()) if flagged.any() else float("nan"),
        "recall": float(flagged[y].mean()),
        "schema": str(summary.get("schema", "-")),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("var/bench_schemas"))
    p.add_argument("--listings", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=100_000)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    catalog, batch = work / "catalog.parquet", work / "batch.parquet"
    if not catalog.exists():
        generate_catalog(catalog, args.listings, seed=7)
    if not batch.exists():
        generate_catalog(batch, args.batch, seed=8, start=date(2026, 4, 1))
    truth = pl.read_parquet(batch, columns=["listing_id", TRUTH])
    sparse = tuple(groups for name, groups in MATRIX.items()
                   if groups and name not in NOT_A_VARIANT)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    served_path, variants = train_bundle(catalog, work / "served", TrainConfig(
        schema_variants=sparse), champion=work / "champion", seconds=seconds)
    seconds = {"served_and_variants": time.perf_counter() - start, **seconds,
               **{v.key: v.seconds for v in variants}}
    served = Scorer.load(str(served_path))
    champion = Scorer.load(str(work / "champion" / "bundle"))
    rows = []
    for i, (name, groups) in enumerate(MATRIX.items()):
        part = without(batch, work / f"batch_{i}.parquet", groups)
        subset_catalog = without(catalog, work / f"catalog_{i}.parquet", groups)
        subset_path, _ = train_bundle(subset_catalog, work / f"subset_{i}",
                                      TrainConfig(schema_variants=()))
        subset = Scorer.load(str(subset_path))
        row: dict[str, object] = {"columns": name}
        for label, scorer in (("served", served), ("subset", subset), ("champion", champion)):
            row[label] = quality(scorer, part, truth, work / "scores.parquet")
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, seconds)
    print(json.dumps({"rows": rows, "seconds": seconds}))


def print_table(rows: list[dict[str, object]], seconds: dict[str, float]) -> None:
    print("\n| optional columns | served: AP / precision / recall (variant) | trained on the "
          "subset | champion without variants | served - subset AP |")
    print("|---|---|---|---|---|")
    for row in rows:
        served, subset, champion = row["served"], row["subset"], row["champion"]
        cells = [f"{q['ap']:.3f} / {q['precision']:.2f} / {q['recall']:.2f}"  # type: ignore[index]
                 for q in (served, subset, champion)]
        gap = served["ap"] - subset["ap"]  # type: ignore[index]
        print(f"| {row['columns']} | {cells[0]} (`{served['schema']}`) | {cells[1]} | "  # type: ignore[index]
              f"{cells[2]} | {gap:+.3f} |")
    print("\ntraining seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
