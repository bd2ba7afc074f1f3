"""Features of one listing that are not text: the shown discount, images, the seller account's
age, logistics and after-sale rates. Pure `pl.Expr` functions on the validated columns."""

from __future__ import annotations

import polars as pl


def discount_depth() -> pl.Expr:
    """1 - price / list_price: how deep the shown discount is (negative = above list)."""
    return (1.0 - pl.col("price") / pl.col("list_price")).alias("discount_depth")


def image_count() -> pl.Expr:
    """Images on the listing, from `image_count` or else the number of image hashes."""
    return pl.coalesce(pl.col("image_count"), pl.col("image_hashes").list.len()).alias(
        "image_count"
    )


def seller_account_age_days() -> pl.Expr:
    """Age of the seller account when the listing went live, in days."""
    age = pl.col("listed_at") - pl.col("seller_registered_at")
    return (age.dt.total_seconds() / 86_400.0).alias("seller_account_age_days")


def ships_from_mismatch() -> pl.Expr:
    """1 when the item ships from another country than the seller's registration."""
    return (
        pl.col("ships_from").str.to_uppercase() != pl.col("seller_country").str.to_uppercase()
    ).alias("ships_from_mismatch")


def _per_unit_sold(col: str, name: str) -> pl.Expr:
    sold = pl.col("units_sold_30d")
    return pl.when(sold > 0).then(pl.col(col) / sold).alias(name)


def return_rate() -> pl.Expr:
    """Returns per unit sold in 30 days; null for listings too young or without sales."""
    return _per_unit_sold("returns_30d", "return_rate")


def complaint_rate() -> pl.Expr:
    """Authenticity complaints per unit sold in 30 days; null when too young or unsold."""
    return _per_unit_sold("complaints_30d", "complaint_rate")
