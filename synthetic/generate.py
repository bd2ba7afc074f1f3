"""`knockoff generate`: a seeded synthetic labelled catalog, written chunk by chunk to Parquet,
CSV or JSON Lines. Every row carries the contract columns plus the ground truth (`TRUTH`)."""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from features.contract import TRUTH
from synthetic.draws import rng_for
from synthetic.listings import listing_chunk
from synthetic.market import NEWLY_TARGETED, SALES_WINDOW_DAYS, Config, build_world
from synthetic.sellers import Sellers, build_sellers
from synthetic.writing import SUFFIXES, chunk_writer

ID_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def _check_arguments(out: Path, listings: int, days: int, chunk_rows: int, drift: float,
                     id_prefix: str) -> None:
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"unsupported output format {out.suffix!r} for {out}: use one of {', '.join(SUFFIXES)}"
        )
    if listings < 1:
        raise ValueError(f"listings must be >= 1, got {listings}")
    if days < SALES_WINDOW_DAYS + 1:
        raise ValueError(f"days must be >= 31 (sales window is 30 days), got {days}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    if id_prefix and not ID_PREFIX.fullmatch(id_prefix):
        raise ValueError(f"id prefix must be 1-32 letters, digits, '_' or '-' starting with a "
                         f"letter or digit, got {id_prefix!r}")


def generate_catalog(
    out: Path,
    listings: int,
    seed: int = 0,
    *,
    start: date = date(2026, 1, 1),
    days: int = 180,
    chunk_rows: int = 500_000,
    drift: float = 1.0,
    id_prefix: str = "",
    progress: bool = False,
) -> dict[str, object]:
    """Write a synthetic labelled catalog to ``out`` (.parquet, .csv or .jsonl).

    Deterministic for a given (listings, seed, start, days, chunk_rows, drift, id_prefix).
    `id_prefix` goes before every listing and seller id, so catalogs drawn with different seeds
    can sit in one folder without colliding ids. Returns a summary: counts, true prevalence,
    labelled shares, time span and the path.
    """
    out = Path(out)
    _check_arguments(out, listings, days, chunk_rows, drift, id_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = Config.create(start, days, float(drift), id_prefix)
    world = build_world(seed, cfg.drift)
    sellers = build_sellers(seed, listings, world, cfg)

    counts = dict.fromkeys(("fake", "labelled", "labelled_fake"), 0)
    n_chunks = math.ceil(listings / chunk_rows)
    with chunk_writer(out) as writer:
        for i in tqdm(range(n_chunks), disable=not progress, desc="generate", unit="chunk"):
            first = i * chunk_rows
            df = listing_chunk(rng_for(seed, 2, i), first, min(chunk_rows, listings - first),
                               world, sellers, cfg)
            writer.write(df)
            counts["fake"] += int(df[TRUTH].sum())
            counts["labelled"] += int(df["is_counterfeit"].is_not_null().sum())
            counts["labelled_fake"] += int(df["is_counterfeit"].sum())
    return _summary(out, listings, seed, cfg, start, sellers, counts)


def _summary(out: Path, listings: int, seed: int, cfg: Config, start: date, sellers: Sellers,
             counts: dict[str, int]) -> dict[str, object]:
    snapshot = start + timedelta(days=cfg.days)
    return {
        "path": str(out),
        "listings": listings,
        "sellers": len(sellers.kind),
        "rings": int(len(sellers.ring_pool)),
        "late_rings": int(len(np.unique(sellers.ring[sellers.late]))),
        "prevalence": counts["fake"] / listings,
        "labelled_share": counts["labelled"] / listings,
        "labelled_fake_share": counts["labelled_fake"] / max(counts["labelled"], 1),
        "start": start.isoformat(),
        "end": snapshot.isoformat(),
        "snapshot": snapshot.isoformat(),
        "days": cfg.days,
        "drift": cfg.drift,
        "id_prefix": cfg.id_prefix,
        "newly_targeted_brands": list(NEWLY_TARGETED),
        "seed": seed,
    }
