"""Synthetic labelled catalog generator.

Builds a seeded "world" (brands, categories, price levels, typosquats), a seller table
(authorised stores, resellers, small sellers, opportunists, counterfeit rings) and then
streams listings chunk by chunk, fully vectorised, to Parquet / CSV / JSON Lines. Every row
carries the contract columns plus ``true_is_counterfeit`` (the ground truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from features.contract import SCHEMA

TRUTH = "true_is_counterfeit"
OUTPUT_SCHEMA: dict[str, pl.DataType] = {**SCHEMA, TRUTH: pl.Boolean()}
SUFFIXES = (".parquet", ".csv", ".jsonl")

DAY_US = 86_400_000_000
SALES_WINDOW_DAYS = 30
LABEL_LAG_DAYS = 14

# --------------------------------------------------------------------------- the world

CATEGORIES: tuple[str, ...] = (
    "Fashion > Bags",
    "Fashion > Shoes",
    "Watches",
    "Electronics > Audio",
    "Electronics > Phone accessories",
    "Beauty > Fragrance",
    "Toys",
    "Sports > Apparel",
)
# median price (EUR) of a mass-market brand in each category
CATEGORY_BASE_PRICE = np.array([40.0, 50.0, 45.0, 35.0, 12.0, 30.0, 20.0, 25.0])

NOUNS: tuple[tuple[str, ...], ...] = (
    ("Tote Bag", "Shoulder Bag", "Crossbody Bag", "Clutch", "Backpack", "Wallet", "Handbag",
     "Weekender Bag", "Belt Bag"),
    ("Sneakers", "Loafers", "Ankle Boots", "Heels", "Sandals", "Running Shoes", "Trainers",
     "Derby Shoes"),
    ("Chronograph Watch", "Automatic Watch", "Diver Watch", "Dress Watch", "Quartz Watch",
     "Smartwatch", "Pilot Watch"),
    ("Wireless Earbuds", "Over-Ear Headphones", "Bluetooth Speaker",
     "Noise Cancelling Headphones", "Soundbar", "In-Ear Monitors"),
    ("Phone Case", "Charging Cable", "Wireless Charger", "Screen Protector", "Power Bank",
     "Car Mount", "Wall Charger"),
    ("Eau de Parfum", "Eau de Toilette", "Perfume Gift Set", "Body Mist", "Cologne",
     "Parfum Extrait"),
    ("Building Set", "Plush Toy", "Collectible Figure", "Remote Control Car", "Puzzle", "Doll",
     "Board Game"),
    ("Running Jacket", "Training Shirt", "Leggings", "Track Pants", "Hoodie", "Sports Bra",
     "Football Jersey", "Shorts"),
)
SIZES: tuple[tuple[str, ...], ...] = (
    ("Mini", "Small", "Medium", "Large", "25cm", "30cm"),
    tuple(f"EU {s}" for s in range(36, 47)),
    ("36mm", "40mm", "42mm", "44mm"),
    ("Gen 2", "Pro", "Lite", "2026 Edition"),
    ("6.1 inch", "6.7 inch", "20W", "30W", "1m", "2m"),
    ("30ml", "50ml", "100ml", "125ml"),
    ("Ages 3+", "Ages 6+", "Ages 8+", "Ages 12+"),
    ("XS", "S", "M", "L", "XL", "XXL"),
)
ADJECTIVES = ("Classic", "Premium", "Leather", "Vintage", "Slim", "Sport", "Limited Edition",
              "Signature", "Essential", "Lightweight", "Iconic", "Modern", "Deluxe", "Mini")
COLOURS = ("Black", "White", "Beige", "Brown", "Navy", "Red", "Pink", "Gold", "Silver", "Green",
           "Grey", "Blue", "Tan", "Burgundy")
HYPE = ("Hot Sale", "Top Quality", "Best Price", "Free Shipping", "Limited Stock", "Wholesale",
        "100% Authentic", "Original", "Luxury")
SYMBOLS = ("!!!", "$$$", "★★★", "★", "!!", "★ SALE ★", "!!!!!")
COPY_WORDS = ("replica", "Replica", "1:1", "AAA", "AAA+", "mirror quality", "super copy",
              "OEM quality", "high copy", "first copy", "réplica", "replika", "kopie",
              "imitación", "nachbildung", "imitazione", "fake", "copy", "Rep")
LOOKALIKE = ("compatible with {}", "case for {}", "{} style", "inspired by {}", "{} look",
             "for {}")
# allowed look-alike templates per category (indices into LOOKALIKE), in CATEGORIES order
LOOKALIKE_BY_CATEGORY = np.array([[2, 4], [2, 3], [2, 5], [0, 5], [0, 1], [3, 3], [0, 2], [2, 3]])

GENUINE_SENTENCES = (
    "Brand new and unused, in original packaging.",
    "Ships within 2 business days from our warehouse.",
    "Comes with the original box, dust bag and receipt.",
    "Full manufacturer warranty included.",
    "30-day free returns.",
    "Please check the size guide before ordering.",
    "Gently used, in excellent condition, see photos.",
    "Genuine product with serial number.",
    "Gift wrapping available on request.",
    "Colour may vary slightly due to screen settings.",
    "Invoice with VAT provided.",
    "Part of the current season collection.",
    "Clearance sale - last pieces available.",
    "Smoke-free and pet-free home.",
    "Tracked shipping with insurance.",
    "Made from premium materials.",
    "Fits true to size.",
    "Questions? Send us a message, we reply within 24 hours.",
    "Sold as seen, no returns on used items.",
    "Tested and working, battery included.",
)
FAKE_SENTENCES = (
    "Top quality, same as original.",
    "Best price on the market!!",
    "Fast shipping worldwide.",
    "Contact us for more models and wholesale.",
    "Factory direct, no middleman.",
    "No box, item only.",
    "100% satisfaction, good quality.",
    "Cheap price, great gift.",
    "Pictures are real shot.",
    "Same material as the original.",
    "Limited stock, order now!",
    "Ships from overseas warehouse, delivery 10-25 days.",
    "Brand logo on item.",
    "Very high quality, you will not regret.",
)
COPY_SENTENCES = ("{} quality, looks exactly like the original.", "Grade: {}.",
                  "This is a {} item.", "{} - best version on the market.")

EU = ("DE", "FR", "IT", "ES", "NL", "PL", "BE", "AT", "SE", "IE", "PT", "CZ")
EU_WEIGHTS = np.array([18, 14, 12, 11, 8, 7, 5, 4, 4, 3, 3, 3], dtype=float)
OTHER_LEGIT = ("GB", "US")
FAKE_ORIGINS = ("CN", "HK", "TR", "TH", "VN", "AE")
COUNTRIES = EU + OTHER_LEGIT + FAKE_ORIGINS

PREMIUM, MID, MASS = 0, 1, 2


@dataclass(frozen=True)
class Brand:
    name: str
    tier: int
    categories: tuple[int, ...]
    fake_weight: float


BRANDS: tuple[Brand, ...] = (
    Brand("Valenti Moro", PREMIUM, (0, 1), 10.0),
    Brand("Maison Lumel", PREMIUM, (0, 5), 8.0),
    Brand("Castellane", PREMIUM, (0,), 4.0),
    Brand("Orsini", PREMIUM, (1,), 3.0),
    Brand("Vogtmann", PREMIUM, (2,), 3.0),
    Brand("Chronaris", PREMIUM, (2,), 8.0),
    Brand("Aurelius", PREMIUM, (2,), 4.0),
    Brand("Soundelle", PREMIUM, (3,), 6.0),
    Brand("Bexley", PREMIUM, (3, 4), 2.0),
    Brand("Nordvik", PREMIUM, (7,), 2.0),
    Brand("Strydon", PREMIUM, (7, 1), 6.0),
    Brand("Delacroix", PREMIUM, (5,), 5.0),
    Brand("Ambrette", PREMIUM, (5,), 2.0),
    Brand("Brickora", PREMIUM, (6,), 4.0),
    Brand("Plushka", PREMIUM, (6,), 3.0),
    Brand("Marlowe", MID, (0,), 0.5),
    Brand("Fenwick", MID, (1,), 0.5),
    Brand("Tessaro", MID, (1, 0), 0.5),
    Brand("Tempora", MID, (2,), 0.0),
    Brand("Quartzline", MID, (2,), 0.5),
    Brand("Sonique", MID, (3,), 0.5),
    Brand("Auralink", MID, (3, 4), 0.0),
    Brand("Voltcase", MID, (4,), 0.5),
    Brand("Gripshell", MID, (4,), 0.3),
    Brand("Florelle", MID, (5,), 0.5),
    Brand("Vireo", MID, (7,), 0.3),
    Brand("Peakform", MID, (7, 1), 0.0),
    Brand("Tinkertown", MID, (6,), 0.3),
    Brand("Basix", MASS, (0,), 0.1),
    Brand("Urbanstep", MASS, (1,), 0.1),
    Brand("Tiko", MASS, (2,), 0.1),
    Brand("Buzzline", MASS, (3,), 0.1),
    Brand("Chargeo", MASS, (4,), 0.1),
    Brand("Snapguard", MASS, (4,), 0.1),
    Brand("Fresca", MASS, (5,), 0.1),
    Brand("Funvale", MASS, (6,), 0.1),
    Brand("Runwell", MASS, (7,), 0.1),
    Brand("Everfit", MASS, (7,), 0.1),
    Brand("Packly", MASS, (0,), 0.1),
    Brand("Kicko", MASS, (1,), 0.1),
)
# brands that are only counterfeited in the last third of the time span (drift)
NEWLY_TARGETED: tuple[str, ...] = ("Tempora", "Auralink", "Peakform")
NEWLY_TARGETED_WEIGHT = 8.0
TIER_MULTIPLIER = {PREMIUM: (6.0, 18.0), MID: (2.0, 4.0), MASS: (0.8, 1.3)}
TIER_POPULARITY = {PREMIUM: 1.0, MID: 2.0, MASS: 3.0}
HOMOGLYPHS = {"o": "0", "l": "1", "i": "1", "m": "rn", "w": "vv", "e": "3", "a": "@", "s": "$"}
N_TYPOS = 6
MARKET_SEED = 0  # brands' price levels and typo variants do not change with --seed

# seller kinds
STORE, RESELLER, SMALL, OPPORTUNIST, RING = 0, 1, 2, 3, 4
MAX_SELLER_BRANDS = 12


@dataclass
class World:
    """Seeded brand-level facts shared by every chunk."""

    names: np.ndarray  # [B] str
    cat_pair: np.ndarray  # [B, 2] category index (second = first when single-category)
    n_cats: np.ndarray  # [B]
    level: np.ndarray  # [B, C] median price (nan outside home categories)
    typos: np.ndarray  # [B * N_TYPOS] str
    tier: np.ndarray  # [B] PREMIUM / MID / MASS
    popularity: np.ndarray  # [B]
    fake_early: np.ndarray  # [B] fake target weights before the drift cutoff
    fake_late: np.ndarray  # [B] ... and after it
    newly: np.ndarray  # [B] bool
    cat_brands: np.ndarray  # [C, max] brands whose home includes the category (padded)
    cat_brand_n: np.ndarray  # [C]
    photo_salt: np.uint64  # official photos
    ring_salt: np.uint64  # rings' private photo pools


@dataclass
class Sellers:
    """The seller table: one entry per account (arrays of equal length)."""

    kind: np.ndarray
    ring: np.ndarray  # ring index or -1
    late: np.ndarray  # ring active only in the last third
    active_from: np.ndarray  # days relative to start (may be negative)
    registered_us: np.ndarray
    country: np.ndarray  # index into COUNTRIES
    ship_alt: np.ndarray  # alternative ships-from country index
    p_abroad: np.ndarray
    rating: np.ndarray  # nan = null
    reviews: np.ndarray
    verified: np.ndarray
    contact: np.ndarray  # uint64
    fake_rate: np.ndarray
    unbranded: np.ndarray
    brands: np.ndarray  # [S, MAX_SELLER_BRANDS]
    n_brands: np.ndarray
    cum_weight: np.ndarray
    ring_pool: np.ndarray  # [R] photo pool size per ring
    ids: pl.Series


@dataclass(frozen=True)
class Config:
    start_us: int
    days: int
    drift: float
    start_weekday: int

    @property
    def cutoff(self) -> float:
        """Start of the drift period, in days from start."""
        return self.days * 2.0 / 3.0


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _mix(*parts: np.ndarray | np.uint64 | int) -> np.ndarray:
    """Hash several integer arrays into one uint64 array."""
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        h = _splitmix64(h ^ np.asarray(p).astype(np.uint64))
    return h


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex16(values: np.ndarray) -> pa.StringArray:
    """uint64 -> 16-char lowercase hex strings, built straight into an Arrow buffer."""
    n = len(values)
    raw = values.astype(">u8").view(np.uint8).reshape(n, 8)
    nibbles = np.empty((n, 16), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 15
    chars = np.ascontiguousarray(_HEX[nibbles])
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _pick(values: tuple[str, ...] | np.ndarray, idx: np.ndarray, valid: np.ndarray | None = None
          ) -> pl.Series:
    """values[idx] as a String series; null where ``valid`` is False."""
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    s = pl.Series(values=items, dtype=pl.String)
    index = pl.Series(idx.astype(np.int64))
    if valid is not None:
        index = pl.select(pl.when(pl.Series(valid)).then(index)).to_series()
    return s.gather(index)


def _uniform_index(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    return np.minimum((rng.random(len(counts)) * counts).astype(np.int64), counts - 1)


def _gumbel_topk(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n weighted samples without replacement per row (columns ordered), via Gumbel keys."""
    with np.errstate(divide="ignore"):
        keys = np.log(weights)[None, :] - np.log(-np.log(rng.random((n, len(weights)))))
    return np.argsort(-keys, axis=1)[:, :MAX_SELLER_BRANDS]


def _typo_variants(name: str, rng: np.random.Generator) -> list[str]:
    """Typosquats: swaps, drops, doubled letters and homoglyphs (0/o, 1/l, rn/m, ...)."""
    out: list[str] = []
    lower = name.lower()
    for _ in range(200):
        op = int(rng.integers(4))
        i = int(rng.integers(1, len(name) - 1))
        if op == 0 and name[i].isalpha() and name[i + 1].isalpha():
            v = name[:i] + name[i + 1] + name[i] + name[i + 2:]
        elif op == 1 and name[i].isalpha():
            v = name[:i] + name[i + 1:]
        elif op == 2 and name[i].isalpha():
            v = name[:i] + name[i] + name[i:]
        elif op == 3:
            spots = [j for j, c in enumerate(lower) if c in HOMOGLYPHS and j > 0]
            if not spots:
                continue
            j = spots[int(rng.integers(len(spots)))]
            v = name[:j] + HOMOGLYPHS[lower[j]] + name[j + 1:]
        else:
            continue
        if v != name and v not in out:
            out.append(v)
        if len(out) == N_TYPOS:
            return out
    return (out * N_TYPOS)[:N_TYPOS]


def build_world(seed: int, drift: float) -> World:
    """Brand price levels, typosquats and fake-target weights.

    The market itself (price levels, typo variants, official photos) is the same for every
    seed, as for catalogs of one platform drawn at different times; `seed` only salts the
    counterfeit rings' private photo pools."""
    rng = _rng(MARKET_SEED, 0)
    n_b, n_c = len(BRANDS), len(CATEGORIES)
    level = np.full((n_b, n_c), np.nan)
    cat_pair = np.zeros((n_b, 2), dtype=np.int64)
    for b, brand in enumerate(BRANDS):
        lo, hi = TIER_MULTIPLIER[brand.tier]
        mult = rng.uniform(lo, hi)
        for c in brand.categories:
            level[b, c] = CATEGORY_BASE_PRICE[c] * mult * rng.uniform(0.8, 1.25)
        cat_pair[b] = (brand.categories[0], brand.categories[-1])
    newly = np.array([b.name in NEWLY_TARGETED for b in BRANDS])
    fake_early = np.array([b.fake_weight for b in BRANDS])
    fake_early[newly] = 0.0
    fake_late = fake_early + newly * NEWLY_TARGETED_WEIGHT * min(max(drift, 0.0), 3.0)
    members = [[b for b, br in enumerate(BRANDS) if c in br.categories] for c in range(n_c)]
    width = max(len(m) for m in members)
    cat_brands = np.array([m + [m[0]] * (width - len(m)) for m in members])
    return World(
        names=np.array([b.name for b in BRANDS]),
        cat_pair=cat_pair,
        n_cats=np.array([len(b.categories) for b in BRANDS]),
        level=level,
        typos=np.array([t for b in BRANDS for t in _typo_variants(b.name, rng)]),
        tier=np.array([b.tier for b in BRANDS]),
        popularity=np.array([TIER_POPULARITY[b.tier] for b in BRANDS]),
        fake_early=fake_early,
        fake_late=fake_late,
        newly=newly,
        cat_brands=cat_brands,
        cat_brand_n=np.array([len(m) for m in members]),
        photo_salt=np.uint64(rng.integers(0, 2**63)),
        ring_salt=np.uint64(_rng(seed, 0).integers(0, 2**63)),
    )


# --------------------------------------------------------------------------- sellers

# listing share per seller group; late rings are scaled by drift
GROUP_SHARE = {"store": 0.18, "reseller": 0.30, "small": 0.33, "opportunist": 0.14,
               "ring": 0.02, "late_ring": 0.008}


def _ring_sizes(rng: np.random.Generator, n_accounts: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n_accounts or len(sizes) < 4:
        sizes.append(int(rng.integers(3, 16)))
    return sizes


def build_sellers(seed: int, listings: int, world: World, cfg: Config) -> Sellers:
    """The seller table; ids are shuffled so kinds are not contiguous."""
    rng = _rng(seed, 1)
    n_total = max(300, listings // 40)
    n_store = max(len(BRANDS), round(0.03 * n_total))
    n_reseller = max(10, round(0.08 * n_total))
    n_opp = max(20, round(0.14 * n_total))
    sizes = _ring_sizes(rng, round(0.05 * n_total))
    n_rings = len(sizes)
    n_late = max(1, round(0.3 * n_rings)) if cfg.drift > 0 else 0
    ring_of = np.repeat(np.arange(n_rings), sizes)
    n_ring = len(ring_of)
    n_small = max(50, n_total - n_store - n_reseller - n_opp - n_ring)
    kind = np.concatenate([np.full(n, k) for k, n in [(STORE, n_store), (RESELLER, n_reseller),
                                                       (SMALL, n_small), (OPPORTUNIST, n_opp),
                                                       (RING, n_ring)]])
    n = len(kind)
    ring = np.full(n, -1)
    ring[kind == RING] = ring_of
    ring_late = np.zeros(n_rings, dtype=bool)
    ring_late[rng.permutation(n_rings)[:n_late]] = True
    late = (ring >= 0) & ring_late[np.maximum(ring, 0)]

    active, registered_days = _seller_times(rng, kind, ring, late, n_rings, cfg)
    country, ship_alt, p_abroad = _seller_geo(rng, kind)
    reviews, rating, verified = _seller_reputation(rng, kind)
    contact = _seller_contacts(rng, kind, ring, n_rings)
    fake_rate, unbranded = _seller_behaviour(rng, kind)
    brands, n_brands = _seller_brands(rng, kind, late, world)
    weight = _seller_weights(rng, kind, late, active, cfg)

    order = rng.permutation(n)  # shuffle so seller ids do not reveal the kind
    reg_us = cfg.start_us + np.floor(registered_days * 86_400).astype(np.int64) * 1_000_000
    cum = np.cumsum(weight[order])
    cum /= cum[-1]
    return Sellers(
        kind=kind[order], ring=ring[order], late=late[order], active_from=active[order],
        registered_us=reg_us[order], country=country[order], ship_alt=ship_alt[order],
        p_abroad=p_abroad[order], rating=rating[order], reviews=reviews[order],
        verified=verified[order], contact=contact[order], fake_rate=fake_rate[order],
        unbranded=unbranded[order], brands=brands[order], n_brands=n_brands[order],
        cum_weight=cum, ring_pool=np.array(sizes) * 5 + 10,
        ids=pl.Series([f"S{i:07d}" for i in range(n)], dtype=pl.String),
    )


def _seller_times(rng: np.random.Generator, kind: np.ndarray, ring: np.ndarray,
                  late: np.ndarray, n_rings: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """First possible listing day and registration day (both relative to start)."""
    n, days = len(kind), cfg.days
    active = np.zeros(n)
    reg = np.zeros(n)
    years = 365.25
    m = kind == STORE
    reg[m] = -rng.uniform(2, 12, m.sum()) * years
    m = kind == RESELLER
    reg[m] = -rng.uniform(1, 10, m.sum()) * years
    m = kind == SMALL
    newcomer = m & (rng.random(n) < 0.15)
    active[newcomer] = rng.uniform(0, 0.9 * days, newcomer.sum())
    reg[m] = -rng.uniform(0.2, 8, m.sum()) * years
    reg[newcomer] = active[newcomer] - rng.uniform(1, 60, newcomer.sum())
    m = kind == OPPORTUNIST
    active[m] = rng.uniform(-0.3 * days, 0.75 * days, m.sum())
    reg[m] = active[m] - rng.uniform(1, 45, m.sum())
    # rings: accounts created in a batch, shortly before the ring starts listing
    ring_start = rng.uniform(-0.25 * days, 0.45 * days, n_rings)
    m = kind == RING
    base = ring_start[ring[m]]
    base = np.where(late[m], cfg.cutoff + rng.uniform(0, 0.15 * days, m.sum()), base)
    active[m] = base + rng.uniform(0, 10, m.sum())
    reg[m] = base - rng.uniform(2, 28, m.sum())
    return active, reg


def _seller_geo(rng: np.random.Generator, kind: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(kind)
    n_eu, n_legit = len(EU), len(EU) + len(OTHER_LEGIT)
    home = rng.choice(n_eu, n, p=EU_WEIGHTS / EU_WEIGHTS.sum())
    abroad_home = rng.random(n)
    home = np.where((kind == SMALL) & (abroad_home < 0.06), rng.integers(n_eu, n_legit, n), home)
    origin = rng.integers(n_legit, len(COUNTRIES), n)
    home = np.where((kind == OPPORTUNIST) & (abroad_home < 0.2), origin, home)
    home = np.where((kind == RING) & (abroad_home < 0.4), origin, home)
    other_eu = (home + rng.integers(1, n_eu, n)) % n_eu
    alt = np.where(np.isin(kind, [RING, OPPORTUNIST]), origin, other_eu)
    alt = np.where(alt == home, n_legit + (alt - n_legit + 1) % len(FAKE_ORIGINS), alt)
    p_abroad = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                         [0.02, 0.12, 0.03, 0.25], 0.75)
    return home, alt, p_abroad


def _seller_reputation(rng: np.random.Generator, kind: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(kind)
    mu = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                   [7.5, 6.5, 2.3, 1.3], 1.5)
    sd = np.select([kind == STORE, kind == RESELLER], [1.0, 1.0], 1.3)
    reviews = np.floor(rng.lognormal(mu, sd) - 1.0).clip(0).astype(np.int64)
    rating = np.select(
        [kind == STORE, kind == RESELLER, kind == RING],
        [rng.uniform(4.5, 4.95, n), rng.uniform(4.2, 4.9, n),
         np.where(rng.random(n) < 0.6, rng.uniform(4.7, 5.0, n), rng.normal(3.8, 0.8, n))],
        rng.normal(4.4, 0.5, n),
    )
    rating = np.round(np.clip(rating, 1.0, 5.0), 2)
    rating[reviews == 0] = np.nan
    p_verified = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                           [1.0, 0.9, 0.4, 0.15], 0.1)
    return reviews, rating, rng.random(n) < p_verified


def _seller_contacts(rng: np.random.Generator, kind: np.ndarray, ring: np.ndarray,
                     n_rings: int) -> np.ndarray:
    """Own contact hash; most ring members share the ring's; a few family businesses share."""
    n = len(kind)
    contact = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    ring_hash = rng.integers(0, 2**63, n_rings, dtype=np.int64).astype(np.uint64)
    shares = (ring >= 0) & (rng.random(n) < 0.75)
    contact[shares] = ring_hash[ring[shares]]
    small = np.flatnonzero(kind == SMALL)
    n_family = max(2, round(0.01 * n))
    pairs = rng.choice(len(small) // 2, size=min(n_family, len(small) // 2), replace=False)
    contact[small[2 * pairs + 1]] = contact[small[2 * pairs]]
    return contact


def _seller_behaviour(rng: np.random.Generator, kind: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    n = len(kind)
    fake_rate = np.select(
        [kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
        [np.zeros(n), np.full(n, 0.001), np.full(n, 0.003), rng.uniform(0.02, 0.10, n)],
        rng.uniform(0.7, 0.95, n),
    )
    unbranded = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                          [0.0, 0.05, 0.18, 0.15], 0.03)
    return fake_rate, unbranded


def _seller_brands(rng: np.random.Generator, kind: np.ndarray, late: np.ndarray, world: World
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Brand portfolio per seller (padded matrix + count)."""
    n, n_b = len(kind), len(world.names)
    legit = _gumbel_topk(rng, world.popularity, n)
    early_fake = _gumbel_topk(rng, world.fake_early, n)
    late_w = world.fake_early + world.newly * NEWLY_TARGETED_WEIGHT * 2
    late_fake = _gumbel_topk(rng, late_w, n)
    brands = np.where((kind == RING)[:, None], np.where(late[:, None], late_fake, early_fake),
                      legit)
    stores = np.flatnonzero(kind == STORE)
    first = np.arange(len(stores)) % n_b  # every brand has an authorised store
    rest = legit[stores]
    rest = np.take_along_axis(rest, np.argsort(rest == first[:, None], axis=1, kind="stable"), 1)
    brands[stores] = np.concatenate([first[:, None], rest[:, :-1]], axis=1)
    lo = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                   [1, 4, 1, 2], 4)
    hi = np.select([kind == STORE, kind == RESELLER, kind == SMALL, kind == OPPORTUNIST],
                   [3, 12, 4, 6], 12)
    count = rng.integers(lo, hi + 1)
    return brands.astype(np.int64), count


def _seller_weights(rng: np.random.Generator, kind: np.ndarray, late: np.ndarray,
                    active: np.ndarray, cfg: Config) -> np.ndarray:
    """Expected share of listings per seller: a heavy-tailed rate x active time, per group."""
    active_len = cfg.days - np.clip(active, 0, None)
    raw = rng.lognormal(0.0, 0.9, len(kind)) * np.clip(active_len, 1e-3, None)
    groups = {"store": kind == STORE, "reseller": kind == RESELLER, "small": kind == SMALL,
              "opportunist": kind == OPPORTUNIST, "ring": (kind == RING) & ~late,
              "late_ring": late}
    weight = np.zeros(len(kind))
    for name, mask in groups.items():
        share = GROUP_SHARE[name] * (min(cfg.drift, 3.0) if name == "late_ring" else 1.0)
        if mask.any():
            weight[mask] = raw[mask] / raw[mask].sum() * share
    return weight


# --------------------------------------------------------------------------- listings


Rows = dict[str, np.ndarray]


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
    own = sel.brands[s, _uniform_index(rng, sel.n_brands[s])]
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
        "category": category, "noun": _uniform_index(rng, n_nouns),
        "colour": rng.integers(0, len(COLOURS), n),
        "size": _uniform_index(rng, np.array([len(x) for x in SIZES])[category]),
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


def _title(rng: np.random.Generator, r: Rows, world: World, cfg: Config) -> pl.Series:
    """Template titles with copy words, look-alike phrases, shouting and symbols."""
    n = len(r["fake"])
    fake, cat = r["fake"], r["category"]
    b0 = np.maximum(r["brand"], 0)
    real = _pick(world.names, b0)
    typo = _pick(world.typos, r["variant"])
    tb = pl.select(pl.when(pl.Series(r["title_missing"])).then(None)
                   .when(pl.Series(r["title_typo"])).then(typo).otherwise(real)).to_series()
    noun_offsets = np.cumsum([0] + [len(x) for x in NOUNS])
    size_offsets = np.cumsum([0] + [len(x) for x in SIZES])
    hype = rng.random(n) < np.where(fake, 0.3, 0.05)
    adjective_idx = rng.integers(0, len(ADJECTIVES), n)
    frame = pl.DataFrame({
        "B": tb,
        "ADJ": _pick(ADJECTIVES, adjective_idx),
        "NOUN": _pick([x for xs in NOUNS for x in xs], noun_offsets[cat] + r["noun"]),
        "COL": _pick(COLOURS, r["colour"]),
        "SIZE": _pick([x for xs in SIZES for x in xs], size_offsets[cat] + r["size"]),
        "HYPE": _pick(HYPE, rng.integers(0, len(HYPE), n), hype),
        "tpl": rng.integers(0, 5, n),
    })
    B, ADJ, NOUN, COL, SIZE = (pl.col(c) for c in ("B", "ADJ", "NOUN", "COL", "SIZE"))

    def cat_(*parts: pl.Expr | str) -> pl.Expr:
        exprs = [pl.lit(p) if isinstance(p, str) else p for p in parts]
        return pl.concat_str(exprs, separator=" ", ignore_nulls=True)

    title = (
        pl.when(pl.col("tpl") == 0).then(cat_(B, ADJ, NOUN, COL))
        .when(pl.col("tpl") == 1).then(cat_(B, NOUN, "-", COL + pl.lit(","), SIZE))
        .when(pl.col("tpl") == 2).then(cat_(ADJ, COL, NOUN, pl.lit("by ") + B))
        .when(pl.col("tpl") == 3).then(cat_(B, NOUN, SIZE, COL))
        .otherwise(cat_(pl.lit("New"), B, NOUN, ADJ, COL))
    )
    title = pl.when(pl.col("HYPE").is_not_null()).then(
        pl.concat_str([pl.col("HYPE"), pl.lit(" "), title])).otherwise(title)
    out = frame.select(title.alias("title")).to_series()
    out = _add_lookalike(rng, r, world, out)
    out = _add_copy_to_title(rng, r, cfg, out)
    return _shout(rng, fake, out)


def _add_lookalike(rng: np.random.Generator, r: Rows, world: World, title: pl.Series
                   ) -> pl.Series:
    """Innocent mentions of another brand on genuine goods ("compatible with X", "X style")."""
    n = len(title)
    cat = r["category"]
    accessory = np.isin(cat, [3, 4]) & (r["brand"] >= 0)
    mask = ~r["fake"] & (((r["brand"] < 0) & (rng.random(n) < 0.3))
                         | (accessory & (rng.random(n) < 0.08)))
    k = _uniform_index(rng, world.cat_brand_n[cat])
    other = world.cat_brands[cat, k]
    nxt = world.cat_brands[cat, (k + 1) % world.cat_brand_n[cat]]
    other = np.where(other == r["brand"], nxt, other)  # mention another brand than its own
    tpl = LOOKALIKE_BY_CATEGORY[cat, rng.integers(0, 2, n)]
    phrases = pl.select(
        pl.when(pl.Series(tpl) == i).then(
            pl.lit(t.split("{}")[0]) + _pick(world.names, other) + pl.lit(t.split("{}")[1])
        ).alias(f"p{i}")
        for i, t in enumerate(LOOKALIKE)
    ).select(pl.coalesce(pl.all())).to_series()
    r["lookalike"] = mask
    return pl.select(pl.when(pl.Series(mask)).then(title + ", " + phrases).otherwise(title)
                     ).to_series()


def _add_copy_to_title(rng: np.random.Generator, r: Rows, cfg: Config, title: pl.Series
                       ) -> pl.Series:
    """Copy words on a minority of fakes (fewer in the drift period: fraudsters adapt)."""
    n = len(title)
    late_factor = 1 - 0.4 * min(cfg.drift, 1.5)
    p_copy = np.where(r["late"], 0.28 * late_factor, 0.28)
    copy = r["fake"] & (rng.random(n) < p_copy)
    in_title = copy & (rng.random(n) < 0.6)
    r["copy_desc"] = copy & (~in_title | (rng.random(n) < 0.4))
    r["copy"], r["copy_word"] = copy, rng.integers(0, len(COPY_WORDS), n)
    word = _pick(COPY_WORDS, r["copy_word"])
    prefix = rng.random(n) < 0.5
    return pl.select(
        pl.when(pl.Series(in_title & prefix)).then(word + " " + title)
        .when(pl.Series(in_title)).then(title + " " + word)
        .otherwise(title)
    ).to_series()


def _shout(rng: np.random.Generator, fake: np.ndarray, title: pl.Series) -> pl.Series:
    n = len(title)
    upper = rng.random(n) < np.where(fake, 0.3, 0.02)
    symbols = rng.random(n) < np.where(fake, 0.35, 0.04)
    sym = _pick(SYMBOLS, rng.integers(0, len(SYMBOLS), n))
    title = pl.select(pl.when(pl.Series(upper)).then(title.str.to_uppercase()).otherwise(title)
                      ).to_series()
    return pl.select(pl.when(pl.Series(symbols)).then(title + " " + sym).otherwise(title)
                     ).to_series()


def _description(rng: np.random.Generator, r: Rows, world: World) -> pl.Series:
    """1-5 sentences for genuine goods (8% null); fakes short or missing (35% null)."""
    n = len(r["fake"])
    fake = r["fake"]
    count = np.where(fake, 1 + rng.binomial(1, 0.35, n), 1 + rng.binomial(4, 0.5, n))
    pool = list(GENUINE_SENTENCES) + list(FAKE_SENTENCES)
    cols: dict[str, pl.Series] = {}
    for j in range(5):
        from_fake = rng.random(n) < np.where(fake, 0.65, 0.03)
        idx = np.where(from_fake, len(GENUINE_SENTENCES) + rng.integers(0, len(FAKE_SENTENCES), n),
                       rng.integers(0, len(GENUINE_SENTENCES), n))
        cols[f"s{j}"] = _pick(pool, idx, j < count)
    official = (r["kind"] == STORE) & (r["brand"] >= 0) & (rng.random(n) < 0.5)
    cols["official"] = pl.select(
        pl.when(pl.Series(official)).then(
            pl.lit("Official ") + _pick(world.names, np.maximum(r["brand"], 0)) + " product.")
    ).to_series()
    word = _pick(COPY_WORDS, r["copy_word"])
    tpl = rng.integers(0, len(COPY_SENTENCES), n)
    cols["copy"] = pl.select(
        pl.when(pl.Series(r["copy_desc"] & (tpl == i))).then(
            pl.lit(t.split("{}")[0]) + word + pl.lit(t.split("{}")[1])
        ).alias(f"c{i}")
        for i, t in enumerate(COPY_SENTENCES)
    ).select(pl.coalesce(pl.all())).to_series()
    frame = pl.DataFrame(cols)
    order = ["official", "copy"] + [f"s{j}" for j in range(5)]
    null = (rng.random(n) < np.where(fake, 0.35, 0.08)) & ~r["copy_desc"]
    text = frame.select(pl.concat_str(order, separator=" ", ignore_nulls=True)).to_series()
    return pl.select(pl.when(~pl.Series(null)).then(text)).to_series()


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
    official = _mix(world.photo_salt, b0[row], r["category"][row], r["noun"][row],
                    r["colour"][row], slot)
    ring_id = np.maximum(sel.ring[s], 0)
    pool_idx = np.floor(rng.random(total) * sel.ring_pool[ring_id][row]).astype(np.int64)
    pooled = _mix(world.ring_salt, ring_id[row], pool_idx)
    own = rng.integers(0, 2**63, total, dtype=np.int64).astype(np.uint64) * np.uint64(2) + (
        rng.random(total) < 0.5).astype(np.uint64)
    hashes = np.where(use_pool, pooled, np.where(use_off, official, own))
    # re-uploads of reused photos drift by a bit or two in perceptual-hash space
    near = (use_pool & (rng.random(total) < 0.2)) | (use_off & (rng.random(total) < 0.05))
    flip = np.left_shift(np.uint64(1), rng.integers(0, 64, total).astype(np.uint64))
    hashes = np.where(near, hashes ^ flip, hashes)
    values = _hex16(hashes)
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


def _labels(rng: np.random.Generator, r: Rows, sel: Sellers, cfg: Config) -> np.ndarray:
    """Biased review: suspicious listings get inspected; recent ones rarely; some mistakes.

    Returns float array: 1.0 / 0.0 labels, nan = unreviewed.
    """
    n = len(r["fake"])
    s = r["seller"]
    ratio = r["price"] / r["level"]
    age_days = r["t"] - (sel.registered_us[s] - cfg.start_us) / DAY_US
    complaints = np.where(r["old"], r["complaints"], 0)
    logit = (
        -2.9
        + 2.2 * (ratio < 0.4) + 0.8 * ((ratio >= 0.4) & (ratio < 0.6))
        + 2.5 * (r["copy"]) + 2.0 * (complaints > 0) + 1.0 * (age_days < 90)
        + 0.8 * r["declared_typo"] + 0.6 * (r["ships_from"] != sel.country[s])
        + 0.4 * ~sel.verified[s]
    )
    p = 1.0 / (1.0 + np.exp(-logit)) + 0.02
    p = np.where(r["t"] > cfg.days - LABEL_LAG_DAYS, 0.08 * p, p)
    reviewed = rng.random(n) < p
    # officers' mistakes: a genuine item is rarely called fake (the brand owner confirms), while
    # smart fakes pass inspection more often than cheap ones
    fake = r["fake"]
    p_wrong = np.where(fake, np.where(r["smart"], 0.06, 0.01), 0.003)
    label = fake ^ (rng.random(n) < p_wrong)
    return np.where(reviewed, label.astype(float), np.nan)


def _nullable_int(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(valid)).then(pl.Series(values.astype(np.int64))))\
        .to_series()


def _chunk(rng: np.random.Generator, first_row: int, n: int, world: World, sel: Sellers,
           cfg: Config) -> pl.DataFrame:
    """One chunk of listings, every column vectorised."""
    r = _draw_core(rng, n, world, sel, cfg)
    _prices(rng, r, world)
    _brand_strings(rng, r)
    s = r["seller"]
    r["ships_from"] = np.where(rng.random(n) < sel.p_abroad[s], sel.ship_alt[s], sel.country[s])
    title = _title(rng, r, world, cfg)
    description = _description(rng, r, world)
    image_count, image_hashes = _images(rng, r, world, sel)
    _activity(rng, r, cfg)
    label = _labels(rng, r, sel, cfg)

    brand = pl.select(
        pl.when(pl.Series(r["declared_null"])).then(None)
        .when(pl.Series(r["declared_typo"])).then(_pick(world.typos, r["variant"]))
        .otherwise(_pick(world.names, np.maximum(r["brand"], 0)))
    ).to_series()
    listed_us = cfg.start_us + np.floor(r["t"] * 86_400).astype(np.int64) * 1_000_000
    frame = pl.DataFrame({
        "listing_id": pl.int_range(first_row, first_row + n, eager=True),
        "seller_id": sel.ids.gather(pl.Series(s)),
        "title": title,
        "description": description,
        "brand": brand,
        "category": _pick(CATEGORIES, r["category"]),
        "price": r["price"],
        "list_price": pl.Series(r["list_price"], nan_to_null=True),
        "currency": pl.repeat("EUR", n, eager=True),
        "listed_at": pl.Series(listed_us),
        "image_count": image_count.astype(np.int64),
        "image_hashes": image_hashes,
        "ships_from": _pick(COUNTRIES, r["ships_from"]),
        "units_sold_30d": _nullable_int(r["units"], r["old"]),
        "returns_30d": _nullable_int(r["returns"], r["old"]),
        "complaints_30d": _nullable_int(r["complaints"], r["old"]),
        "seller_registered_at": pl.Series(sel.registered_us[s]),
        "seller_country": _pick(COUNTRIES, sel.country[s]),
        "seller_rating": pl.Series(sel.rating[s], nan_to_null=True),
        "seller_review_count": sel.reviews[s].astype(np.int64),
        "seller_verified": sel.verified[s],
        "seller_contact_hash": pl.Series(_hex16(sel.contact[s])),
        "is_counterfeit": pl.Series(label, nan_to_null=True),
        TRUTH: r["fake"],
    })
    return frame.with_columns(
        pl.format("L{}", pl.col("listing_id").cast(pl.String).str.zfill(9)).alias("listing_id"),
        pl.col("listed_at", "seller_registered_at").cast(pl.Datetime("us")).dt
        .replace_time_zone("UTC"),
        pl.col("is_counterfeit").cast(pl.Boolean),
    ).select(pl.col(c).cast(t) for c, t in OUTPUT_SCHEMA.items())


# --------------------------------------------------------------------------- writers


class _Writer:
    """Append chunks to .parquet / .csv / .jsonl."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.kind = out.suffix.lower()
        self._parquet: pq.ParquetWriter | None = None
        self._fh: IO[bytes] | None = None

    def write(self, df: pl.DataFrame) -> None:
        if self.kind == ".parquet":
            table = df.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.out, table.schema, compression="zstd")
            self._parquet.write_table(table, row_group_size=max(len(df), 1))
            return
        first = self._fh is None
        if self._fh is None:
            self._fh = self.out.open("wb")
        ts = pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.kind == ".csv":
            df.with_columns(ts, pl.col("image_hashes").list.join("|")).write_csv(
                self._fh, include_header=first)
        else:
            df.with_columns(ts).write_ndjson(self._fh)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._fh is not None:
            self._fh.close()


# --------------------------------------------------------------------------- API


def _config(start: date, days: int, drift: float) -> Config:
    start_dt = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return Config(start_us=int(start_dt.timestamp()) * 1_000_000, days=days, drift=drift,
                  start_weekday=start.weekday())


def generate_catalog(
    out: Path,
    listings: int,
    seed: int = 0,
    *,
    start: date = date(2026, 1, 1),
    days: int = 180,
    chunk_rows: int = 500_000,
    drift: float = 1.0,
    progress: bool = False,
) -> dict[str, object]:
    """Write a synthetic labelled catalog to ``out`` (.parquet, .csv or .jsonl).

    Deterministic for a given (listings, seed, start, days, chunk_rows, drift). Returns a
    summary: counts, true prevalence, labelled shares, time span and the path.
    """
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"unsupported output format {out.suffix!r} for {out}: use one of {', '.join(SUFFIXES)}"
        )
    if listings < 1:
        raise ValueError(f"listings must be >= 1, got {listings}")
    if days < 31:
        raise ValueError(f"days must be >= 31 (sales window is 30 days), got {days}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config(start, days, float(drift))
    world = build_world(seed, cfg.drift)
    sellers = build_sellers(seed, listings, world, cfg)

    n_chunks = math.ceil(listings / chunk_rows)
    counts = dict.fromkeys(("fake", "labelled", "labelled_fake"), 0)
    writer = _Writer(out)
    try:
        for i in tqdm(range(n_chunks), disable=not progress, desc="generate", unit="chunk"):
            first = i * chunk_rows
            n = min(chunk_rows, listings - first)
            df = _chunk(_rng(seed, 2, i), first, n, world, sellers, cfg)
            writer.write(df)
            counts["fake"] += int(df[TRUTH].sum())
            counts["labelled"] += int(df["is_counterfeit"].is_not_null().sum())
            counts["labelled_fake"] += int(df["is_counterfeit"].sum())
    finally:
        writer.close()

    snapshot = start + timedelta(days=days)
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
        "days": days,
        "drift": cfg.drift,
        "newly_targeted_brands": list(NEWLY_TARGETED),
        "seed": seed,
    }
