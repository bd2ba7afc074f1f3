"""Seeded random streams, integer hashing and the vectorised picks every part of the world uses."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

Rows = dict[str, np.ndarray]  # one chunk's per-listing draws, by name


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """One independent random stream per part of the world: (MARKET_SEED, 0) the market,
    (seed, 0) the rings' photo salt, (seed, 1) the sellers, (seed, 2, i) chunk i."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def mix(*parts: np.ndarray | np.uint64 | int) -> np.ndarray:
    """Hash several integer arrays into one uint64 array."""
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        h = _splitmix64(h ^ np.asarray(p).astype(np.uint64))
    return h


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex16(values: np.ndarray) -> pa.StringArray:
    """uint64 -> 16-char lowercase hex strings, built straight into an Arrow buffer."""
    n = len(values)
    raw = values.astype(">u8").view(np.uint8).reshape(n, 8)
    nibbles = np.empty((n, 16), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 15
    chars = np.ascontiguousarray(_HEX[nibbles])
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def pick(values: tuple[str, ...] | np.ndarray, idx: np.ndarray, valid: np.ndarray | None = None
         ) -> pl.Series:
    """values[idx] as a String series; null where ``valid`` is False."""
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    s = pl.Series(values=items, dtype=pl.String)
    index = pl.Series(idx.astype(np.int64))
    if valid is not None:
        index = pl.select(pl.when(pl.Series(valid)).then(index)).to_series()
    return s.gather(index)


def uniform_index(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    return np.minimum((rng.random(len(counts)) * counts).astype(np.int64), counts - 1)
