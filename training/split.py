"""Time split with a delay gap: older window trains, newer window evaluates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl


class SplitError(ValueError):
    """The catalog cannot be split as asked (too short a span, empty window)."""


@dataclass(frozen=True)
class Windows:
    """[train_start, train_end) gap [valid_start, valid_end]; the gap holds no rows used."""

    train_start: datetime
    train_end: datetime
    valid_start: datetime
    valid_end: datetime

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in vars(self).items()}


def time_windows(
    first: datetime, last: datetime, *, valid_from: datetime | None, valid_days: int,
    delay_days: int,
) -> Windows:
    """Windows for a catalog spanning [first, last]; `valid_from` defaults to last - valid_days."""
    valid_start = valid_from if valid_from is not None else last - timedelta(days=valid_days)
    train_end = valid_start - timedelta(days=delay_days)
    if not first < train_end:
        raise SplitError(
            f"no training window: the catalog starts {first:%Y-%m-%d} but training must end "
            f"before {train_end:%Y-%m-%d} (validation from {valid_start:%Y-%m-%d} minus a "
            f"{delay_days}-day label delay)"
        )
    if not valid_start <= last:
        raise SplitError(
            f"no validation window: validation starts {valid_start:%Y-%m-%d} after the newest "
            f"listing ({last:%Y-%m-%d})"
        )
    return Windows(first, train_end, valid_start, last)


def split(lf: pl.LazyFrame, windows: Windows) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(train rows, validation rows) by listed_at; rows inside the delay gap are in neither."""
    train = lf.filter(pl.col("listed_at") < windows.train_end)
    valid = lf.filter(pl.col("listed_at") >= windows.valid_start)
    return train, valid
