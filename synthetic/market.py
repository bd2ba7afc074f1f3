"""The market: categories, countries, brands with their price levels and typosquats, and the
catalog's time span (the same market for every seed, as for one platform at different times)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from synthetic.draws import rng_for

DAY_US = 86_400_000_000
SALES_WINDOW_DAYS = 30  # units_sold_30d, returns_30d, complaints_30d

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


@dataclass(frozen=True)
class Config:
    """The catalog's time span, drift strength and id prefix."""

    start_us: int
    days: int
    drift: float
    start_weekday: int
    id_prefix: str = ""  # before every listing and seller id ("" = L000000000, S0000000)

    @classmethod
    def create(cls, start: date, days: int, drift: float, id_prefix: str = "") -> Config:
        start_dt = datetime(start.year, start.month, start.day, tzinfo=UTC)
        return cls(start_us=int(start_dt.timestamp()) * 1_000_000, days=days, drift=drift,
                   start_weekday=start.weekday(), id_prefix=id_prefix)

    @property
    def cutoff(self) -> float:
        """Start of the drift period, in days from start."""
        return self.days * 2.0 / 3.0


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
    rng = rng_for(MARKET_SEED, 0)
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
        ring_salt=np.uint64(rng_for(seed, 0).integers(0, 2**63)),
    )
