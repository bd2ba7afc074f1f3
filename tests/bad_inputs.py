"""The kinds of bad input a platform sends, as builders: each writes one into a folder and
returns the path to hand to a command (tests/test_bad_inputs.py runs them)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from tests.conftest import listings
from tests.features.test_catalog import many, write

N = 20  # rows of every generated input


def frame(n: int = N) -> pl.DataFrame:
    return many(n)


def csv_lines(path: Path, edit: Callable[[list[str]], None]) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl_rows(path: Path, rows: dict[int, dict[str, object]]) -> Path:
    """A JSON Lines file of `frame()` with some rows' values replaced (any JSON kind)."""
    records = frame().with_columns(
        pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_dicts()
    for i, changes in rows.items():
        records[i].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def parquet_with(path: Path, **columns: pl.Series | pl.Expr) -> Path:
    frame().with_columns(**columns).write_parquet(path)
    return path


def corrupt_column(path: Path, column: str) -> Path:
    """Overwrite bytes in the middle of one column's compressed pages."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


def folder(tmp: Path, *extra: Callable[[Path], object]) -> Path:
    """A folder with two good Parquet parts, then whatever `extra` adds."""
    batch = tmp / "batch"
    batch.mkdir()
    write(frame(10), batch / "part-0.parquet")
    write(frame(N).tail(10), batch / "part-1.parquet")
    for add in extra:
        add(batch)
    return batch


def replace(line: int, old: str, new: str) -> Callable[[list[str]], None]:
    """Edit one line of a text file (line 0 is a CSV's header)."""
    def edit(lines: list[str]) -> None:
        assert old in lines[line]
        lines[line] = lines[line].replace(old, new, 1)
    return edit


def set_line(line: int, text: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        lines[line] = text
    return edit


def header_only(lines: list[str]) -> None:
    del lines[1:]


def titles(*values: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        for i, value in enumerate(values, start=1):
            replace(i, ",Leather bag,", f",{value},")(lines)
    return edit


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def renamed(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    rejected: int | None  # rows rejected; None: the whole batch is refused (exit 2)
    names: str = ""  # what the error must name (default: the input path)


def c(name: str, build: Callable[[Path], Path], rejected: int | None, names: str = "") -> Case:
    return Case(name, build, rejected, names)


BATCH_ERRORS = [
    c("missing column, parquet", lambda t: write(frame().drop("price"), t / "c.parquet"), None),
    c("missing column, csv", lambda t: write(frame().drop("title"), t / "c.csv"), None),
    c("missing column, jsonl", lambda t: write(frame().drop("currency"), t / "c.jsonl"), None),
    c("empty file", lambda t: empty(t / "c.csv"), None),
    c("header only", lambda t: csv_lines(write(frame(), t / "c.csv"), header_only), None),
    c("zero-row parquet", lambda t: write(frame().head(0), t / "c.parquet"), None),
    c("truncated parquet", lambda t: _truncate(write(frame(), t / "c.parquet")), None),
    c("truncated jsonl", lambda t: _truncate(write(frame(), t / "c.jsonl")), None),
    c("csv named .parquet", lambda t: renamed(write(frame(), t / "c.csv"), "c.parquet"), None),
    c("non-UTF-8 csv", lambda t: _latin1(write(frame(), t / "c.csv")), None),
    c("non-UTF-8 jsonl", lambda t: _latin1(write(frame(), t / "c.jsonl")), None),
    c("unknown extension", lambda t: renamed(write(frame(), t / "c.csv"), "c.xlsx"), None),
    c("no such file", lambda t: t / "missing.parquet", None),
    c("broken jsonl line", lambda t: csv_lines(write(frame(), t / "c.jsonl"),
                                               set_line(12, "{not json")), None, "line 13"),
    c("jsonl line not an object", lambda t: csv_lines(write(frame(), t / "c.jsonl"),
                                                      set_line(4, "[1, 2]")), None, "line 5"),
    c("unterminated csv quote", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        15, ",Leather bag,", ',"Leather bag,')), None),
    c("duplicate csv header", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        0, "list_price", "price")), None, "'price' appears twice"),
    c("boolean price", lambda t: parquet_with(t / "c.parquet", price=pl.lit(True)), None,
      "price"),
    c("boolean title", lambda t: parquet_with(t / "c.parquet", title=pl.lit(False)), None,
      "title"),
    c("integer image hashes", lambda t: parquet_with(
        t / "c.parquet", image_hashes=pl.lit([1, 2], pl.List(pl.Int64))), None, "image_hashes"),
    c("struct image hashes", lambda t: parquet_with(
        t / "c.parquet", image_hashes=pl.struct(a=pl.lit("x"))), None, "image_hashes"),
    c("epoch integer listed_at", lambda t: parquet_with(
        t / "c.parquet", listed_at=pl.lit(1_772_000_000)), None, "listed_at"),
    c("corrupt parquet page", lambda t: corrupt_column(write(frame(2000), t / "c.parquet"),
                                                       "description"), None),
    c("subfolder in folder", lambda t: folder(t, lambda b: (b / "more").mkdir()), None, "more"),
    c("dangling link in folder", lambda t: folder(
        t, lambda b: (b / "gone.parquet").symlink_to(b / "nowhere.parquet")), None, "gone"),
    c("looping link in folder", lambda t: folder(
        t, lambda b: (b / "loop.parquet").symlink_to(b / "loop.parquet")), None, "loop"),
    c("zero-row file in folder", lambda t: folder(
        t, lambda b: write(frame().head(0), b / "part-2.parquet")), None, "part-2"),
    c("folder mixing formats", lambda t: folder(
        t, lambda b: write(frame(), b / "part-9.csv")), None),
    c("stray file in folder", lambda t: folder(
        t, lambda b: (b / "README.txt").write_text("hi")), None, "README.txt"),
    c("empty folder", lambda t: folder(t, *[lambda b, n=n: (b / n).unlink()
                                             for n in ("part-0.parquet", "part-1.parquet")]),
      None),
]

ROW_ERRORS = [
    c("bad prices", lambda t: write(listings(
        {}, {"price": 0.0}, {"price": -3.0}, {"price": float("nan")}, {"price": float("inf")},
        {"price": None}, {}), t / "c.parquet"), 5),
    c("bad timestamp text", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        2, "2026-03-01T12:00:00Z", "yesterday")), 1),
    c("duplicate listing_id", lambda t: write(
        frame().with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("L0"))
                             .otherwise("listing_id").alias("listing_id")), t / "c.parquet"), 1),
    c("other currency", lambda t: write(listings({}, {"currency": "USD"}), t / "c.jsonl"), 1),
    c("empty and invisible titles", lambda t: csv_lines(
        write(frame(), t / "c.csv"), titles('""', "   ", "\u200b\u200d", "\u0007")), 4),
    c("ragged csv row", lambda t: csv_lines(write(frame(), t / "c.csv"), lambda ls: ls.append(
        ls.pop(3) + ",surplus")), 1),
    c("short csv row", lambda t: csv_lines(write(frame(), t / "c.csv"), set_line(6, "L5,S6")),
      1),
    c("jsonl hashes as text among arrays", lambda t: jsonl_rows(t / "c.jsonl", {
        0: {"image_hashes": ["00000000000000aa"]}, 1: {"image_hashes": "00000000000000aa"}}), 1),
    c("jsonl object as title", lambda t: jsonl_rows(t / "c.jsonl", {3: {"title": {"a": 1}}}), 1),
    c("jsonl array as seller_id", lambda t: jsonl_rows(t / "c.jsonl", {3: {"seller_id": [1]}}),
      1),
    c("jsonl boolean and list prices", lambda t: jsonl_rows(
        t / "c.jsonl", {1: {"price": True}, 2: {"price": [5]}}), 2),
    c("jsonl fractional count", lambda t: jsonl_rows(
        t / "c.jsonl", {1: {"units_sold_30d": 1.5}, 2: {"units_sold_30d": 2.0}}), 1),
    c("parquet fractional count", lambda t: parquet_with(t / "c.parquet", units_sold_30d=pl.Series(
        [1.5, 2.0, float("nan")] + [None] * (N - 3))), 1),
    c("parquet integer 2 as boolean", lambda t: parquet_with(
        t / "c.parquet", seller_verified=pl.Series([2, 1, 0] + [None] * (N - 3))), 1),
    c("far-future listed_at", lambda t: write(listings(
        {}, {"listed_at": datetime(9999, 1, 1, tzinfo=UTC)}), t / "c.parquet"), 1),
    c("negative counts and rating", lambda t: write(listings(
        {}, {"returns_30d": -1}, {"seller_rating": 7.0}), t / "c.parquet"), 2),
    c("text in a number column", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        9, ",100.0,", ",abc,")), 1),
    c("NaN in optional numbers", lambda t: _nan_numbers(t / "c.parquet"), 0),
    c("unknown extra columns", lambda t: write(frame().with_columns(pl.lit(1).alias("shelf")),
                                               t / "c.parquet"), 0),
    c("ignored . and _ files in folder", lambda t: folder(
        t, lambda b: (b / "_SUCCESS").write_bytes(b""), lambda b: (b / ".x").write_text("x")),
      0),
    c("optional columns absent in one file", lambda t: folder(
        t, lambda b: write(frame(N + 5).tail(5).select(
            "listing_id", "seller_id", "title", "category", "price", "currency", "listed_at"),
            b / "part-2.parquet")), 0),
]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _latin1(path: Path) -> Path:
    text = path.read_text(encoding="utf-8").replace("Leather", "Léather", 1)
    path.write_bytes(text.encode("latin-1"))
    return path


def _nan_numbers(path: Path) -> Path:
    """Missing optional numbers written as NaN (as pandas holds them), not as nulls."""
    nan = float("nan")
    frame().with_columns(
        pl.Series("list_price", [nan] * (N - 2) + [150.0, 160.0]),
        pl.Series("units_sold_30d", [nan] * N),
    ).write_parquet(path)
    return path


def by_name(name: str) -> Case:
    return next(k for k in BATCH_ERRORS + ROW_ERRORS if k.name == name)


def fingerprint(path: Path) -> dict[str, str]:
    """Every file under a path and its content hash (links as their target)."""
    files = [path] if not path.is_dir() else sorted(path.rglob("*"))
    return {str(p): (os.readlink(p) if p.is_symlink() else
                     hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in files if p.is_symlink() or p.exists()}


def input_rows(case: Case, source: Path) -> int:
    files = sorted(p for p in source.iterdir() if not p.name.startswith((".", "_"))) \
        if source.is_dir() else [source]
    return sum(pl.read_parquet(f).height if f.suffix == ".parquet" else
               len(f.read_text(encoding="utf-8").splitlines()) - (f.suffix == ".csv")
               for f in files)
