"""Writing: chunks appended to one Parquet, CSV or JSON Lines file that appears only when complete
(written under a hidden temporary name in the same folder, then renamed)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow.parquet as pq

SUFFIXES = (".parquet", ".csv", ".jsonl")


class ChunkWriter:
    """Append chunks to `path` in the format of `kind` (".parquet", ".csv" or ".jsonl")."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._parquet: pq.ParquetWriter | None = None
        self._fh: IO[bytes] | None = None

    def write(self, df: pl.DataFrame) -> None:
        if self.kind == ".parquet":
            table = df.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self._parquet.write_table(table, row_group_size=max(len(df), 1))
            return
        first = self._fh is None
        if self._fh is None:
            self._fh = self.path.open("wb")
        ts = pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.kind == ".csv":
            df.with_columns(ts, pl.col("image_hashes").list.join("|")).write_csv(
                self._fh, include_header=first)
        else:
            df.with_columns(ts).write_ndjson(self._fh)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextmanager
def chunk_writer(out: Path) -> Iterator[ChunkWriter]:
    """A writer whose file is renamed to `out` on success and removed on any failure or
    interrupt (a half-written catalog is never left behind). `out` ends in one of SUFFIXES."""
    temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    writer = ChunkWriter(temp, out.suffix.lower())
    try:
        yield writer
        writer.close()
        temp.replace(out)
    finally:
        writer.close()
        temp.unlink(missing_ok=True)
