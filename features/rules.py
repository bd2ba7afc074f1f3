"""Typing a scanned file to the contract, and the row rules.

A column whose stored type cannot carry its contract meaning (a Boolean price, integer image
hashes) refuses the batch, naming file and column. Otherwise each value is converted on its
own: one that does not fit, or would lose information on the way (1.5 as a count, 2 as a
boolean), marks its row bad and never retypes the column. NaN in an optional number is
missing, as pandas writes it, and counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.contract import LISTING_COLUMNS, CatalogError
from features.sources import EXTRA_FIELDS, UNFIT

KEY_STRIDE = 1 << 40  # row key = file index * stride + row number
NAN_AS_MISSING = ("list_price", "image_count", "units_sold_30d", "returns_30d",
                  "complaints_30d", "seller_rating", "seller_review_count")
_COUNTS = ("image_count", "units_sold_30d", "returns_30d", "complaints_30d",
           "seller_review_count")
_VISIBLE = r"[^\p{Cc}\p{Cf}\p{Z}\s]"  # a title of only control/zero-width characters is empty
_FUTURE_SLACK = timedelta(days=1)


def typed(lf: pl.LazyFrame, path: Path, index: int, keep: tuple[str, ...]) -> pl.LazyFrame:
    """One file's rows in contract dtypes, with `_bad_<column>` (a value that did not fit),
    `_nan_<column>` (NaN read as missing), `_ragged`, its file, row number and row key, and
    `_touch` (depends on every stored column)."""
    schema = lf.collect_schema()
    exprs: list[pl.Expr] = [
        pl.lit(str(path)).alias("_file"),
        pl.col("row_number").cast(pl.Int64),
        (pl.col("row_number").cast(pl.Int64) + index * KEY_STRIDE).alias("_key"),
    ]
    for col in LISTING_COLUMNS:
        source = schema.get(col.name)
        if source is None:
            parsed, bad, nan = pl.lit(None, col.dtype), pl.lit(False), pl.lit(False)
        else:
            _check_type(path, col.name, source, col.dtype)
            parsed, bad, nan = _convert(pl.col(col.name), source, col.dtype,
                                        nan_is_missing=col.name in NAN_AS_MISSING)
            if UNFIT + col.name in schema:
                bad = bad | pl.col(UNFIT + col.name)
                parsed = pl.when(~pl.col(UNFIT + col.name)).then(parsed)
        if col.name == "title":
            parsed = pl.when(parsed.str.contains(_VISIBLE)).then(parsed)
        exprs += [parsed.alias(col.name), bad.alias(f"_bad_{col.name}")]
        if col.name in NAN_AS_MISSING:
            exprs.append(nan.alias(f"_nan_{col.name}"))
    ragged = pl.col(EXTRA_FIELDS).is_not_null() if EXTRA_FIELDS in schema else pl.lit(False)
    exprs.append(ragged.alias("_ragged"))
    exprs.append(_as_text(pl.col("listing_id"), schema["listing_id"]).alias("_raw_listing_id"))
    # every stored value decoded, nothing converted: what the first pass reads to find damage
    exprs.append(pl.any_horizontal(pl.col(n).is_null() for n in schema.names()).alias("_touch"))
    exprs += [pl.col(k) for k in keep if k in schema]
    return lf.with_row_index("row_number", offset=1).select(exprs)


def _check_type(path: Path, name: str, source: pl.DataType, target: pl.DataType) -> None:
    """Refuse a stored type that cannot carry the column's meaning (values of a fitting type
    are checked row by row)."""
    if source == pl.Null() or _is_text(source):
        return
    if isinstance(target, pl.List):
        fits = isinstance(source, pl.List) and (
            _is_text(source.inner) or source.inner == pl.Null())
    elif target == pl.String():
        fits = source.is_integer()
    elif target == pl.Boolean():
        fits = source == pl.Boolean() or source.is_integer()
    elif isinstance(target, pl.Datetime):
        fits = isinstance(source, pl.Datetime) or source == pl.Date()
    else:  # numbers
        fits = source.is_numeric()
    if not fits:
        raise CatalogError(f"{path}: column {name} is stored as {source}, which cannot hold "
                           f"a {_kind(target)}; write it as {_kind(target)} or text")


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String(), pl.Categorical(), pl.Binary()) or isinstance(dtype, pl.Enum)


def _kind(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    if isinstance(dtype, pl.List):
        return "list of strings"
    return {pl.String(): "string", pl.Float64(): "number", pl.Int64(): "whole number",
            pl.Boolean(): "boolean"}[dtype]


def _as_text(expr: pl.Expr, source: pl.DataType) -> pl.Expr:
    return expr if source == pl.String() else expr.cast(pl.String, strict=False)


def _convert(expr: pl.Expr, source: pl.DataType, target: pl.DataType,
             nan_is_missing: bool) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value in the target dtype, value present but unusable, value was NaN read as missing)."""
    if _is_text(source):
        text = _as_text(expr, source).str.strip_chars()
        present = text != ""
        expr = pl.when(present).then(text)
    else:
        present = expr.is_not_null()
    nan = pl.lit(False)
    if nan_is_missing and (source.is_float() or _is_text(source)):
        nan = expr.cast(pl.Float64, strict=False).is_nan().fill_null(False)
        expr, present = pl.when(~nan).then(expr), present & ~nan
    parsed = _to_dtype(expr, source, target)
    if target == pl.String() and source != pl.Binary():  # text always converts (and is long)
        return parsed, pl.lit(False), nan
    bad = (present & parsed.is_null()).fill_null(False)
    return parsed, bad, nan


def _to_dtype(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Each value to the contract dtype; one that does not convert exactly becomes null."""
    if source == target:
        return expr
    if target == pl.String():
        return expr.cast(pl.String, strict=False)
    if isinstance(target, pl.Datetime):
        return _to_utc(expr, source)
    if isinstance(target, pl.List):
        return expr.str.split("|") if _is_text(source) else expr.cast(target, strict=False)
    if target == pl.Boolean():
        if _is_text(source):
            text = expr.str.to_lowercase()
            return (pl.when(text.is_in(["true", "1", "yes"])).then(True)
                    .when(text.is_in(["false", "0", "no"])).then(False))
        return pl.when(expr == 1).then(True).when(expr == 0).then(False)
    if target == pl.Int64():
        if source.is_integer():
            return expr.cast(pl.Int64, strict=False)
        number = expr.cast(pl.Float64, strict=False)
        whole = pl.when(number == number.round()).then(number).cast(pl.Int64, strict=False)
        return pl.coalesce(expr.cast(pl.Int64, strict=False), whole) if _is_text(source) \
            else whole
    return expr.cast(target, strict=False)


def _to_utc(expr: pl.Expr, source: pl.DataType) -> pl.Expr:
    if isinstance(source, pl.Datetime):
        if source.time_zone is None:
            return expr.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        return expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if source == pl.Date():
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    text = (
        _as_text(expr, source)
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

def _row_rules(currency: str | None, now: datetime) -> list[tuple[pl.Expr, str]]:
    c = pl.col
    rules: list[tuple[pl.Expr, str]] = [
        (c("_ragged"), "row has more fields than the header"),
        (c("listing_id").is_null() & ~c("_bad_listing_id"), "listing_id missing"),
        (c("seller_id").is_null() & ~c("_bad_seller_id"), "seller_id missing"),
        (c("title").is_null() & ~c("_bad_title"), "title empty"),
        (c("category").is_null() & ~c("_bad_category"), "category missing"),
        (c("price").is_null() & ~c("_bad_price"), "price missing"),
        (c("price") <= 0, "price must be > 0"),
        (~c("price").is_finite(), "price must be a finite number"),
        (c("currency").is_null() & ~c("_bad_currency"), "currency missing"),
        (c("listed_at").is_null() & ~c("_bad_listed_at"), "listed_at missing"),
        (c("listed_at") > now + _FUTURE_SLACK,
         "listed_at is more than a day after the batch was read"),
        (c("list_price") <= 0, "list_price must be > 0"),
        (~c("list_price").is_finite(), "list_price must be a finite number"),
        ((c("seller_rating") < 0) | (c("seller_rating") > 5), "seller_rating outside 0..5"),
    ]
    rules += [(c(name) < 0, f"{name} is negative") for name in _COUNTS]
    for col in LISTING_COLUMNS:
        if col.name == "price":
            rules.append((c("_bad_price"), "price is not a number"))
        elif col.name == "listed_at":
            rules.append((c("_bad_listed_at"), "listed_at is not an ISO-8601 timestamp"))
        else:
            rules.append((c(f"_bad_{col.name}"), f"{col.name} is not a valid {_kind(col.dtype)}"))
    if currency is not None:
        rules.append((
            c("currency").is_not_null() & (c("currency").str.to_uppercase() != currency),
            f"currency is not the model's {currency} (no exchange-rate table)",
        ))
    return rules


def reason(currency: str | None, now: datetime) -> pl.Expr:
    """Every broken rule, joined; null for a good row (element-wise, so it streams)."""
    rules = [(cond.fill_null(False), msg) for cond, msg in _row_rules(currency, now)]
    joined = pl.concat_str(
        [pl.when(cond).then(pl.lit(msg)) for cond, msg in rules], separator="; ",
        ignore_nulls=True,
    )
    return pl.when(pl.any_horizontal(cond for cond, _ in rules)).then(joined)
