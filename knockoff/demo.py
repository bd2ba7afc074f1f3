"""`knockoff demo`: the whole loop on synthetic data — generate a labelled catalog, train and
register a model, score a later batch with the champion, and show the flags with reasons."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from serving import tracking
from serving.scorer import DEFAULT_MODEL, score_catalog
from synthetic.generate import generate_catalog
from training.train import train


def _say(text: str) -> None:
    print(f"knockoff demo: {text}", file=sys.stderr, flush=True)


def run_demo(
    folder: str | Path = "var/demo", listings: int = 1_000_000, batch: int = 200_000,
    seed: int = 7, progress: bool = True,
) -> dict[str, object]:
    folder = Path(folder)
    start, days = date(2026, 1, 1), 180
    catalog, later = folder / "catalog.parquet", folder / "batch.parquet"
    scores = folder / "scores.parquet"
    _say(f"1/4 generating a labelled catalog of {listings:,} listings -> {catalog}")
    generate_catalog(catalog, listings, seed, start=start, days=days, progress=progress)
    _say(f"2/4 generating a later batch of {batch:,} listings a platform submits -> {later}")
    generate_catalog(later, batch, seed + 1, start=start + timedelta(days=days), days=31,
                     progress=progress)
    _say(f"3/4 training (MLflow store: {tracking.tracking_uri()})")
    result = train(catalog, progress=progress)
    gain = result.gains["valid"]["logistic"]
    _say(f"    {result.model_version}: average precision "
         f"{result.metrics['average_precision']:.3f} vs rules "
         f"{result.baselines['rules']['average_precision']:.3f} and logistic "
         f"{result.baselines['logistic']['average_precision']:.3f} (gain over logistic "
         f"{gain.difference:+.3f}, 95% interval {gain.low:+.3f} to {gain.high:+.3f}); "
         + ("promoted to champion" if result.promoted else
            f"champion stays {result.champion_before}"))
    _say(f"4/4 scoring the batch with {DEFAULT_MODEL} -> {scores}")
    summary = score_catalog(later, scores, progress=progress)
    top = (
        pl.scan_parquet(scores).filter("flagged").sort("score", descending=True).head(10)
        .collect()
    )
    lines = [
        "",
        f"{summary['scored']:,} listings scored, {summary['flagged']:,} flagged "
        f"(threshold {float(summary['threshold']):.3f}), {summary['rejected']:,} rejected.",
        "The most suspicious listings and why:",
    ]
    for row in top.iter_rows(named=True):
        lines.append(f"  {row['listing_id']}  seller {row['seller_id']}  score "
                     f"{row['score']:.3f}: " + "; ".join(row["reasons"]))
    lines += [
        "",
        f"Scores and reasons: {scores}",
        f"Rejected rows:      {summary['rejects']}",
        f"Model card, plots:  MLflow run {result.run_id}; open the UI with",
        f"  .venv/bin/mlflow ui --backend-store-uri {tracking.tracking_uri()} "
        "--host 127.0.0.1 --port 5000",
    ]
    print("\n".join(lines), file=sys.stderr)
    return {"train": result.summary(), "score": summary}
