"""Seconds per stage, for summary lines and run tags (the scorer and training both use it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Clock:
    """Accumulates wall-clock seconds per named stage in `seconds` (a dict you may share
    between clocks). Two ways to time: `lap(name)` adds the time since the last lap (or since
    the clock was made), `with clock.stage(name):` adds the time spent inside the block."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = {} if seconds is None else seconds
        self.last = time.perf_counter()

    def add(self, name: str, elapsed: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.add(name, now - self.last)
        self.last = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)
            self.last = time.perf_counter()

    def rounded(self, digits: int = 2) -> dict[str, float]:
        """The seconds rounded for a JSON summary line."""
        return {name: round(value, digits) for name, value in self.seconds.items()}
