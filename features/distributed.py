"""The Dask engine's data side: a Parquet catalog as partitions (files, or runs of row groups;
local paths or any fsspec URL), each validated exactly as `read_catalog` validates it, and the
whole-batch aggregates as partial group-bys per partition combined by a hash shuffle.

Three passes over the partitions, each a task per partition on Polars frames:
1. listing ids: (listing_id, row key) hashed into buckets; each bucket finds its duplicates,
   so the later occurrences are rejected as the local engine rejects them;
2. partial aggregates: per partition, the seller, main-image and contact group-bys, split into
   buckets by key; a reducer per bucket finishes them (medians over the merged price ratios,
   distinct counts over the merged sets); the seller network's edges (contacts and linking
   images with two sellers or more) go to one task for the connected components;
3. each bucket's finished rows are routed back to the partitions holding their keys, so a
   partition's task joins only the aggregate rows it needs (`partition_aggregates`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.aggregates import LOW_PRICE_RATIO, BatchAggregates, image_key
from features.catalog import _mark_duplicates
from features.contract import LISTING_COLUMNS, REJECTS_SCHEMA, REQUIRED, CatalogError
from features.fitted import apply_brand_prices
from features.rules import KEY_STRIDE, NAN_AS_MISSING, reason, typed
from features.sources import first_line, list_files
from features.state import FeatureState

PARTITION_ROWS = 1_000_000  # rows per partition (whole row groups are never split)
_DUP_SCHEMA = {"listing_id": pl.String, "_first_key": pl.Int64}
_DTYPES = {c.name: c.dtype for c in LISTING_COLUMNS}


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


def _id_buckets(part: Part, buckets: int) -> list[pl.DataFrame]:
    ids = _typed_part(part, ["listing_id"]).select("listing_id", "_key").filter(
        pl.col("listing_id").is_not_null()).collect()
    return _split(ids, pl.col("listing_id").hash(seed=0), buckets)


def _duplicates(pieces: list[pl.DataFrame]) -> pl.DataFrame:
    return (pl.concat(pieces).group_by("listing_id")
            .agg(pl.len().alias("_n"), pl.col("_key").min().alias("_first_key"))
            .filter(pl.col("_n") > 1).select(list(_DUP_SCHEMA)))


def checked_part(part: Part, files: Sequence[str], duplicates: pl.DataFrame, currency: str,
                 now: datetime) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(good rows, rejects, NaN read as missing per column) of one partition, as
    `read_catalog` splits them for the batch; `part.hidden` nulled on the good rows after
    validation, as the local engine's schema plan nulls them."""
    rows = _typed_part(part).with_columns(reason(currency, now).alias("_reason"))
    mine = duplicates.filter(pl.col("_first_key") // KEY_STRIDE <= part.index)
    if not mine.is_empty():
        rows = _mark_duplicates(rows, mine, [Path(f) for f in files])
    checked = rows.collect()
    good = checked.filter(pl.col("_reason").is_null()).select(c.name for c in LISTING_COLUMNS)
    if part.hidden:
        good = good.with_columns(pl.lit(None, _DTYPES[c]).alias(c) for c in part.hidden)
    rejects = checked.filter(pl.col("_reason").is_not_null()).select(
        pl.col("_file").alias("file"), "row_number",
        pl.col("_raw_listing_id").alias("listing_id"), pl.col("_reason").alias("reason"),
    ).cast(REJECTS_SCHEMA)
    nan = checked.select(pl.col(f"_nan_{c}").sum().alias(c) for c in NAN_AS_MISSING).row(0)
    return good, rejects, dict(zip(NAN_AS_MISSING, map(int, nan), strict=True))


# ------------------------------------------------------------------ pass 2: partial aggregates


def _split(frame: pl.DataFrame, key: pl.Expr, buckets: int) -> list[pl.DataFrame]:
    tagged = frame.with_columns((key % buckets).cast(pl.Int64).alias("_bucket"))
    by = tagged.partition_by("_bucket", as_dict=True, include_key=False)
    return [by.get((b,), frame.clear()) for b in range(buckets)]


def partials(good: pl.DataFrame, part: int, state: FeatureState,
             buckets: int) -> tuple[list[pl.DataFrame], ...]:
    """One partition's seller, image and contact group-bys, each split into hash buckets."""
    narrow = apply_brand_prices(good.lazy().with_columns(image_key()), state.prices).select(
        "seller_id", "brand", "listed_at", "seller_contact_hash", "_image_key",
        "price_brand_ratio", pl.lit(part, pl.Int64).alias("_part"))
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
    return (_split(sellers, pl.col("seller_id").hash(seed=1), buckets),
            _split(images, pl.col("_image_key"), buckets),
            _split(contacts, pl.col("seller_contact_hash").hash(seed=2), buckets))


def _merged(name: str) -> pl.Expr:
    """The values of a list column's lists over a group, as one column."""
    return pl.col(name).list.explode(keep_nulls=False, empty_as_null=False)


def reduce_sellers(pieces: list[pl.DataFrame]) -> pl.DataFrame:
    """Per-seller features over every partition, with the partitions holding the seller."""
    days_active = (pl.col("_last").max() - pl.col("_first").min()).dt.total_seconds() \
        / 86_400.0 + 1.0
    valid = pl.col("_valid").sum()
    return pl.concat(pieces).group_by("seller_id").agg(
        pl.col("_n").sum().alias("seller_listings"),
        _merged("_brands").n_unique().alias("seller_brands"),
        pl.when(valid > 0).then(pl.col("_low").sum() / valid).alias("seller_low_price_share"),
        _merged("_ratios").median().alias("seller_median_price_ratio"),
        (pl.col("_n").sum() / days_active).alias("seller_listings_per_day"),
        pl.col("_part").unique().alias("_parts"),
    )


def reduce_images(pieces: list[pl.DataFrame],
                  max_image_sellers: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(images, edges): distinct sellers and brands per main image, kept for the images whose
    counts the row does not imply (as the local engine keeps them); the seller-image edges of
    the images that link sellers (2 to `max_image_sellers` sellers)."""
    images = pl.concat(pieces).group_by("_image_key").agg(
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


def reduce_contacts(pieces: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(contacts, edges): accounts per contact hash shared by two or more sellers, and their
    seller-contact edges (a contact of one seller links nothing)."""
    pairs = pl.concat(pieces)
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


def tree_reduce(client: Any, futures: list[Any], combine: Callable[..., Any],
                fan_in: int = 8) -> list[Any]:
    """Combine futures `fan_in` at a time until at most `fan_in` remain."""
    while len(futures) > fan_in:
        futures = [client.submit(combine, futures[i:i + fan_in], pure=False)
                   for i in range(0, len(futures), fan_in)]
    return futures


def route(table: pl.DataFrame, n_parts: int,
          extra: pl.DataFrame | None = None) -> list[pl.DataFrame]:
    """A bucket's finished aggregate rows split by the partitions that hold their keys (a row
    goes to each of them); `extra` (the seller clusters) is joined on first."""
    if extra is not None:
        table = table.join(extra, on="seller_id", how="left").with_columns(
            pl.col("seller_cluster_size").fill_null(1))
    exploded = table.explode("_parts")
    by = exploded.partition_by("_parts", as_dict=True, include_key=False)
    empty = exploded.drop("_parts").clear()
    return [by.get((p,), empty) for p in range(n_parts)]


def partition_aggregates(sellers: list[pl.DataFrame], images: list[pl.DataFrame],
                         contacts: list[pl.DataFrame]) -> BatchAggregates:
    """The aggregate rows one partition joins: its pieces from every bucket."""
    return BatchAggregates(pl.concat(sellers), pl.concat(images), pl.concat(contacts))


# ------------------------------------------------------------------ orchestration


@dataclass(frozen=True)
class ShuffledBatch:
    """A batch on the cluster: its partitions, its duplicate ids, and per partition the
    futures of the aggregate pieces it joins."""

    parts: list[Part]
    files: list[str]
    duplicates: pl.DataFrame
    aggregates: list[Any]  # one future of BatchAggregates per partition


def _gather_bucket(client: Any, producers: list[Any], bucket: int) -> list[Any]:
    return [client.submit(operator.getitem, p, bucket, pure=False) for p in producers]


def shuffle(client: Any, producers: list[Any], buckets: int,
            reducer: Callable[..., Any], *args: Any) -> list[Any]:
    """One reducer task per bucket over that bucket's piece of every producer's output."""
    return [client.submit(reducer, _gather_bucket(client, producers, b), *args, pure=False)
            for b in range(buckets)]


def shuffled_batch(client: Any, parts: list[Part], state: FeatureState, now: datetime,
                   *, buckets: int | None = None) -> ShuffledBatch:
    """Passes 1 and 2 (see the module docstring) over the batch's partitions (`list_parts`)
    on the cluster, with `buckets` reducers per key (default two per worker)."""
    buckets = buckets or 2 * max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    files = list(dict.fromkeys(p.file for p in parts))
    id_pieces = client.map(_id_buckets, parts, buckets=buckets, pure=False)
    duplicates = pl.concat(client.gather(shuffle(client, id_pieces, buckets, _duplicates)))
    checked = [client.submit(checked_part, p, files, duplicates, state.currency, now,
                             pure=False) for p in parts]
    goods = [client.submit(operator.getitem, c, 0, pure=False) for c in checked]
    split = [client.submit(partials, g, i, state, buckets, pure=False)
             for i, g in enumerate(goods)]
    kinds = [[client.submit(operator.getitem, s, k, pure=False) for s in split]
             for k in range(3)]
    sellers = shuffle(client, kinds[0], buckets, reduce_sellers)
    images = shuffle(client, kinds[1], buckets, reduce_images, state.max_image_sellers)
    contacts = shuffle(client, kinds[2], buckets, reduce_contacts)
    edges = [client.submit(operator.getitem, f, 1, pure=False) for f in images + contacts]
    linked = client.submit(cluster_sizes, tree_reduce(client, edges, forest), pure=False)
    n = len(parts)
    routed = (
        [client.submit(route, s, n, linked, pure=False) for s in sellers],
        [client.submit(route, client.submit(operator.getitem, f, 0, pure=False), n, pure=False)
         for f in images],
        [client.submit(route, client.submit(operator.getitem, f, 0, pure=False), n, pure=False)
         for f in contacts],
    )
    per_part = [client.submit(partition_aggregates,
                              *(_gather_bucket(client, kind, i) for kind in routed), pure=False)
                for i in range(n)]
    return ShuffledBatch(parts, files, duplicates, per_part)
