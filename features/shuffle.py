"""The Dask engine's shuffle, through Parquet files in a scratch folder beside the output.

Every task that splits rows by key (a partition's listing ids and partial aggregates, a
bucket's finished aggregate rows going back to the partitions that join them) writes them to
one Parquet file, each key's rows in row groups of their own, and returns only where they are
(`Pieces`); the task that needs a key reads those row groups from every file. Dask holds file
names, never the rows: nothing a stage produces stays in a worker's memory until the next
stage runs, so a worker holds one task's partition or bucket at a time, whatever the batch
size (Dask would otherwise keep every piece of every partition until its reducer ran). The
folder must be visible to every worker, as `--out` must be.

Buckets grow with the batch (`bucket_count`: at least two per worker, at most `BUCKET_ROWS`
input rows each), so a reducer's share stays bounded too. The passes, each a task per
partition or per bucket:
1. listing ids -> a reducer per bucket finds the duplicates (gathered: they are few);
2. each partition's valid rows -> its seller, image and contact partials; a reducer per
   bucket finishes the images and contacts (routed back, plus the network's edges), the
   edges become forests combined by tree reduction into the seller clusters, then a reducer
   per bucket finishes the sellers with their cluster sizes (routed back);
3. each partition's task reads its aggregate rows (`PartAggregates.read`) and scores it.
"""

from __future__ import annotations

import operator
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.aggregates import BatchAggregates
from features.distributed import (
    Part,
    cluster_sizes,
    duplicates,
    forest,
    good_rows,
    listing_ids,
    partials,
    reduce_contacts,
    reduce_images,
    reduce_sellers,
)
from features.state import FeatureState

BUCKET_ROWS = 2_500_000  # at most this many input rows' partials per reducer
GROUP_ROWS = 500_000  # rows per row group of a shuffle file
KINDS = ("sellers", "images", "contacts")
_KEYS = (pl.col("seller_id").hash(seed=1), pl.col("_image_key"),
         pl.col("seller_contact_hash").hash(seed=2))
_ARROW = pl.CompatLevel.oldest()


@dataclass(frozen=True)
class Pieces:
    """A task's rows split by key into one Parquet file: the row groups holding each key."""

    path: str
    groups: dict[int, tuple[int, ...]]
    nbytes: int

    def only(self, key: int) -> Pieces:
        return Pieces(self.path, {key: self.groups[key]} if key in self.groups else {},
                      self.nbytes)


def write_pieces(frame: pl.DataFrame, path: Path) -> Pieces:
    """`frame`'s rows by their `_piece` (an integer key), dropped, into `path`."""
    by = frame.partition_by("_piece", as_dict=True, include_key=False)
    schema = frame.drop("_piece").clear().to_arrow(compat_level=_ARROW).schema
    groups: dict[int, tuple[int, ...]] = {}
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for (key,), rows in sorted(by.items()):
            table = rows.to_arrow(compat_level=_ARROW)
            starts = range(0, table.num_rows, GROUP_ROWS)
            for start in starts:
                writer.write_table(table.slice(start, GROUP_ROWS), row_group_size=GROUP_ROWS)
            groups[int(key)] = tuple(range(written, written + len(starts)))
            written += len(starts)
    return Pieces(str(path), groups, path.stat().st_size)


def read_pieces(pieces: Sequence[Pieces], key: int) -> pl.DataFrame:
    """The rows of `key` in every one of `pieces` (all of one schema), as one frame."""
    tables = [pq.ParquetFile(p.path).read_row_groups(list(p.groups[key]))
              for p in pieces if key in p.groups]
    if not tables:
        tables = [pq.read_schema(pieces[0].path).empty_table()]
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass(frozen=True)
class PartAggregates:
    """Where the aggregate rows one partition joins are: its pieces of every bucket's
    finished sellers, images and contacts."""

    part: int
    kinds: tuple[tuple[Pieces, ...], ...]

    def read(self) -> BatchAggregates:
        sellers, images, contacts = (read_pieces(k, self.part) for k in self.kinds)
        return BatchAggregates(sellers, images, contacts)


@dataclass(frozen=True)
class ShuffledBatch:
    """A batch on the cluster: its partitions, its duplicate ids, per partition where its
    aggregate rows are, and the bytes the shuffle wrote."""

    parts: list[Part]
    files: list[str]
    duplicates: pl.DataFrame
    aggregates: list[PartAggregates]
    shuffle_bytes: int


# ------------------------------------------------------------------ tasks (run on workers)


def _piece_file(scratch: str, stage: str, number: int) -> Path:
    return Path(scratch) / stage / f"{number:05d}.parquet"


def _ids_task(part: Part, number: int, buckets: int, scratch: str) -> Pieces:
    ids = listing_ids(part).with_columns(
        (pl.col("listing_id").hash(seed=0) % buckets).alias("_piece"))
    return write_pieces(ids, _piece_file(scratch, "ids", number))


def _duplicates_task(ids: list[Pieces], bucket: int) -> pl.DataFrame:
    return duplicates(read_pieces(ids, bucket))


def _partials_task(part: Part, number: int, files: list[str], dups: pl.DataFrame,
                   state: FeatureState, now: datetime, buckets: int,
                   scratch: str) -> tuple[Pieces, ...]:
    frames = partials(good_rows(part, files, dups, state.currency, now), number, state)
    return tuple(write_pieces(frame.with_columns((key % buckets).alias("_piece")),
                              _piece_file(scratch, kind, number))
                 for kind, key, frame in zip(KINDS, _KEYS, frames, strict=True))


def _routed(table: pl.DataFrame, path: Path) -> Pieces:
    """A bucket's finished rows, each under every partition holding its key (`_parts`)."""
    return write_pieces(table.explode("_parts").rename({"_parts": "_piece"}), path)


def _bucket_rows(split: list[tuple[Pieces, ...]], kind: str, bucket: int) -> pl.DataFrame:
    return read_pieces([pieces[KINDS.index(kind)] for pieces in split], bucket)


def _images_task(split: list[tuple[Pieces, ...]], bucket: int, max_image_sellers: int,
                 scratch: str) -> tuple[Pieces, pl.DataFrame]:
    kept, edges = reduce_images(_bucket_rows(split, "images", bucket), max_image_sellers)
    return _routed(kept, _piece_file(scratch, "images.routed", bucket)), edges


def _contacts_task(split: list[tuple[Pieces, ...]], bucket: int,
                   scratch: str) -> tuple[Pieces, pl.DataFrame]:
    shared, edges = reduce_contacts(_bucket_rows(split, "contacts", bucket))
    return _routed(shared, _piece_file(scratch, "contacts.routed", bucket)), edges


def _sellers_task(split: list[tuple[Pieces, ...]], bucket: int, linked: pl.DataFrame,
                  scratch: str) -> Pieces:
    sellers = reduce_sellers(_bucket_rows(split, "sellers", bucket)).join(
        linked, on="seller_id", how="left").with_columns(
        pl.col("seller_cluster_size").fill_null(1))
    return _routed(sellers, _piece_file(scratch, "sellers.routed", bucket))


# ------------------------------------------------------------------ orchestration (client)


@contextmanager
def scratch_folder(near: Path) -> Iterator[Path]:
    """A hidden folder beside `near` (unique to this run) for the shuffle's files, removed
    when the block ends, however it ends."""
    near.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{near.name}.", suffix=".shuffle", dir=near.parent))
    try:
        for stage in ("ids", *KINDS, *(f"{k}.routed" for k in KINDS)):
            (folder / stage).mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bucket_count(workers: int, rows: int) -> int:
    """Two buckets per worker, more when the batch would give a reducer over BUCKET_ROWS."""
    return max(2 * max(1, workers), -(-rows // BUCKET_ROWS))


def tree_reduce(client: Any, futures: list[Any], combine: Callable[..., Any],
                fan_in: int = 8) -> list[Any]:
    """Combine futures `fan_in` at a time until at most `fan_in` remain."""
    while len(futures) > fan_in:
        futures = [client.submit(combine, futures[i:i + fan_in], pure=False)
                   for i in range(0, len(futures), fan_in)]
    return futures


def _getitem(client: Any, futures: list[Any], index: int) -> list[Any]:
    return [client.submit(operator.getitem, f, index, pure=False) for f in futures]


def shuffled_batch(client: Any, parts: list[Part], state: FeatureState, now: datetime,
                   scratch: Path, *, buckets: int | None = None) -> ShuffledBatch:
    """Passes 1 and 2 (see the module docstring) over the batch's partitions (`list_parts`)
    on the cluster, through files in `scratch` (`scratch_folder`)."""
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    buckets = buckets or bucket_count(workers, sum(p.rows for p in parts))
    files, where = list(dict.fromkeys(p.file for p in parts)), str(scratch)
    ids = client.gather([client.submit(_ids_task, p, i, buckets, where, pure=False)
                         for i, p in enumerate(parts)])
    dups = pl.concat(client.gather([client.submit(_duplicates_task, ids, b, pure=False)
                                    for b in range(buckets)]))
    split = [client.submit(_partials_task, p, i, files, dups, state, now, buckets, where,
                           pure=False) for i, p in enumerate(parts)]
    images = [client.submit(_images_task, split, b, state.max_image_sellers, where,
                            pure=False) for b in range(buckets)]
    contacts = [client.submit(_contacts_task, split, b, where, pure=False)
                for b in range(buckets)]
    linked = client.submit(cluster_sizes, tree_reduce(
        client, _getitem(client, images + contacts, 1), forest), pure=False)
    sellers = [client.submit(_sellers_task, split, b, linked, where, pure=False)
               for b in range(buckets)]
    routed = client.gather([sellers, _getitem(client, images, 0),
                            _getitem(client, contacts, 0)])
    written = client.gather(split)
    shuffle_bytes = sum(p.nbytes for p in ids) + sum(
        p.nbytes for group in (*written, *routed) for p in group)
    for stage in ("ids", *KINDS):  # read by every reducer: no longer needed
        shutil.rmtree(scratch / stage, ignore_errors=True)
    aggregates = [PartAggregates(i, tuple(tuple(p.only(i) for p in kind) for kind in routed))
                  for i in range(len(parts))]
    return ShuffledBatch(parts, files, dups, aggregates, shuffle_bytes)
