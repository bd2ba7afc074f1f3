"""Sellers and rings: authorised stores, resellers, small sellers, opportunists and counterfeit
rings, with their accounts' age, geography, reputation, contacts, brands and listing volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from synthetic.draws import rng_for
from synthetic.market import (
    BRANDS,
    COUNTRIES,
    EU,
    EU_WEIGHTS,
    FAKE_ORIGINS,
    NEWLY_TARGETED_WEIGHT,
    OTHER_LEGIT,
    Config,
    World,
)

# seller kinds
STORE, RESELLER, SMALL, OPPORTUNIST, RING = 0, 1, 2, 3, 4
MAX_SELLER_BRANDS = 12

# listing share per seller group; late rings are scaled by drift
GROUP_SHARE = {"store": 0.18, "reseller": 0.30, "small": 0.33, "opportunist": 0.14,
               "ring": 0.02, "late_ring": 0.008}


def _ring_sizes(rng: np.random.Generator, n_accounts: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < n_accounts or len(sizes) < 4:
        sizes.append(int(rng.integers(3, 16)))
    return sizes


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


def _gumbel_topk(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n weighted samples without replacement per row (columns ordered), via Gumbel keys."""
    with np.errstate(divide="ignore"):
        keys = np.log(weights)[None, :] - np.log(-np.log(rng.random((n, len(weights)))))
    return np.argsort(-keys, axis=1)[:, :MAX_SELLER_BRANDS]


def build_sellers(seed: int, listings: int, world: World, cfg: Config) -> Sellers:
    """The seller table; ids are shuffled so kinds are not contiguous."""
    rng = rng_for(seed, 1)
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
        ids=pl.Series([f"{cfg.id_prefix}S{i:07d}" for i in range(n)], dtype=pl.String),
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
