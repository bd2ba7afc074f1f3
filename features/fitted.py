"""Fitted `fit_*`/`apply_*` pairs learned from training rows, each around a frozen dataclass:
price levels per brand x category (`price_brand_ratio`, `price_category_ratio`,
`list_price_brand_ratio`), brand risk from labels older than the delay gap (`brand_risk`), and
category codes (`category_code`). Unseen brands and categories fall back, never crash. The
brand lexicon is in `features.lexicon`; `features.state` holds them all together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from features.contract import LABEL

# ------------------------------------------------------------------ price levels

@dataclass(frozen=True, eq=False)
class BrandPrices:
    """Median genuine-looking price per brand x category, with brand, category, global fallbacks."""

    brand_category: pl.DataFrame
    brand: pl.DataFrame
    category: pl.DataFrame
    overall: float
    min_listings: int


def fit_brand_prices(train: pl.LazyFrame, min_listings: int = 5) -> BrandPrices:
    """Price levels from rows not confirmed fake (fakes would drag the level down)."""
    genuine = train.filter(pl.col(LABEL).is_null() | ~pl.col(LABEL)).select(
        "brand", "category", "price"
    )

    def level(keys: list[str], name: str) -> pl.DataFrame:
        return (
            genuine.drop_nulls(keys)
            .group_by(keys)
            .agg(pl.col("price").median().alias(name), pl.len().alias("_n"))
            .filter(pl.col("_n") >= min_listings)
            .drop("_n")
            .sort(keys)
            .collect(engine="streaming")
        )

    overall = genuine.select(pl.col("price").median()).collect(engine="streaming").item()
    return BrandPrices(
        level(["brand", "category"], "_level_bc"),
        level(["brand"], "_level_b"),
        level(["category"], "_level_c"),
        float(overall if overall is not None else 1.0),
        min_listings,
    )


def apply_brand_prices(lf: pl.LazyFrame, state: BrandPrices) -> pl.LazyFrame:
    """price_brand_ratio, price_category_ratio, list_price_brand_ratio; unseen keys fall back."""
    joined = (
        lf.join(state.brand_category.lazy(), on=["brand", "category"], how="left",
                maintain_order="left")
        .join(state.brand.lazy(), on="brand", how="left", maintain_order="left")
        .join(state.category.lazy(), on="category", how="left", maintain_order="left")
    )
    category_level = pl.coalesce("_level_c", pl.lit(state.overall))
    brand_level = pl.coalesce("_level_bc", "_level_b", category_level)
    return joined.with_columns(
        (pl.col("price") / brand_level).alias("price_brand_ratio"),
        (pl.col("price") / category_level).alias("price_category_ratio"),
        (pl.col("list_price") / brand_level).alias("list_price_brand_ratio"),
    ).drop("_level_bc", "_level_b", "_level_c")


# ------------------------------------------------------------------ brand risk (labels)

@dataclass(frozen=True, eq=False)
class BrandRisk:
    """Smoothed confirmed-fake share per brand, from labels older than the cutoff."""

    brand: pl.DataFrame
    prior: float
    smoothing: float
    label_cutoff: str | None  # ISO timestamp; labels at or after it were not used


def fit_brand_risk(
    train: pl.LazyFrame, label_cutoff: datetime | None, smoothing: float = 50.0
) -> BrandRisk:
    """Fit on labelled rows listed before `label_cutoff` (the delay gap keeps labels that
    arrive after inspection out), shrunk towards the overall labelled fake share."""
    labelled = train.filter(pl.col(LABEL).is_not_null())
    if label_cutoff is not None:
        labelled = labelled.filter(pl.col("listed_at") < label_cutoff)
    totals = labelled.select(
        pl.col(LABEL).sum().alias("fakes"), pl.len().alias("n")
    ).collect(engine="streaming")
    fakes, n = totals.row(0)
    prior = float(fakes / n) if n else 0.0
    per_brand = (
        labelled.drop_nulls("brand")
        .group_by("brand")
        .agg(pl.col(LABEL).sum().alias("fakes"), pl.len().alias("n"))
        .select(
            "brand",
            ((pl.col("fakes") + prior * smoothing) / (pl.col("n") + smoothing)).alias("_risk"),
        )
        .sort("brand")
        .collect(engine="streaming")
    )
    cutoff = None if label_cutoff is None else label_cutoff.isoformat()
    return BrandRisk(per_brand, prior, smoothing, cutoff)


def brand_risk_as_of(
    rows: pl.DataFrame, delay: timedelta, smoothing: float, fallback_prior: float
) -> pl.Series:
    """brand_risk for training rows without leakage: each row sees only the labels of rows
    listed more than `delay` before it (labels arrive after inspection), never its own.

    `rows` has brand, listed_at and the label; returns the feature in the same row order.
    Used for the training rows only: scoring uses the state fitted on the whole window."""
    history = (
        rows.filter(pl.col(LABEL).is_not_null())
        .select("brand", "listed_at", pl.col(LABEL).cast(pl.Int64).alias("_y"))
        .sort("listed_at")
        .with_columns(
            pl.col("_y").cum_sum().alias("_all_fakes"),
            pl.int_range(1, pl.len() + 1).alias("_all_n"),
        )
    )
    per_brand = history.drop_nulls("brand").with_columns(
        pl.col("_y").cum_sum().over("brand").alias("_fakes"),
        pl.int_range(1, pl.len() + 1).over("brand").alias("_n"),
    )
    asked = rows.select(
        pl.int_range(pl.len()).alias("_row"), "brand",
        (pl.col("listed_at") - delay).alias("_asof"),
    ).sort("_asof")
    seen = asked.join_asof(
        history.select("listed_at", "_all_fakes", "_all_n"), left_on="_asof",
        right_on="listed_at", strategy="backward",
    ).drop("listed_at").join_asof(
        per_brand.select("brand", "listed_at", "_fakes", "_n"), left_on="_asof",
        right_on="listed_at", by="brand", strategy="backward", check_sortedness=False,
    )
    prior = pl.when(pl.col("_all_n") > 0).then(pl.col("_all_fakes") / pl.col("_all_n")) \
        .otherwise(fallback_prior)
    risk = (pl.col("_fakes").fill_null(0) + prior * smoothing) / (
        pl.col("_n").fill_null(0) + smoothing)
    return seen.sort("_row").select(risk.alias("brand_risk"))["brand_risk"]


def apply_brand_risk(lf: pl.LazyFrame, state: BrandRisk) -> pl.LazyFrame:
    """brand_risk; unseen or missing brands get the prior."""
    return (
        lf.join(state.brand.lazy(), on="brand", how="left", maintain_order="left")
        .with_columns(pl.col("_risk").fill_null(state.prior).alias("brand_risk"))
        .drop("_risk")
    )


# ------------------------------------------------------------------ category codes

@dataclass(frozen=True, eq=False)
class CategoryCodes:
    """Category -> number (by training frequency); saved with the model for ONNX."""

    codes: pl.DataFrame


def fit_category_codes(train: pl.LazyFrame) -> CategoryCodes:
    counts = (
        train.group_by("category").agg(pl.len().alias("n"))
        .sort(["n", "category"], descending=[True, False])
        .collect(engine="streaming")
    )
    return CategoryCodes(
        counts.select("category", pl.int_range(pl.len(), dtype=pl.Int64).alias("category_code"))
    )


def apply_category_codes(lf: pl.LazyFrame, state: CategoryCodes) -> pl.LazyFrame:
    """category_code; an unseen category is null (LightGBM's missing branch)."""
    return lf.join(state.codes.lazy(), on="category", how="left", maintain_order="left")
