"""What an officer sees about a case: the listing as submitted, its photos' hashes with how
many sellers and brands share each in the batch, its price against the brand's usual level in
the batch, the seller panel (every case of the seller, past decisions, share flagged) and the
linked sellers (a shared contact hash or shared photos).

Batch-wide figures come from the batch's own files (the upload and `scores.parquet`), read
once per batch and cached; without them (a batch scored elsewhere) those figures are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from features.catalog import read_catalog
from serving.casework import Officer, case_decisions, case_row, pending_second_review
from serving.store import _utc, cases

MAX_LINKED = 12
MAX_SELLER_CASES = 200
LISTING_FIELDS = ("listing_id", "seller_id", "title", "description", "brand", "category",
                  "price", "list_price", "currency", "listed_at", "ships_from")
SELLER_FIELDS = ("seller_registered_at", "seller_country", "seller_rating",
                 "seller_review_count", "seller_verified", "seller_contact_hash")


@dataclass(frozen=True)
class BatchFacts:
    images: pl.DataFrame  # image_hash, seller_id, brand (one row per listing photo)
    prices: pl.DataFrame  # brand, category, median_price, listings
    sellers: pl.DataFrame  # seller_id, listings, flagged


@lru_cache(maxsize=8)
def _facts(folder: str, stamp: float) -> BatchFacts | None:
    """The batch-wide tables, read once per batch (the stamp is the upload's mtime)."""
    uploads = sorted(Path(folder).glob("upload.*"))
    scores = Path(folder) / "scores.parquet"
    if not uploads or not scores.exists():
        return None
    rows = read_catalog(uploads[0]).rows.select("seller_id", "brand", "category", "price",
                                                 "image_hashes").collect()
    images = (rows.select("seller_id", "brand", pl.col("image_hashes").alias("image_hash"))
              .explode("image_hash").drop_nulls("image_hash"))
    prices = rows.group_by("brand", "category").agg(
        median_price=pl.col("price").median(), listings=pl.len())
    sellers = pl.read_parquet(scores, columns=["seller_id", "flagged"]).group_by(
        "seller_id").agg(listings=pl.len(), flagged=pl.col("flagged").sum())
    return BatchFacts(images, prices, sellers)


def batch_facts(data_dir: Path, batch_id: str) -> BatchFacts | None:
    folder = data_dir / "batches" / batch_id
    uploads = sorted(folder.glob("upload.*")) if folder.is_dir() else []
    if not uploads:
        return None
    return _facts(str(folder), uploads[0].stat().st_mtime)


def _photos(facts: BatchFacts | None, hashes: list[str]) -> list[dict[str, Any]]:
    if facts is None:
        return [{"hash": h, "sellers": None, "brands": None} for h in hashes]
    shared = (facts.images.filter(pl.col("image_hash").is_in(hashes)).group_by("image_hash")
              .agg(sellers=pl.col("seller_id").n_unique(), brands=pl.col("brand").n_unique()))
    found = {r["image_hash"]: r for r in shared.iter_rows(named=True)}
    return [{"hash": h, "sellers": found.get(h, {}).get("sellers"),
             "brands": found.get(h, {}).get("brands")} for h in hashes]


def _price_level(facts: BatchFacts | None, row: dict[str, Any]) -> dict[str, Any] | None:
    if facts is None or row.get("brand") is None:
        return None
    level = facts.prices.filter(pl.col("brand") == row["brand"],
                                pl.col("category") == row["category"])
    if level.is_empty():
        return None
    median = float(level["median_price"][0])
    return {"median_price": median, "listings": int(level["listings"][0]),
            "ratio": row["price"] / median if median else None}


def _linked(engine: Engine, facts: BatchFacts | None, row: dict[str, Any],
            hashes: list[str]) -> list[dict[str, Any]]:
    """Sellers sharing the contact hash (any batch of the platform) or a photo (this batch)."""
    links: dict[str, set[str]] = {}
    if row.get("seller_contact_hash"):
        # no DISTINCT: it would steer SQLite to the seller index instead of the contact one
        query = (sa.select(cases.c.seller_id).where(
            cases.c.platform_id == row["platform_id"],
            cases.c.seller_contact_hash == row["seller_contact_hash"],
            cases.c.seller_id != row["seller_id"]).limit(20 * MAX_LINKED))
        with engine.connect() as conn:
            for seller in list(dict.fromkeys(conn.scalars(query)))[:MAX_LINKED]:
                links.setdefault(seller, set()).add("contact")
    if facts is not None and hashes:
        others = (facts.images.filter(pl.col("image_hash").is_in(hashes),
                                      pl.col("seller_id") != row["seller_id"])
                  .get_column("seller_id").unique().sort().head(MAX_LINKED))
        for seller in others:
            links.setdefault(seller, set()).add("photos")
    return [{"seller_id": s, "via": sorted(v)} for s, v in sorted(links.items())[:MAX_LINKED]]


def _seller(engine: Engine, facts: BatchFacts | None, row: dict[str, Any]
            ) -> dict[str, Any]:
    query = (sa.select(cases.c.id, cases.c.listing_id, cases.c.title, cases.c.score,
                       cases.c.kind, cases.c.status, cases.c.batch_id)
             .where(cases.c.platform_id == row["platform_id"],
                    cases.c.seller_id == row["seller_id"])
             .order_by(cases.c.score.desc()).limit(MAX_SELLER_CASES))
    with engine.connect() as conn:
        listed = [dict(r) for r in conn.execute(query).mappings()]
        verdicts = case_decisions(conn, [c["id"] for c in listed])
    for case in listed:
        shown = [d for d in verdicts.get(case["id"], []) if d["review"] == 1]
        case["verdict"] = shown[0]["verdict"] if shown and case["id"] != row["id"] else None
    counts = None
    if facts is not None:
        mine = facts.sellers.filter(pl.col("seller_id") == row["seller_id"])
        if not mine.is_empty():
            n, flagged = int(mine["listings"][0]), int(mine["flagged"][0])
            counts = {"listings": n, "flagged": flagged, "share_flagged": flagged / n}
    age = None
    if row.get("seller_registered_at") is not None and row.get("listed_at") is not None:
        age = (_utc(row["listed_at"]) - _utc(row["seller_registered_at"])).days
    return {"seller_id": row["seller_id"], "account_age_days": age,
            **{k.removeprefix("seller_"): row.get(k) for k in SELLER_FIELDS},
            "cases": listed, "batch": counts,
            "counterfeit_decisions": sum(c["verdict"] == "counterfeit" for c in listed)}


def case_view(engine: Engine, data_dir: Path, case_id: int, viewer: Officer) -> dict[str, Any]:
    """Everything the case page and `GET /v1/cases/{id}` show."""
    with engine.connect() as conn:
        row = case_row(conn, case_id)
        history = case_decisions(conn, [case_id]).get(case_id, [])
    blind = pending_second_review(engine, case_id)
    if blind is not None and viewer.role == "officer":
        history = []  # the second reviewer decides without seeing the first decision
    facts = batch_facts(data_dir, row["batch_id"])
    hashes = list(row.get("image_hashes") or [])
    for key in ("listed_at", "created_at", "seller_registered_at"):
        row[key] = _utc(row.get(key))
    return {
        "case": {k: row[k] for k in ("id", "platform", "batch_id", "listing_id", "seller_id",
                                     "score", "reasons", "model_version", "kind", "status")},
        "listing": {k: row.get(k) for k in LISTING_FIELDS},
        "photos": _photos(facts, hashes),
        "price_level": _price_level(facts, row),
        "seller": _seller(engine, facts, row),
        "linked_sellers": _linked(engine, facts, row, hashes),
        "decisions": [{"review": d["review"], "user": d["user"], "verdict": d["verdict"],
                       "reason_code": d["reason_code"], "note": d["note"],
                       "decided_at": _utc(d["decided_at"])} for d in history],
        "second_review_pending": blind is not None,
        "claimed_by": row.get("claimed_by"),
    }
