"""The catalog contract (v1) in code: the columns, their types, and what is required.

This is the machine-readable copy of `shared/catalog-contract.md` that validation uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UTC_TIMESTAMP = pl.Datetime("us", "UTC")


class CatalogError(Exception):
    """The whole batch is unusable (or an output cannot be written); the message names the
    file and the problem. The command line exits 2 with it, the API answers 422."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    required: bool
    meaning: str


LISTING_COLUMNS: tuple[Column, ...] = (
    Column("listing_id", pl.String(), True, "unique within a batch"),
    Column("seller_id", pl.String(), True, "the platform's seller account id"),
    Column("title", pl.String(), True, "listing title as shown to buyers (non-empty)"),
    Column("description", pl.String(), False, "listing body text"),
    Column("brand", pl.String(), False, "brand as declared by the seller; null = unbranded"),
    Column("category", pl.String(), True, "platform category path, e.g. `Fashion > Bags`"),
    Column("price", pl.Float64(), True, "current selling price, > 0"),
    Column("list_price", pl.Float64(), False, '"was" / recommended price'),
    Column("currency", pl.String(), True, "ISO 4217 code, e.g. `EUR`"),
    Column("listed_at", UTC_TIMESTAMP, True, "when the listing went live (UTC)"),
    Column("image_count", pl.Int64(), False, "number of images on the listing"),
    Column("image_hashes", pl.List(pl.String()), False, "64-bit perceptual hashes, main first"),
    Column("ships_from", pl.String(), False, "ISO 3166-1 alpha-2 country the item ships from"),
    Column("units_sold_30d", pl.Int64(), False, "units sold in the last 30 days"),
    Column("returns_30d", pl.Int64(), False, "units returned in the last 30 days"),
    Column("complaints_30d", pl.Int64(), False, "authenticity complaints in the last 30 days"),
    Column("seller_registered_at", UTC_TIMESTAMP, False, "when the seller account was created"),
    Column("seller_country", pl.String(), False, "ISO 3166-1 alpha-2 country of the seller"),
    Column("seller_rating", pl.Float64(), False, "seller's average rating, 0 to 5"),
    Column("seller_review_count", pl.Int64(), False, "number of seller reviews"),
    Column("seller_verified", pl.Boolean(), False, "identity / business verification done"),
    Column("seller_contact_hash", pl.String(), False, "salted hash of contact details"),
    Column("is_counterfeit", pl.Boolean(), False, "confirmed label; null = not reviewed"),
)

SCHEMA: dict[str, pl.DataType] = {c.name: c.dtype for c in LISTING_COLUMNS}
REQUIRED: tuple[str, ...] = tuple(c.name for c in LISTING_COLUMNS if c.required)
LABEL = "is_counterfeit"
# ground truth that synthetic catalogs carry next to the contract columns (never a feature)
TRUTH = "true_is_counterfeit"

SCORED_SCHEMA: dict[str, pl.DataType] = {
    "listing_id": pl.String(),
    "seller_id": pl.String(),
    "score": pl.Float64(),
    "flagged": pl.Boolean(),
    "reasons": pl.List(pl.String()),
    "model_version": pl.String(),
}

REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "row_number": pl.Int64(),
    "listing_id": pl.String(),
    "reason": pl.String(),
}
