"""What listings say: template titles and descriptions, copy words on fakes, innocent look-alike
mentions on genuine goods, shouting and symbols."""

from __future__ import annotations

import numpy as np
import polars as pl

from synthetic.draws import Rows, pick, uniform_index
from synthetic.market import Config, World
from synthetic.sellers import STORE

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


def titles(rng: np.random.Generator, r: Rows, world: World, cfg: Config) -> pl.Series:
    """Template titles with copy words, look-alike phrases, shouting and symbols."""
    n = len(r["fake"])
    fake, cat = r["fake"], r["category"]
    b0 = np.maximum(r["brand"], 0)
    real = pick(world.names, b0)
    typo = pick(world.typos, r["variant"])
    tb = pl.select(pl.when(pl.Series(r["title_missing"])).then(None)
                   .when(pl.Series(r["title_typo"])).then(typo).otherwise(real)).to_series()
    noun_offsets = np.cumsum([0] + [len(x) for x in NOUNS])
    size_offsets = np.cumsum([0] + [len(x) for x in SIZES])
    hype = rng.random(n) < np.where(fake, 0.3, 0.05)
    adjective_idx = rng.integers(0, len(ADJECTIVES), n)
    frame = pl.DataFrame({
        "B": tb,
        "ADJ": pick(ADJECTIVES, adjective_idx),
        "NOUN": pick([x for xs in NOUNS for x in xs], noun_offsets[cat] + r["noun"]),
        "COL": pick(COLOURS, r["colour"]),
        "SIZE": pick([x for xs in SIZES for x in xs], size_offsets[cat] + r["size"]),
        "HYPE": pick(HYPE, rng.integers(0, len(HYPE), n), hype),
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
    k = uniform_index(rng, world.cat_brand_n[cat])
    other = world.cat_brands[cat, k]
    nxt = world.cat_brands[cat, (k + 1) % world.cat_brand_n[cat]]
    other = np.where(other == r["brand"], nxt, other)  # mention another brand than its own
    tpl = LOOKALIKE_BY_CATEGORY[cat, rng.integers(0, 2, n)]
    phrases = pl.select(
        pl.when(pl.Series(tpl) == i).then(
            pl.lit(t.split("{}")[0]) + pick(world.names, other) + pl.lit(t.split("{}")[1])
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
    word = pick(COPY_WORDS, r["copy_word"])
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
    sym = pick(SYMBOLS, rng.integers(0, len(SYMBOLS), n))
    title = pl.select(pl.when(pl.Series(upper)).then(title.str.to_uppercase()).otherwise(title)
                      ).to_series()
    return pl.select(pl.when(pl.Series(symbols)).then(title + " " + sym).otherwise(title)
                     ).to_series()


def descriptions(rng: np.random.Generator, r: Rows, world: World) -> pl.Series:
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
        cols[f"s{j}"] = pick(pool, idx, j < count)
    official = (r["kind"] == STORE) & (r["brand"] >= 0) & (rng.random(n) < 0.5)
    cols["official"] = pl.select(
        pl.when(pl.Series(official)).then(
            pl.lit("Official ") + pick(world.names, np.maximum(r["brand"], 0)) + " product.")
    ).to_series()
    word = pick(COPY_WORDS, r["copy_word"])
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
