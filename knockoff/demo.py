"""`knockoff demo`: the whole loop on synthetic data — generate a labelled catalog, train and
register a model, submit a later batch to the service over HTTP as a platform would, show the
flags with reasons, and (with `serve`) leave the officers' console open."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from knockoff.commands import UserError
from knockoff.demo_console import DemoService
from serving import tracking
from synthetic.generate import generate_catalog
from training.train import train


def _say(text: str) -> None:
    print(f"knockoff demo: {text}", file=sys.stderr, flush=True)


def run_demo(
    folder: str | Path = "var/demo", listings: int = 1_000_000, batch: int = 200_000,
    seed: int = 7, progress: bool = True, serve: bool = False,
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
    if tracking.champion(tracking.MODEL_NAME) is None:  # the service would wait for one
        raise UserError(f"{result.model_version} was not promoted ({result.promotion_reason}) "
                        "and there is no champion to score the batch with: run the demo with "
                        "more --listings")
    with DemoService(folder) as service:
        _say(f"4/4 a platform submits the batch to the service at {service.url} "
             "(HTTP, its own API key) and waits for its scores")
        summary = service.submit(later)
        service.download(summary["batch_id"], "scores", scores)
        service.download(summary["batch_id"], "rejects", folder / "scores.rejects.parquet")
        _report(scores, summary, result.run_id)
        if serve:
            service.serve_until_interrupted()
    return {"train": result.summary(), "score": summary}


def _report(scores: Path, summary: dict[str, object], run_id: str) -> None:
    top = (
        pl.scan_parquet(scores).filter("flagged").sort("score", descending=True).head(10)
        .collect()
    )
    lines = [
        "",
        f"{summary['scored']:,} listings scored by {summary['model_version']}, "
        f"{summary['flagged']:,} flagged, {summary['rejected']:,} rejected "
        f"(batch {summary['batch_id']}).",
        "The most suspicious listings and why:",
    ]
    for row in top.iter_rows(named=True):
        lines.append(f"  {row['listing_id']}  seller {row['seller_id']}  score "
                     f"{row['score']:.3f}: " + "; ".join(row["reasons"]))
    lines += [
        "",
        f"Scores and reasons: {scores}",
        f"Rejected rows:      {scores.with_name('scores.rejects.parquet')}",
        f"Model card, plots:  MLflow run {run_id}; open the UI with",
        f"  .venv/bin/mlflow ui --backend-store-uri {tracking.tracking_uri()} "
        "--host 127.0.0.1 --port 5000",
    ]
    print("\n".join(lines), file=sys.stderr)
