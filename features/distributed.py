"""The Dask engine's data side: a Parquet catalog as partitions (files, or runs of row groups;
local paths or any fsspec URL), each validated exactly as `read_catalog` validates it, and the
partial and finished whole-batch aggregates (pure functions on Polars frames; `features.shuffle`
runs them on the cluster and moves their rows between tasks).

1. listing ids: each partition's (listing_id, row key) (`listing_ids`); a bucket's ids give its
   duplicates (`duplicates`), rejected as the local engine rejects them;
2. partial aggregates: per partition, the seller, main-image and contact group-bys of its valid
   rows (`partials`); a reducer per bucket finishes them (medians over the merged price
   ratios, distinct counts over the merged sets) and keeps, per finished row, the partitions
   holding its key; the seller network's edges (contacts and linking images with two sellers
   or more) become a forest per bucket, combined into the seller clusters (`forest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.aggregates import LOW_PRICE_RATIO, image_key
from features.catalog import _mark_duplicates
from features.contract import LISTING_COLUMNS, REJECTS_SCHEMA, REQUIRED, CatalogError
from features.fitted import apply_brand_prices
from features.rules import KEY_STRIDE, NAN_AS_MISSING, reason, typed
from features.sources import first_line, list_files
from features.state import FeatureState

PARTITION_ROWS = 1_000_000  # rows per partition (whole row groups are never split)
_DUP_SCHEMA = {"listing_id": pl.String, "_first_key": pl.Int64}
_DTYPES = {c.name: c.dtype for c in LISTING_COLUMNS}
_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class Part:
    """One partition: row groups `row_groups` of file number `index`, after `offset` rows;
    `hidden`: input columns nulled on its valid rows (its file's schema variant lacks them)."""

    file: str
    index: int
    row_groups: tuple[int, ...]
    offset: int
    rows: int
    hidden: tuple[str, ...] = ()


def _filesystem(source: str) -> tuple[Any, bool]:
    import fsspec

    fs, _ = fsspec.core.url_to_fs(source)
    return fs, "://" not in source


def _catalog_files(source: str) -> list[str]:
    """The batch's Parquet files, as `read_catalog` finds them (local) or listed by fsspec."""
    fs, local = _filesystem(source)
    if local:
        files, fmt = list_files(Path(source))
        names = [str(f) for f in files]
    else:
        if not fs.exists(source):
            raise CatalogError(f"{source}: no such file or folder")
        entries = sorted(fs.ls(source, detail=False)) if fs.isdir(source) else [source]
        protocol = source.split("://", 1)[0]
        names = [e if "://" in e else f"{protocol}://{e}" for e in entries
                 if not Path(e).name.startswith((".", "_"))]
        fmt = "parquet" if names and all(n.endswith((".parquet", ".pq")) for n in names) else ""
    if fmt != "parquet":
        raise CatalogError(f"{source}: the dask engine reads Parquet files only; convert the "
                           "batch or use --engine local")
    return names


def _open(file: str) -> pq.ParquetFile:
    fs, local = _filesystem(file)
    return pq.ParquetFile(file if local else fs.open(file, "rb"))


def list_parts(source: str | Path, target_rows: int = PARTITION_ROWS) -> list[Part]:
    """The partitions of a batch, its files checked up front as `read_catalog` checks them:
    readable, not empty, the required columns present and of a usable type."""
    parts: list[Part] = []
    for index, file in enumerate(_catalog_files(str(source))):
        try:
            meta = _open(file)
            schema = pl.from_arrow(meta.schema_arrow.empty_table())
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            raise CatalogError(f"{file}: not a readable parquet file ({first_line(exc)})") \
                from None
        missing = [c for c in REQUIRED if c not in schema.columns]
        if missing:
            raise CatalogError(f"{file}: missing required column(s) {', '.join(missing)}")
        typed(schema.lazy(), Path(file), index, ())  # refuses unusable column types
        sizes = [meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups)]
        if sum(sizes) == 0:
            raise CatalogError(f"{file}: no listings (the file has no data rows)")
        parts += _runs(file, index, sizes, target_rows)
    return parts


def _runs(file: str, index: int, sizes: list[int], target_rows: int) -> list[Part]:
    """Consecutive row groups of a file gathered into partitions of about `target_rows`."""
    parts: list[Part] = []
    groups: list[int] = []
    offset = rows = 0
    for g, size in enumerate(sizes):
        groups.append(g)
        rows += size
        if rows >= target_rows or g == len(sizes) - 1:
            parts.append(Part(file, index, tuple(groups), offset, rows))
            offset, groups, rows = offset + rows, [], 0
    return parts


def _typed_part(part: Part, columns: Sequence[str] | None = None) -> pl.LazyFrame:
    meta = _open(part.file)
    table = meta.read_row_groups(list(part.row_groups), columns=columns)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    shift = pl.lit(part.offset, pl.Int64)
    return typed(frame.lazy(), Path(part.file), part.index, ()).with_columns(
        pl.lit(part.file).alias("_file"), pl.col("row_number") + shift, pl.col("_key") + shift)


def filled_columns(part: Part, columns: Sequence[str]) -> dict[str, bool]:
    """Of `columns`, those the partition's file has, each with whether a row of the partition
    holds a value (typed as validation types it: NaN in an optional number is no value)."""
    stored = [c for c in columns if c in _open(part.file).schema_arrow.names]
    found = _typed_part(part, ["listing_id", *stored]).select(
        pl.col(c).is_not_null().any() for c in stored).collect()
    return {c: bool(found[c].item()) for c in stored}


# ------------------------------------------------------------------ pass 1: duplicate ids


def listing_ids(part: Part) -> pl.DataFrame:
    """The partition's non-null listing ids with their row keys."""
    return _typed_part(part, ["listing_id"]).select("listing_id", "_key").filter(
        pl.col("listing_id").is_not_null()).collect()


def duplicates(ids: pl.DataFrame) -> pl.DataFrame:
    """The ids seen twice or more among `ids` (all of a bucket's), with their first row key."""
    return (ids.group_by("listing_id")
            .agg(pl.len().alias("_n"), pl.col("_key").min().alias("_first_key"))
            .filter(pl.col("_n") > 1).select(list(_DUP_SCHEMA)))


def _checked(part: Part, files: Sequence[str], duplicates: pl.DataFrame, currency: str,
             now: datetime) -> pl.LazyFrame:
    """The partition's rows with `_reason` (null on a valid row), its later duplicates
    rejected."""
    rows = _typed_part(part).with_columns(reason(currency, now).alias("_reason"))
    mine = duplicates.filter(pl.col("_first_key") // KEY_STRIDE <= part.index)
    if not mine.is_empty():
        rows = _mark_duplicates(rows, mine, [Path(f) for f in files])
    return rows


def _good(checked: _Frame, part: Part) -> _Frame:
    good = checked.filter(pl.col("_reason").is_null()).select(c.name for c in LISTING_COLUMNS)
    if part.hidden:
        good = good.with_columns(pl.lit(None, _DTYPES[c]).alias(c) for c in part.hidden)
    return good


def good_rows(part: Part, files: Sequence[str], duplicates: pl.DataFrame, currency: str,
              now: datetime) -> pl.LazyFrame:
    """The partition's valid rows as `checked_part` keeps them, lazily (the aggregates pass
    selects a few columns of them and never holds the whole partition's)."""
    return _good(_checked(part, files, duplicates, currency, now), part)


def checked_part(part: Part, files: Sequence[str], duplicates: pl.DataFrame, currency: str,
                 now: datetime) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(good rows, rejects, NaN read as missing per column) of one partition, as
    `read_catalog` splits them for the batch; `part.hidden` nulled on the good rows after
    validation, as the local engine's schema plan nulls them."""
    checked = _checked(part, files, duplicates, currency, now).collect()
    good = _good(checked, part)
    rejects = checked.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("file"), "row_number",
        pl.col("_raw_listing_id").alias("listing_id"), pl.col("_reason").alias("reason"),
    ).cast(REJECTS_SCHEMA)
    nan = checked.select(pl.col(f"_nan_{c}").sum().alias(c) for c in NAN_AS_MISSING).row(0)
    return good, rejects, dict(zip(NAN_AS_MISSING, map(int, nan), strict=True))


# ------------------------------------------------------------------ pass 2: partial aggregates


def partials(good: pl.LazyFrame, part: int,
             state: FeatureState) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One partition's seller, image and contact group-bys over its valid rows."""
    narrow = apply_brand_prices(good.with_columns(image_key()), state.prices).select(
        "seller_id", "brand", "listed_at", "seller_contact_hash", "_image_key",
        "price_brand_ratio", pl.lit(part, pl.Int64).alias("_part")).collect().lazy()
    ratio = pl.col("price_brand_ratio")
    sellers, images, contacts = pl.collect_all([
        narrow.group_by("seller_id", "_part").agg(
            pl.len().cast(pl.Int64).alias("_n"),
            (ratio < LOW_PRICE_RATIO).sum().alias("_low"), ratio.count().alias("_valid"),
            ratio.drop_nulls().alias("_ratios"),
            pl.col("listed_at").min().alias("_first"), pl.col("listed_at").max().alias("_last"),
            pl.col("brand").drop_nulls().unique().alias("_brands")),
        narrow.filter(pl.col("_image_key").is_not_null()).group_by("_image_key", "_part").agg(
            pl.col("seller_id").unique().alias("_sellers"),
            pl.col("brand").drop_nulls().hash(seed=0).unique().alias("_brands"),
            pl.col("brand").is_null().any().alias("_unbranded")),
        narrow.filter(pl.col("seller_contact_hash").is_not_null())
        .select("seller_contact_hash", "seller_id", "_part").unique(),
    ])
    return sellers, images, contacts


def _merged(name: str) -> pl.Expr:
    """The values of a list column's lists over a group, as one column."""
    return pl.col(name).list.explode(keep_nulls=False, empty_as_null=False)


def reduce_sellers(pieces: pl.DataFrame) -> pl.DataFrame:
    """Per-seller features over every partition, with the partitions holding the seller."""
    days_active = (pl.col("_last").max() - pl.col("_first").min()).dt.total_seconds() \
        / 86_400.0 + 1.0
    valid = pl.col("_valid").sum()
    return pieces.group_by("seller_id").agg(
        pl.col("_n").sum().alias("seller_listings"),
        _merged("_brands").n_unique().alias("seller_brands"),
        pl.when(valid > 0).then(pl.col("_low").sum() / valid).alias("seller_low_price_share"),
        _merged("_ratios").median().alias("seller_median_price_ratio"),
        (pl.col("_n").sum() / days_active).alias("seller_listings_per_day"),
        pl.col("_part").unique().alias("_parts"),
    )


def reduce_images(pieces: pl.DataFrame,
                  max_image_sellers: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(images, edges): distinct sellers and brands per main image, kept for the images whose
    counts the row does not imply (as the local engine keeps them); the seller-image edges of
    the images that link sellers (2 to `max_image_sellers` sellers)."""
    images = pieces.group_by("_image_key").agg(
        _merged("_sellers").unique().alias("_seller_ids"),
        _merged("_brands").n_unique().alias("main_image_brands"),
        pl.col("_unbranded").any().alias("_unbranded_too"),
        pl.col("_part").unique().alias("_parts"),
    ).with_columns(pl.col("_seller_ids").list.eval(pl.element().hash(seed=0)).list.n_unique()
                   .alias("main_image_sellers"))
    edges = images.filter(pl.col("main_image_sellers").is_between(2, max_image_sellers)).select(
        pl.col("_seller_ids").alias("seller_id"),
        pl.format("i:{}", pl.col("_image_key")).alias("node")).explode("seller_id")
    kept = images.filter(
        (pl.col("main_image_sellers") > 1) | (pl.col("main_image_brands") > 1)
        | ((pl.col("main_image_brands") == 1) & pl.col("_unbranded_too"))
    ).select("_image_key", "main_image_sellers", "main_image_brands", "_parts")
    return kept, edges


def reduce_contacts(pairs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(contacts, edges): accounts per contact hash shared by two or more sellers, and their
    seller-contact edges (a contact of one seller links nothing)."""
    shared = pairs.group_by("seller_contact_hash").agg(
        pl.col("seller_id").n_unique().cast(pl.UInt32).alias("contact_accounts"),
        pl.col("_part").unique().alias("_parts"),
    ).filter(pl.col("contact_accounts") > 1)
    edges = pairs.join(shared.select("seller_contact_hash"), on="seller_contact_hash",
                       how="semi").select("seller_id", pl.format("c:{}", "seller_contact_hash")
                                          .alias("node")).unique()
    return shared, edges


def forest(edges: list[pl.DataFrame]) -> pl.DataFrame:
    """The linked sellers of seller-node edges, each as an edge to the smallest seller id of
    its component (`s:<id>`). The components of a union of edge lists are those of the union
    of their forests, so forests combine in a tree reduction that holds at most one row per
    linked seller, however many edges there are (a node's edges all sit in one bucket)."""
    frame = pl.concat(edges).select("seller_id", "node").unique()
    if frame.is_empty():
        return frame
    seller = (frame["seller_id"].rank("dense") - 1).cast(pl.Int64).to_numpy()
    node = (frame["node"].rank("dense") - 1).cast(pl.Int64).to_numpy() + seller.max() + 1
    size = int(node.max()) + 1
    graph = coo_matrix((np.ones(len(seller), dtype=np.int8), (seller, node)),
                       shape=(size, size))
    _, label = connected_components(graph, directed=False)
    return frame.select("seller_id", pl.Series("_c", label[seller])).select(
        "seller_id", pl.format("s:{}", pl.col("seller_id").min().over("_c")).alias("node"),
    ).unique()


def cluster_sizes(roots: list[pl.DataFrame]) -> pl.DataFrame:
    """seller_id, seller_cluster_size of the linked sellers, from the final forest."""
    return forest(roots).select(
        "seller_id", pl.len().over("node").cast(pl.Int64).alias("seller_cluster_size"))
