"""Reading and validating catalogs as the contract says: lazily, one file or a folder.

Whole-batch problems raise `CatalogError` (the CLI exits 2 with its message). Bad rows are
not dropped: they come back in `Catalog.rejects` with their file, row number and reason, so
every input row is either in `Catalog.rows` or in `Catalog.rejects`.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.contract import LABEL, LISTING_COLUMNS, REJECTS_SCHEMA, REQUIRED, SCHEMA

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
_UTF8_BLOCK = 1 << 24
_KEY_STRIDE = 1 << 40  # row key = file index * stride + row number


class CatalogError(Exception):
    """The whole batch is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: typed good rows and reasoned rejects, both lazy."""

    files: tuple[Path, ...]
    format: str
    rows: pl.LazyFrame
    rejects: pl.LazyFrame
    extra_columns: tuple[str, ...]
    absent_columns: tuple[str, ...]
    rows_read: int  # data rows in the input (= good rows + rejects)


def read_catalog(
    path: str | Path, *, currency: str | None = None, keep: tuple[str, ...] = ()
) -> Catalog:
    """Scan a catalog file or folder, check the contract and split good rows from rejects.

    `currency`: the model's currency; rows in another currency are rejected (no exchange-rate
    table yet). `keep`: extra (non-contract) columns to carry through on good rows.
    """
    files, fmt = _list_files(Path(path))
    scans = [_scan_file(f, fmt) for f in files]
    columns = {name for lf in scans for name in lf.collect_schema().names()}
    extra = tuple(sorted(columns - set(SCHEMA)))
    absent = tuple(c.name for c in LISTING_COLUMNS if c.name not in columns)
    typed_files = [_typed(lf, f, i, keep) for i, (f, lf) in enumerate(zip(files, scans,
                                                                           strict=True))]
    typed = pl.concat(typed_files, how="diagonal_relaxed").with_columns(
        _reason(currency).alias("_reason")
    )
    dup, rows_read = _first_full_pass(typed, typed_files, files, Path(path))
    checked = typed if dup.is_empty() else _mark_duplicates(typed, dup, files)
    out_cols = [c.name for c in LISTING_COLUMNS] + [k for k in keep if k in columns]
    rows = checked.filter(pl.col("_reason").is_null()).select(out_cols)
    rejects = checked.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("file"),
        "row_number",
        pl.col("_raw_listing_id").alias("listing_id"),
        pl.col("_reason").alias("reason"),
    ).cast(REJECTS_SCHEMA)
    return Catalog(tuple(files), fmt, rows, rejects, extra, absent, rows_read)


def _mark_duplicates(typed: pl.LazyFrame, dup: pl.DataFrame, files: list[Path]) -> pl.LazyFrame:
    """Reject every occurrence of a duplicated listing_id but the first. A join with the small
    table of duplicates (not a whole-column replace, which would hold the batch in memory)."""
    first_key = pl.col("_first_key")
    where = pl.format("{}", first_key % _KEY_STRIDE)
    if len(files) > 1:
        names = pl.DataFrame({"_file_index": range(len(files)),
                              "_first_file": [f.name for f in files]})
        dup = dup.with_columns((pl.col("_first_key") // _KEY_STRIDE).alias("_file_index")).join(
            names, on="_file_index").drop("_file_index")
        where = pl.format("{} of {}", first_key % _KEY_STRIDE, pl.col("_first_file"))
    marked = typed.join(dup.lazy(), on="listing_id", how="left", maintain_order="left")
    return marked.with_columns(
        _reason=pl.when(first_key.is_not_null() & (pl.col("_key") != first_key))
        .then(pl.format("duplicate listing_id (first at row {})", where))
        .otherwise(pl.col("_reason"))
    )


def _list_files(path: Path) -> tuple[list[Path], str]:
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir()
            if p.is_file() and not p.name.startswith((".", "_")) and ".rejects." not in p.name
        )
        kinds = {FORMATS.get(p.suffix.lower()) for p in files}
        if not files or kinds == {None}:
            raise CatalogError(f"{path}: folder holds no catalog files (.parquet, .csv, .jsonl)")
        if len(kinds) > 1:
            names = ", ".join(sorted({p.suffix or p.name for p in files}))
            raise CatalogError(f"{path}: folder mixes formats ({names}); use one format per batch")
        return files, kinds.pop()  # type: ignore[return-value]
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CatalogError(
            f"{path}: unknown format {path.suffix!r}; expected .parquet, .csv or .jsonl"
        )
    return [path], fmt


def _scan_file(path: Path, fmt: str) -> pl.LazyFrame:
    if path.stat().st_size == 0:
        raise CatalogError(f"{path}: file is empty")
    try:
        if fmt == "parquet":
            pl.read_parquet_schema(path)
            lf = pl.scan_parquet(path)
        elif fmt == "csv":
            _check_utf8(path)
            lf = pl.scan_csv(path, infer_schema=False)
        else:
            _check_utf8(path)
            lf = pl.scan_ndjson(path, schema=_jsonl_schema(path))
        names = lf.collect_schema().names()
    except CatalogError:
        raise
    except Exception as exc:  # polars/pyarrow raise many kinds for unreadable files
        raise CatalogError(f"{path}: not a readable {fmt} file ({_first_line(exc)})") from None
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise CatalogError(f"{path}: missing required column(s) {', '.join(missing)}")
    return lf


def _jsonl_schema(path: Path) -> dict[str, pl.DataType]:
    """Read JSON Lines values as text (numbers too) so bad values become row rejects."""
    inferred = pl.scan_ndjson(path, infer_schema_length=None).collect_schema()
    return {
        name: pl.List(pl.String()) if isinstance(dtype, pl.List) else pl.String()
        for name, dtype in inferred.items()
    }


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        while block := fh.read(_UTF8_BLOCK):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise CatalogError(
                    f"{path}: not UTF-8 (invalid byte at offset {offset + exc.start}); "
                    "save the file as UTF-8"
                ) from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 (truncated character at end of file)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- typing: every column to its contract dtype, remembering values that did not parse ---

def _typed(lf: pl.LazyFrame, path: Path, index: int, keep: tuple[str, ...]) -> pl.LazyFrame:
    schema = lf.collect_schema()
    exprs: list[pl.Expr] = [
        pl.lit(str(path)).alias("_file"),
        pl.col("row_number").cast(pl.Int64),
        (pl.col("row_number").cast(pl.Int64) + index * _KEY_STRIDE).alias("_key"),
    ]
    for col in LISTING_COLUMNS:
        if col.name in schema:
            parsed = _to_dtype(pl.col(col.name), schema[col.name], col.dtype)
            exprs.append(parsed.alias(col.name))
            raw_present = pl.col(col.name).is_not_null()
            if schema[col.name] == pl.String():
                raw_present = raw_present & (pl.col(col.name).str.strip_chars() != "")
            exprs.append((raw_present & parsed.is_null()).alias(f"_bad_{col.name}"))
        else:
            exprs.append(pl.lit(None, col.dtype).alias(col.name))
            exprs.append(pl.lit(False).alias(f"_bad_{col.name}"))
    exprs.append(_as_text(pl.col("listing_id"), schema["listing_id"]).alias("_raw_listing_id"))
    exprs += [pl.col(k) for k in keep if k in schema]
    return lf.with_row_index("row_number", offset=1).select(exprs)


def _as_text(expr: pl.Expr, source: pl.DataType) -> pl.Expr:
    return expr if source == pl.String() else expr.cast(pl.String, strict=False)


def _to_dtype(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Cast a column to its contract dtype; values that cannot be converted become null."""
    if target == pl.String():
        text = _as_text(expr, source).str.strip_chars()
        return pl.when(text != "").then(text)
    if source == target:
        return expr
    if isinstance(target, pl.Datetime):
        return _to_utc(expr, source)
    if isinstance(target, pl.List):
        if source == pl.String():
            text = expr.str.strip_chars()
            return pl.when(text != "").then(text.str.split("|"))
        return expr.cast(target, strict=False)
    if target == pl.Boolean() and source == pl.String():
        text = expr.str.strip_chars().str.to_lowercase()
        return (pl.when(text.is_in(["true", "1", "yes"])).then(True)
                .when(text.is_in(["false", "0", "no"])).then(False))
    if target == pl.Int64() and source == pl.String():
        number = expr.str.strip_chars().cast(pl.Float64, strict=False)
        return pl.when(number == number.round()).then(number).cast(pl.Int64, strict=False)
    if source == pl.String():
        expr = expr.str.strip_chars()
    return expr.cast(target, strict=False)


def _to_utc(expr: pl.Expr, source: pl.DataType) -> pl.Expr:
    if isinstance(source, pl.Datetime):
        if source.time_zone is None:
            return expr.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        return expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if source == pl.Date():
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    text = (
        expr.cast(pl.String, strict=False)
        .str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
        .str.replace(r"[Zz]$", "+00:00")
    )
    return pl.coalesce(
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC"),
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False).dt.replace_time_zone("UTC"),
        text.str.to_datetime("%Y-%m-%dT%H:%M", strict=False).dt.replace_time_zone("UTC"),
        text.str.to_datetime("%Y-%m-%d", strict=False).dt.replace_time_zone("UTC"),
    ).dt.cast_time_unit("us")


# --- row rules: each a (condition, reason); a row's reason lists every rule it breaks ---

def _row_rules(currency: str | None) -> list[tuple[pl.Expr, str]]:
    c = pl.col
    rules: list[tuple[pl.Expr, str]] = [
        (c("listing_id").is_null(), "listing_id missing"),
        (c("seller_id").is_null(), "seller_id missing"),
        (c("title").is_null(), "title empty"),
        (c("category").is_null(), "category missing"),
        (c("_bad_price"), "price is not a number"),
        (c("price").is_null() & ~c("_bad_price"), "price missing"),
        (c("price") <= 0, "price must be > 0"),
        (~c("price").is_finite(), "price must be a finite number"),
        (c("currency").is_null(), "currency missing"),
        (c("_bad_listed_at"), "listed_at is not an ISO-8601 timestamp"),
        (c("listed_at").is_null() & ~c("_bad_listed_at"), "listed_at missing"),
        (c("list_price") <= 0, "list_price must be > 0"),
        (~c("list_price").is_finite(), "list_price must be a finite number"),
        ((c("seller_rating") < 0) | (c("seller_rating") > 5), "seller_rating outside 0..5"),
    ]
    for name in ("image_count", "units_sold_30d", "returns_30d", "complaints_30d",
                 "seller_review_count"):
        rules.append((c(name) < 0, f"{name} is negative"))
    checked_elsewhere = {"price", "listed_at"}
    for col in LISTING_COLUMNS:
        if col.name not in checked_elsewhere and col.dtype != pl.String():
            kind = "timestamp" if isinstance(col.dtype, pl.Datetime) else str(col.dtype).lower()
            rules.append((c(f"_bad_{col.name}"), f"{col.name} is not a valid {kind}"))
    if currency is not None:
        rules.append((
            c("currency").is_not_null() & (c("currency").str.to_uppercase() != currency),
            f"currency is not the model's {currency} (no exchange-rate table)",
        ))
    return rules


def _reason(currency: str | None) -> pl.Expr:
    """Every broken rule, joined; null for a good row (element-wise, so it streams)."""
    rules = [(cond.fill_null(False), msg) for cond, msg in _row_rules(currency)]
    joined = pl.concat_str(
        [pl.when(cond).then(pl.lit(msg)) for cond, msg in rules], separator="; ",
        ignore_nulls=True,
    )
    return pl.when(pl.any_horizontal(cond for cond, _ in rules)).then(joined)


def _first_full_pass(
    typed: pl.LazyFrame, typed_files: list[pl.LazyFrame], files: list[Path], path: Path
) -> tuple[pl.DataFrame, int]:
    """The first pass over every row (duplicate ids, row count): where broken rows deep inside
    a text file surface. Turns parser errors into a CatalogError naming the file."""
    try:
        dup, n_rows = _duplicates(typed)
    except pl.exceptions.PolarsError as exc:
        for file, lf in zip(files, typed_files, strict=True):
            try:
                _duplicates(lf)
            except pl.exceptions.PolarsError as inner:
                raise CatalogError(f"{file}: cannot be parsed ({_first_line(inner)})") from None
        raise CatalogError(f"{path}: cannot be read ({_first_line(exc)})") from None
    if n_rows == 0:
        raise CatalogError(f"{path}: no listings (the file has no data rows)")
    return dup, n_rows


def repeated_values(column: pl.Series) -> pl.Series:
    """The non-null values occurring more than once. Sorts the column (two copies of 8 bytes a
    row at most): a hash table of every distinct key takes several times that."""
    keys = column.drop_nulls().sort()
    return keys.filter(keys == keys.shift(1)).unique()


def _duplicates(typed: pl.LazyFrame) -> tuple[pl.DataFrame, int]:
    """Listing ids seen more than once in the batch, with the key of their first row, and the
    number of rows. Finds repeated 64-bit hashes (one narrow pass), then checks the few
    candidates."""
    ids = typed.select("listing_id", "_key")
    hashes = ids.select(
        pl.when(pl.col("listing_id").is_not_null()).then(pl.col("listing_id").hash(seed=0))
        .alias("_h")
    ).collect(engine="streaming")["_h"]
    n_rows = hashes.len()
    repeated_hashes = repeated_values(hashes)
    del hashes
    if repeated_hashes.is_empty():
        return pl.DataFrame(schema={"listing_id": pl.String, "_first_key": pl.Int64}), n_rows
    dup = (
        ids.filter(pl.col("listing_id").hash(seed=0).is_in(repeated_hashes.implode()))
        .group_by("listing_id")
        .agg(pl.len().alias("_n"), pl.col("_key").min().alias("_first_key"))
        .filter(pl.col("_n") > 1)
        .select("listing_id", "_first_key")
        .collect(engine="streaming")
    )
    return dup, n_rows


def label_column_present(catalog: Catalog) -> bool:
    """Whether the catalog carries the training label column."""
    return LABEL not in catalog.absent_columns


def rejects_path(out: str | Path) -> Path:
    """Where the rejects of an output go: `scores.parquet` -> `scores.rejects.parquet`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects{out.suffix}")


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else from the extension (parquet or csv)."""
    fmt = fmt or {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(
        Path(out).suffix.lower()
    )
    if fmt not in ("parquet", "csv"):
        raise CatalogError(f"{out}: output must be .parquet or .csv (or pass --format)")
    return fmt


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: Path, fmt: str) -> None:
    """Write a table as Parquet, or CSV with list columns joined by `|` as the contract says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lf = frame.lazy()
    if fmt == "csv":
        lists = [n for n, t in lf.collect_schema().items() if isinstance(t, pl.List)]
        lf = lf.with_columns(pl.col(n).list.join("|") for n in lists)
        lf.sink_csv(path, engine="streaming")
    else:
        lf.sink_parquet(path, engine="streaming")
