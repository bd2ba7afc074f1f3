"""Property: whatever rows and column types a platform sends, validation never crashes and
every row ends up good or rejected (or the whole batch is refused with a message naming it)."""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from features.catalog import CatalogError, read_catalog
from features.contract import LISTING_COLUMNS, Column

TEXT = st.text(alphabet=st.sampled_from("aZ09 .,-|:;\"'\t\u200b\u00e9\u2603[]{}TNn"), max_size=8)
NUMBER_TEXT = st.sampled_from(["1", "0", "-2", "1.5", "nan", "inf", "1e3", "true", "",
                               "2026-03-01T12:00:00Z", "2026-03-01", "9999-01-01"])
KINDS: dict[str, tuple[pl.DataType, st.SearchStrategy[Any]]] = {
    "text": (pl.String(), st.one_of(TEXT, NUMBER_TEXT)),
    "int": (pl.Int64(), st.integers(-3, 10**12)),
    "float": (pl.Float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "bool": (pl.Boolean(), st.booleans()),
    "time": (pl.Datetime("us", "UTC"), st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))),
    "list": (pl.List(pl.String()), st.lists(TEXT, max_size=3)),
    "null": (pl.Null(), st.none()),
}
JSON_VALUE = st.one_of(st.none(), TEXT, NUMBER_TEXT, st.integers(-3, 10**6), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.lists(TEXT, max_size=2), st.dictionaries(TEXT, TEXT, max_size=1))


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[str, int, Any]:
    """(format, rows, what to write): mostly sensible values so that good rows occur, mixed
    with random ones; per column a random stored type (Parquet) or absent if optional; JSON
    Lines mixes kinds row by row."""
    fmt = draw(st.sampled_from(["parquet", "csv", "jsonl"]))
    n = draw(st.integers(1, 6))
    present = [c for c in LISTING_COLUMNS if c.required or draw(st.booleans())]
    if fmt == "jsonl":
        rows = [{c.name: draw(st.one_of(_plausible(c, i).map(_as_json), JSON_VALUE)
                              if draw(st.integers(0, 9)) == 0 else _plausible(c, i).map(_as_json))
                 for c in present} for i in range(n)]
        return fmt, n, rows
    columns = {}
    for col in present:
        kinds = ["native"] * 40 + (["text"] if fmt == "csv" else list(KINDS))
        kind = draw(st.sampled_from(kinds))
        if kind == "native":
            dtype = pl.String() if fmt == "csv" else col.dtype
            values = [None if draw(st.integers(0, 7)) == 0 else draw(_plausible(col, i))
                      for i in range(n)]
            if fmt == "csv":
                values = [None if v is None else _as_text(v) for v in values]
        else:
            dtype, strategy = KINDS[kind]
            values = [draw(st.one_of(st.none(), strategy)) for _ in range(n)]
        columns[col.name] = pl.Series(col.name, values, dtype=dtype)
    return fmt, n, pl.DataFrame(columns)


def _plausible(col: Column, i: int) -> st.SearchStrategy[Any]:
    """A sensible value of the column's contract type."""
    if col.name == "listing_id":
        return st.just(f"L{i}")
    if col.name == "currency":
        return st.just("EUR")
    if col.dtype == pl.String():
        return st.sampled_from(["Acme", "Bag", "Fashion > Bags", "DE", "S1", "x y"])
    if col.dtype == pl.Float64():
        return st.floats(0.5, 5.0) if col.name == "seller_rating" else st.floats(0.5, 500.0)
    if col.dtype == pl.Int64():
        return st.integers(0, 50)
    if col.dtype == pl.Boolean():
        return st.booleans()
    if isinstance(col.dtype, pl.List):
        return st.lists(st.sampled_from(["00000000000000aa", "00000000000000bb"]), max_size=2)
    return st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 6, 1),
                        timezones=st.just(UTC))


def _as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "|".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return _as_json(value) if isinstance(value, datetime) else str(value)


def _write(fmt: str, data: Any, path: Path) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    elif fmt == "csv":
        data.write_csv(path)
    else:
        data.write_parquet(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs())
def test_every_row_is_good_or_rejected_or_the_batch_is_refused(case: tuple[str, int, Any]
                                                                ) -> None:
    fmt, n, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c.{fmt}"
        _write(fmt, data, path)
        try:
            catalog = read_catalog(path, currency="EUR")
        except CatalogError as exc:
            assert str(path) in str(exc)
            event(f"{fmt}: batch refused")
            return
        rows = catalog.rows.collect()
        rejects = catalog.rejects.collect()
    event(f"{fmt}: read, {'some' if rows.height else 'no'} good rows")
    assert catalog.rows_read == n
    assert rows.height + rejects.height == n
    assert rejects["reason"].null_count() == 0
    assert rows.schema == pl.Schema({c.name: c.dtype for c in LISTING_COLUMNS})
    assert (rows["price"] > 0).all() and rows["title"].null_count() == 0
    assert all(math.isfinite(p) for p in rows["price"])
