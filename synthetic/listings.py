"""Listings and fakes, one chunk at a time: seller, time, truth, brand, product, price, images
and after-sale activity, assembled into the contract's columns plus the ground truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from features.contract import SCHEMA, TRUTH
from synthetic.draws import Rows, hex16, mix, pick, uniform_index
from synthetic.labels import review_labels
from synthetic.market import (
    CATEGORIES,
    CATEGORY_BASE_PRICE,
    COUNTRIES,
    N_TYPOS,
    PREMIUM,
    SALES_WINDOW_DAYS,
    Config,
    World,
)
from synthetic.sellers import OPPORTUNIST, RESELLER, RING, SMALL, STORE, Sellers
from synthetic.text import COLOURS, NOUNS, SIZES, descriptions, titles

OUTPUT_SCHEMA: dict[str, pl.DataType] = {**SCHEMA, TRUTH: pl.Boolean()}


def _draw_core(rng: np.random.Generator, n: int, world: World, sel: Sellers, cfg: Config
               ) -> Rows:
    """Seller, time, truth, brand, category and product per listing."""
    s = np.searchsorted(sel.cum_weight, rng.random(n), side="right").clip(0, len(sel.kind) - 1)
    first = np.clip(sel.active_from[s], 0, None)
    span = cfg.days - first
    t = first + rng.random(n) * span
    # mild weekly seasonality: weekdays get re-drawn a little more often than weekends
    weekday = (cfg.start_weekday + np.floor(t).astype(np.int64)) % 7
    keep = np.array([0.85, 0.8, 0.8, 0.85, 0.95, 1.0, 1.0])[weekday]
    redraw = rng.random(n) > keep
    t = np.where(redraw, first + rng.random(n) * span, t)
    late = t >= cfg.cutoff
    kind = sel.kind[s]
    fake = rng.random(n) < sel.fake_rate[s]

    # genuine goods come from the seller's portfolio; fakes follow the fake-target weights
    own = sel.brands[s, uniform_index(rng, sel.n_brands[s])]
    unbranded = (rng.random(n) < sel.unbranded[s]) & ~fake
    cum_early = np.cumsum(world.fake_early) / world.fake_early.sum()
    cum_late = np.cumsum(world.fake_late) / world.fake_late.sum()
    u = rng.random(n)
    target = np.where(late, np.searchsorted(cum_late, u, side="right"),
                      np.searchsorted(cum_early, u, side="right")).clip(0, len(world.names) - 1)
    ring_fake = fake & (kind == RING) & (late | ~world.newly[own])
    brand = np.where(fake & ~ring_fake, target, own)
    brand = np.where(unbranded, -1, brand)

    b0 = np.maximum(brand, 0)
    second = (rng.random(n) < 0.25) & (world.n_cats[b0] == 2)
    category = world.cat_pair[b0, second.astype(np.int64)]
    anchor = world.cat_pair[sel.brands[s, 0], 0]
    unb_cat = np.where(rng.random(n) < 0.6, anchor, rng.integers(0, len(CATEGORIES), n))
    category = np.where(unbranded, unb_cat, category)
    n_nouns = np.array([len(x) for x in NOUNS])[category]
    return {
        "seller": s, "t": t, "late": late, "kind": kind, "fake": fake, "brand": brand,
        "category": category, "noun": uniform_index(rng, n_nouns),
        "colour": rng.integers(0, len(COLOURS), n),
        "size": uniform_index(rng, np.array([len(x) for x in SIZES])[category]),
        "smart": rng.random(n) < np.where(late, min(0.35 + 0.2 * cfg.drift, 0.8), 0.35),
    }


def _round_price(p: np.ndarray) -> np.ndarray:
    return np.where(p >= 10, np.round(p) - 0.01, np.maximum(np.round(p, 2), 0.5))


def _prices(rng: np.random.Generator, r: Rows, world: World) -> None:
    """Price and list price: full price at stores, clearance at resellers, cheap/smart fakes."""
    n = len(r["fake"])
    b0 = np.maximum(r["brand"], 0)
    level = world.level[b0, r["category"]]
    unb_level = CATEGORY_BASE_PRICE[r["category"]] * np.exp(rng.uniform(np.log(0.3), np.log(1.4),
                                                                          n))
    level = np.where(r["brand"] < 0, unb_level, level)
    kind, fake = r["kind"], r["fake"]
    item = level * rng.lognormal(0.0, 0.2, n)  # this product's retail price
    u = rng.random(n)
    # Premium houses control their prices (selective distribution, no outlets online): genuine
    # premium goods are rarely more than ~30% off. Mid, mass and unbranded goods are cleared at
    # 40-75% off (end of line) by every kind of seller, so a deep discount is only suspicious
    # together with the brand's tier -- an interaction a linear score cannot express.
    premium = (r["brand"] >= 0) & (world.tier[b0] == PREMIUM)
    deep = np.where(premium, 0.0, rng.uniform(0.4, 0.75, n))
    discount = np.select(
        [kind == STORE, kind == RESELLER, kind == SMALL],
        [np.where(u < 0.12, rng.uniform(0.1, 0.25, n), np.where(u < 0.18, deep, 0.0)),
         np.where(u < 0.25, np.where(premium, rng.uniform(0.15, 0.3, n), deep),
                  np.where(u < 0.55, rng.uniform(0.05, 0.2, n), 0.0)),
         np.where(u < 0.2, deep, rng.uniform(-0.05, np.where(premium, 0.25, 0.4), n))],
        np.where(u < 0.15, deep, rng.uniform(0.0, 0.3, n)),
    )
    genuine_price = item * (1 - discount)
    fake_ratio = np.where(r["smart"], rng.uniform(0.70, 0.95, n), rng.uniform(0.10, 0.35, n))
    price = _round_price(np.where(fake, level * fake_ratio, genuine_price))

    show_list = np.select(
        [kind == STORE, kind == RESELLER, kind == SMALL],
        [(discount > 0) | (rng.random(n) < 0.4), (discount > 0) | (rng.random(n) < 0.5),
         rng.random(n) < 0.15],
        rng.random(n) < 0.3,
    )
    genuine_list = np.maximum(_round_price(item), price)
    inflated = fake & (rng.random(n) < 0.6)
    fake_list = _round_price(level * rng.uniform(1.0, 1.8, n))
    list_price = np.where(fake, np.where(inflated, fake_list, np.nan),
                          np.where(show_list, genuine_list, np.nan))
    r["level"], r["price"], r["list_price"] = level, price, list_price


def _brand_strings(rng: np.random.Generator, r: Rows) -> None:
    """Declared brand and the brand as written in the title (real, typosquat or missing)."""
    n = len(r["fake"])
    fake, brand = r["fake"], r["brand"]
    variant = np.maximum(brand, 0) * N_TYPOS + rng.integers(0, N_TYPOS, n)
    declared_typo = fake & (rng.random(n) < 0.15)
    declared_null = (brand < 0) | np.where(fake, rng.random(n) < 0.10, rng.random(n) < 0.02)
    title_typo = fake & (declared_typo | (rng.random(n) < 0.22))
    title_missing = (brand < 0) | (rng.random(n) < np.where(fake, 0.15, 0.07))
    r["declared_typo"] = declared_typo & ~declared_null
    r["title_typo"] = title_typo & ~title_missing
    r["variant"], r["declared_null"], r["title_missing"] = variant, declared_null, title_missing


def _images(rng: np.random.Generator, r: Rows, world: World, sel: Sellers
            ) -> tuple[np.ndarray, pl.Series]:
    """Official photo sets, own photos, and ring photo pools (with near-duplicates)."""
    n = len(r["fake"])
    fake, kind, s = r["fake"], r["kind"], r["seller"]
    branded = r["brand"] >= 0
    lam = np.where(fake, 1.8, np.where(np.isin(kind, [STORE, RESELLER]), 5.0, 3.5))
    count = np.clip(1 + rng.poisson(lam), 1, 10)
    ring = kind == RING
    p_off_main = np.select(
        [ring, fake, kind == STORE, kind == RESELLER, kind == SMALL],
        [0.15, 0.35, 1.0, 0.85, 0.15], 0.3) * (branded | fake)
    p_off_rest = np.select([ring, fake, kind == STORE, kind == RESELLER], [0.1, 0.1, 1.0, 0.7],
                           0.1) * (branded | fake)
    p_pool = np.where(ring, 0.85, 0.0)

    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    total = int(offsets[-1])
    row = np.repeat(np.arange(n), count)
    slot = np.arange(total) - offsets[row]
    main = slot == 0
    u = rng.random(total)
    p_off = np.where(main, p_off_main[row], p_off_rest[row])
    use_pool = u < p_pool[row] * np.where(main, 1.0, 0.9)
    use_off = ~use_pool & (rng.random(total) < p_off)

    b0 = np.maximum(r["brand"], 0)
    official = mix(world.photo_salt, b0[row], r["category"][row], r["noun"][row],
                    r["colour"][row], slot)
    ring_id = np.maximum(sel.ring[s], 0)
    pool_idx = np.floor(rng.random(total) * sel.ring_pool[ring_id][row]).astype(np.int64)
    pooled = mix(world.ring_salt, ring_id[row], pool_idx)
    own = rng.integers(0, 2**63, total, dtype=np.int64).astype(np.uint64) * np.uint64(2) + (
        rng.random(total) < 0.5).astype(np.uint64)
    hashes = np.where(use_pool, pooled, np.where(use_off, official, own))
    # re-uploads of reused photos drift by a bit or two in perceptual-hash space
    near = (use_pool & (rng.random(total) < 0.2)) | (use_off & (rng.random(total) < 0.05))
    flip = np.left_shift(np.uint64(1), rng.integers(0, 64, total).astype(np.uint64))
    hashes = np.where(near, hashes ^ flip, hashes)
    values = hex16(hashes)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), values)
    return count, pl.Series("image_hashes", lists)


def _activity(rng: np.random.Generator, r: Rows, cfg: Config) -> None:
    """Sales, returns and authenticity complaints (only for listings >= 30 days old)."""
    n = len(r["fake"])
    fake, kind = r["fake"], r["kind"]
    base = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                     [6.0, 5.0, 1.0, 2.0], 3.0)
    appeal = np.clip(r["level"] / r["price"], 0.3, 5.0) ** 0.5
    units = rng.poisson(base * appeal * rng.lognormal(0.0, 0.8, n))
    p_ret = np.where(fake, np.where(r["smart"], 0.10, 0.18),
                     np.where(kind == SMALL, 0.06, 0.04))
    p_comp = np.where(fake, np.where(r["smart"], 0.05, 0.12), 0.003)
    returns = rng.binomial(units, p_ret)
    complaints = rng.binomial(units, p_comp)
    old = r["t"] <= cfg.days - SALES_WINDOW_DAYS
    r["old"], r["units"], r["returns"], r["complaints"] = old, units, returns, complaints


def _nullable_int(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(valid)).then(pl.Series(values.astype(np.int64))))\
        .to_series()


def listing_chunk(rng: np.random.Generator, first_row: int, n: int, world: World, sel: Sellers,
                  cfg: Config) -> pl.DataFrame:
    """One chunk of listings, every column vectorised."""
    r = _draw_core(rng, n, world, sel, cfg)
    _prices(rng, r, world)
    _brand_strings(rng, r)
    s = r["seller"]
    r["ships_from"] = np.where(rng.random(n) < sel.p_abroad[s], sel.ship_alt[s], sel.country[s])
    title = titles(rng, r, world, cfg)
    description = descriptions(rng, r, world)
    image_count, image_hashes = _images(rng, r, world, sel)
    _activity(rng, r, cfg)
    label = review_labels(rng, r, sel, cfg)

    brand = pl.select(
        pl.when(pl.Series(r["declared_null"])).then(None)
        .when(pl.Series(r["declared_typo"])).then(pick(world.typos, r["variant"]))
        .otherwise(pick(world.names, np.maximum(r["brand"], 0)))
    ).to_series()
    listed_us = cfg.start_us + np.floor(r["t"] * 86_400).astype(np.int64) * 1_000_000
    frame = pl.DataFrame({
        "listing_id": pl.int_range(first_row, first_row + n, eager=True),
        "seller_id": sel.ids.gather(pl.Series(s)),
        "title": title,
        "description": description,
        "brand": brand,
        "category": pick(CATEGORIES, r["category"]),
        "price": r["price"],
        "list_price": pl.Series(r["list_price"], nan_to_null=True),
        "currency": pl.repeat("EUR", n, eager=True),
        "listed_at": pl.Series(listed_us),
        "image_count": image_count.astype(np.int64),
        "image_hashes": image_hashes,
        "ships_from": pick(COUNTRIES, r["ships_from"]),
        "units_sold_30d": _nullable_int(r["units"], r["old"]),
        "returns_30d": _nullable_int(r["returns"], r["old"]),
        "complaints_30d": _nullable_int(r["complaints"], r["old"]),
        "seller_registered_at": pl.Series(sel.registered_us[s]),
        "seller_country": pick(COUNTRIES, sel.country[s]),
        "seller_rating": pl.Series(sel.rating[s], nan_to_null=True),
        "seller_review_count": sel.reviews[s].astype(np.int64),
        "seller_verified": sel.verified[s],
        "seller_contact_hash": pl.Series(hex16(sel.contact[s])),
        "is_counterfeit": pl.Series(label, nan_to_null=True),
        TRUTH: r["fake"],
    })
    return frame.with_columns(
        (pl.lit(f"{cfg.id_prefix}L") + pl.col("listing_id").cast(pl.String).str.zfill(9))
        .alias("listing_id"),
        pl.col("listed_at", "seller_registered_at").cast(pl.Datetime("us")).dt
        .replace_time_zone("UTC"),
        pl.col("is_counterfeit").cast(pl.Boolean),
    ).select(pl.col(c).cast(t) for c, t in OUTPUT_SCHEMA.items())
