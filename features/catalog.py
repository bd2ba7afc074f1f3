"""Reading and validating catalogs as the contract says: lazily, one file or a folder.

Whole-batch problems raise `CatalogError` (the CLI exits 2 with its message). Bad rows are
not dropped: they come back in `Catalog.rejects` with their file, row number and reason, so
every input row is either in `Catalog.rows` or in `Catalog.rejects`. Finding the files and
scanning them is `features.sources`; typing values and the row rules are `features.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.contract import LISTING_COLUMNS, REJECTS_SCHEMA, SCHEMA, CatalogError
from features.rules import KEY_STRIDE, NAN_AS_MISSING, reason, typed
from features.sources import (
    EXTRA_FIELDS,
    UNFIT,
    first_line,
    list_files,
    scan_file,
    where_unreadable,
)

__all__ = ["Catalog", "CatalogError", "read_catalog", "repeated_values"]


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: typed good rows and reasoned rejects, both lazy."""

    files: tuple[Path, ...]
    format: str
    rows: pl.LazyFrame
    rejects: pl.LazyFrame
    extra_columns: tuple[str, ...]  # not in the contract: ignored
    absent_columns: tuple[str, ...]  # contract columns missing from at least one file
    present_columns: tuple[str, ...]  # contract columns found in at least one file
    rows_read: int  # data rows in the input (= good rows + rejects)
    nan_as_missing: dict[str, int]  # NaN read as missing, per optional numeric column


@dataclass(frozen=True)
class _FirstPass:
    hashes: pl.Series  # 64-bit hash of each row's listing_id (null when missing)
    rows_per_file: list[int]
    nan_counts: dict[str, int]


def read_catalog(
    path: str | Path, *, currency: str | None = None, keep: tuple[str, ...] = (),
    now: datetime | None = None,
) -> Catalog:
    """Scan a catalog file or folder, check the contract and split good rows from rejects.

    `currency`: the model's currency; rows in another currency are rejected (no exchange-rate
    table yet). `keep`: extra (non-contract) columns to carry through on good rows. `now`:
    when the batch is read (default: the clock); a `listed_at` over a day later is rejected."""
    files, fmt = list_files(Path(path))
    scans = [scan_file(f, fmt) for f in files]
    names = [{n for n in lf.collect_schema().names() if not _helper(n)} for lf in scans]
    columns = set().union(*names)
    typed_files = [typed(lf, f, i, keep) for i, (f, lf) in enumerate(zip(files, scans,
                                                                           strict=True))]
    typed_all = pl.concat(typed_files, how="diagonal_relaxed").with_columns(
        reason(currency, now or datetime.now(UTC)).alias("_reason")
    )
    first = _first_full_pass(typed_all, typed_files, files, fmt)
    for file, n in zip(files, first.rows_per_file, strict=True):
        if n == 0:
            raise CatalogError(f"{file}: no listings (the file has no data rows)")
    dup = _duplicates(typed_all, first.hashes)
    checked = typed_all if dup.is_empty() else _mark_duplicates(typed_all, dup, files)
    out_cols = [c.name for c in LISTING_COLUMNS] + [k for k in keep if k in columns]
    rows = checked.filter(pl.col("_reason").is_null()).select(out_cols)
    rejects = checked.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("file"),
        "row_number",
        pl.col("_raw_listing_id").alias("listing_id"),
        pl.col("_reason").alias("reason"),
    ).cast(REJECTS_SCHEMA)
    return Catalog(
        files=tuple(files), format=fmt, rows=rows, rejects=rejects,
        extra_columns=tuple(sorted(columns - set(SCHEMA))),
        absent_columns=tuple(c.name for c in LISTING_COLUMNS
                             if any(c.name not in file_names for file_names in names)),
        present_columns=tuple(c.name for c in LISTING_COLUMNS if c.name in columns),
        rows_read=sum(first.rows_per_file),
        nan_as_missing={k: v for k, v in first.nan_counts.items() if v},
    )


def _helper(name: str) -> bool:
    return name == EXTRA_FIELDS or name.startswith(UNFIT)


def _first_full_pass(typed_all: pl.LazyFrame, typed_files: list[pl.LazyFrame],
                     files: list[Path], fmt: str) -> _FirstPass:
    """One streaming pass that decodes every value of every row: row counts per file, NaN
    counts, listing_id hashes. Whatever is broken deep inside a file (a corrupt page, a bad
    line) surfaces here, as a CatalogError naming the file, and not later mid-job."""
    try:
        return _count(typed_all, len(files))
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as exc:
        for file, lf in zip(files, typed_files, strict=True):
            try:
                _count(lf, len(files))
            except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as inner:
                raise CatalogError(f"{file}: cannot be parsed ({first_line(inner)}"
                                   f"{where_unreadable(file, fmt)})") from None
        raise CatalogError(f"{files[0].parent}: cannot be read ({first_line(exc)})") from None


def _count(typed_all: pl.LazyFrame, n_files: int) -> _FirstPass:
    nan_cols = [f"_nan_{c}" for c in NAN_AS_MISSING]
    narrow = typed_all.select(
        pl.when(pl.col("listing_id").is_not_null()).then(pl.col("listing_id").hash(seed=0))
        .alias("_h"),
        (pl.col("_key") // KEY_STRIDE).cast(pl.Int32).alias("_file_index"),
        "_touch",
        *nan_cols,
    )
    hashes: list[pl.Series] = []
    per_file = np.zeros(n_files, dtype=np.int64)
    nan = dict.fromkeys(NAN_AS_MISSING, 0)
    for batch in narrow.collect_batches(engine="streaming"):
        hashes.append(batch["_h"])
        per_file += np.bincount(batch["_file_index"].to_numpy(), minlength=n_files)
        for name, count in zip(NAN_AS_MISSING, batch.select(nan_cols).sum().row(0),
                               strict=True):
            nan[name] += int(count)
    hash_series = pl.concat(hashes) if hashes else pl.Series("_h", [], pl.UInt64)
    return _FirstPass(hash_series, per_file.tolist(), nan)


def repeated_values(column: pl.Series) -> pl.Series:
    """The non-null values occurring more than once. Sorts the column (two copies of 8 bytes a
    row at most): a hash table of every distinct key takes several times that."""
    keys = column.drop_nulls().sort()
    return keys.filter(keys == keys.shift(1)).unique()


def _duplicates(typed_all: pl.LazyFrame, hashes: pl.Series) -> pl.DataFrame:
    """Listing ids seen more than once in the batch, with the key of their first row: the
    repeated 64-bit hashes of the first pass, then a check of the few candidates."""
    repeated_hashes = repeated_values(hashes)
    if repeated_hashes.is_empty():
        return pl.DataFrame(schema={"listing_id": pl.String, "_first_key": pl.Int64})
    return (
        typed_all.select("listing_id", "_key")
        .filter(pl.col("listing_id").hash(seed=0).is_in(repeated_hashes.implode()))
        .group_by("listing_id")
        .agg(pl.len().alias("_n"), pl.col("_key").min().alias("_first_key"))
        .filter(pl.col("_n") > 1)
        .select("listing_id", "_first_key")
        .collect(engine="streaming")
    )


def _mark_duplicates(typed_all: pl.LazyFrame, dup: pl.DataFrame,
                     files: list[Path]) -> pl.LazyFrame:
    """Reject every occurrence of a duplicated listing_id but the first. A join with the small
    table of duplicates (not a whole-column replace, which would hold the batch in memory)."""
    first_key = pl.col("_first_key")
    where = pl.format("{}", first_key % KEY_STRIDE)
    if len(files) > 1:
        names = pl.DataFrame({"_file_index": range(len(files)),
                              "_first_file": [f.name for f in files]})
        dup = dup.with_columns((pl.col("_first_key") // KEY_STRIDE).alias("_file_index")).join(
            names, on="_file_index").drop("_file_index")
        where = pl.format("{} of {}", first_key % KEY_STRIDE, pl.col("_first_file"))
    marked = typed_all.join(dup.lazy(), on="listing_id", how="left", maintain_order="left")
    return marked.with_columns(
        _reason=pl.when(first_key.is_not_null() & (pl.col("_key") != first_key))
        .then(pl.format("duplicate listing_id (first at row {})", where))
        .otherwise(pl.col("_reason"))
    )
