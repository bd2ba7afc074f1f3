"""Whole-batch aggregates: per-seller behaviour (`seller_listings`, `seller_brands`,
`seller_low_price_share`, `seller_median_price_ratio`, `seller_listings_per_day`), per main
image (`main_image_sellers`, `main_image_brands`) and the seller network (`features.network`).

They are aggregated over the whole input once (`batch_aggregates`) and joined onto each chunk
(`apply_batch_aggregates`), so a batch scored in chunks gets exactly the features it would get
scored whole.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.catalog import repeated_values
from features.fitted import apply_brand_prices
from features.network import seller_network
from features.state import FeatureState

LOW_PRICE_RATIO = 0.5  # "far below the brand's usual price"
PARTITION_ROWS = 5_000_000  # rows per pass of the whole-batch seller and image group-bys


@dataclass(frozen=True, eq=False)
class BatchAggregates:
    """Seller, image and contact aggregates over a whole batch, joined onto every chunk."""

    sellers: pl.DataFrame
    images: pl.DataFrame
    contacts: pl.DataFrame


def image_key() -> pl.Expr:
    """The main image hash as a 64-bit key (null without images): aggregating tens of millions
    of distinct images over 8-byte keys keeps the group-by small."""
    first = pl.col("image_hashes").list.first()
    return pl.when(first.is_not_null()).then(first.hash(seed=0)).alias("_image_key")


def batch_aggregates(lf: pl.LazyFrame, state: FeatureState) -> BatchAggregates:
    """Group-bys over the whole input, then seller clusters. Images and contacts used by one
    seller only are not kept (their counts are implied).

    The input is read once, into a narrow temporary Parquet file of the six columns the
    group-bys need; they all scan that file. (Polars runs each query of a `collect_all` from
    its own scan, so on a catalog every group-by would re-read and re-validate the batch: five
    passes, 44 s of 51 s for 10M listings.)"""
    with tempfile.TemporaryDirectory(prefix="knockoff-aggregates-") as tmp:
        narrow = Path(tmp) / "narrow.parquet"
        apply_brand_prices(
            lf.select("seller_id", "brand", "category", "price", "list_price", "listed_at",
                      "seller_contact_hash", image_key()),
            state.prices,
        ).select("seller_id", "brand", "listed_at", "seller_contact_hash", "_image_key",
                 "price_brand_ratio").sink_parquet(narrow, compression="lz4")
        return _aggregates(pl.scan_parquet(narrow), state)


def _aggregates(base: pl.LazyFrame, state: FeatureState) -> BatchAggregates:
    """The group-bys of `batch_aggregates` over its narrow file.

    Per-seller medians and distinct counts hold every row of a seller until the end, so the
    seller group-by is split into one pass per PARTITION_ROWS rows, each over the sellers whose
    id hashes to that part (the narrow file is cheap to re-read); likewise the images, by key."""
    rows = base.select(pl.len()).collect().item()
    parts = max(1, -(-rows // PARTITION_ROWS))
    seller_parts, image_parts = [], []
    for part in range(parts):
        seller_parts.append(_seller_part(base.filter(pl.col("seller_id").hash(seed=1) % parts
                                                     == part)))
        image_parts.append(_image_part(base.filter(pl.col("_image_key") % parts == part)))
    sellers = pl.concat(seller_parts)
    images = pl.concat(image_parts)
    contacts, clusters = seller_network(base, sellers, images, state.max_image_sellers)
    sellers = sellers.drop("_contacts").join(clusters, on="seller_id", how="left").with_columns(
        pl.col("seller_cluster_size").fill_null(1)
    )
    return BatchAggregates(sellers, images, contacts)


def _seller_part(rows: pl.LazyFrame) -> pl.DataFrame:
    """Per-seller features over `rows` (every row of the sellers in it), plus the seller's
    distinct contact hashes (`_contacts`) for the network."""
    days_active = (pl.col("listed_at").max() - pl.col("listed_at").min()).dt.total_seconds() \
        / 86_400.0 + 1.0
    return rows.group_by("seller_id").agg(
        pl.len().alias("seller_listings"),
        pl.col("brand").drop_nulls().n_unique().alias("seller_brands"),
        (pl.col("price_brand_ratio") < LOW_PRICE_RATIO).mean().alias("seller_low_price_share"),
        pl.col("price_brand_ratio").median().alias("seller_median_price_ratio"),
        (pl.len() / days_active).alias("seller_listings_per_day"),
        pl.col("seller_contact_hash").drop_nulls().unique().alias("_contacts"),
    ).collect(engine="streaming")


def _image_part(rows: pl.LazyFrame) -> pl.DataFrame:
    """Distinct sellers and brands per main image over `rows` (every row of the image keys in
    it), for the images whose counts are not implied by the row itself."""
    keys = rows.select("_image_key").collect(engine="streaming")
    shared = repeated_values(keys["_image_key"]).to_frame()
    del keys
    # Only an image on two or more listings can link sellers or brands: count distinct
    # sellers and brands on the rows of those images alone.
    return (
        rows.join(shared.lazy(), on="_image_key", how="semi")
        .group_by("_image_key").agg(
            pl.col("seller_id").hash(seed=0).n_unique().alias("main_image_sellers"),
            pl.col("brand").drop_nulls().hash(seed=0).n_unique().alias("main_image_brands"),
            pl.col("brand").is_null().any().alias("_unbranded_too"),
        ).filter(
            # the rest (one seller, one brand or none on every row) is implied by the row
            (pl.col("main_image_sellers") > 1) | (pl.col("main_image_brands") > 1)
            | ((pl.col("main_image_brands") == 1) & pl.col("_unbranded_too"))
        ).drop("_unbranded_too")
        .collect(engine="streaming")
    )


def apply_batch_aggregates(lf: pl.LazyFrame, agg: BatchAggregates) -> pl.LazyFrame:
    """Join a batch's aggregates onto its rows (or a chunk of them); images and contact hashes
    that are not in the tables were seen on one seller only."""
    has_image = pl.col("_image_key").is_not_null()
    return (
        lf.with_columns(image_key())
        .join(agg.sellers.lazy(), on="seller_id", how="left", maintain_order="left")
        .join(agg.images.lazy(), on="_image_key", how="left", maintain_order="left")
        .join(agg.contacts.lazy(), on="seller_contact_hash", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("main_image_sellers", pl.when(has_image).then(1)),
            pl.coalesce("main_image_brands",
                        pl.when(has_image).then(pl.col("brand").is_not_null().cast(pl.UInt32))),
            pl.coalesce("contact_accounts",
                        pl.when(pl.col("seller_contact_hash").is_not_null()).then(1)),
        )
    )
