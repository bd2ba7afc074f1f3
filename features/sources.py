"""Finding and opening a catalog's files: one file, or a folder read whole or not at all.

Each file is scanned lazily with its values as written (text formats as text); typing them to
the contract is `features.rules`' job. Two kinds of helper column come with a scan:
`EXTRA_FIELDS` (CSV: fields beyond the header, a ragged row) and `UNFIT + name` (JSON Lines:
the value's JSON kind cannot be that column's type, e.g. an object as a title).
"""

from __future__ import annotations

import codecs
import csv
import json
import stat
from pathlib import Path

import polars as pl

from features.contract import REQUIRED, SCHEMA, CatalogError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
EXTRA_FIELDS = "_extra_fields"
UNFIT = "_unfit_"
_UTF8_BLOCK = 1 << 24


def list_files(path: Path) -> tuple[list[Path], str]:
    """The files of a batch and their format. In a folder, names starting with `.` or `_`
    are ignored (`_SUCCESS`, `_metadata`); anything else that is not a file of the batch's
    format (a subfolder, a dangling or looping link, another format) refuses the batch."""
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    if not path.is_dir():
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise CatalogError(
                f"{path}: unknown format {path.suffix!r}; expected .parquet, .csv or .jsonl"
            )
        return [path], fmt
    files = [_folder_entry(p) for p in sorted(path.iterdir())
             if not p.name.startswith((".", "_"))]
    if not files:
        raise CatalogError(f"{path}: folder holds no catalog files (.parquet, .csv, .jsonl)")
    kinds = {FORMATS[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        names = ", ".join(sorted({p.suffix for p in files}))
        raise CatalogError(f"{path}: folder mixes formats ({names}); use one format per batch")
    return files, kinds.pop()


def _folder_entry(entry: Path) -> Path:
    whole = "a folder is read whole or not at all: remove it or prefix its name with _"
    try:
        mode = entry.stat().st_mode  # follows links: dangling or looping ones fail here
    except OSError as exc:
        kind = "a dangling or looping link" if entry.is_symlink() else "unreadable"
        raise CatalogError(f"{entry}: {kind} in the input folder ({exc.strerror}); "
                           f"{whole}") from None
    if stat.S_ISDIR(mode):
        raise CatalogError(f"{entry}: a subfolder in the input folder; {whole}")
    if not stat.S_ISREG(mode) or entry.suffix.lower() not in FORMATS:
        raise CatalogError(f"{entry}: not a catalog file (.parquet, .csv, .jsonl) in the input "
                           f"folder; {whole}")
    return entry


def scan_file(path: Path, fmt: str) -> pl.LazyFrame:
    """A lazy scan of one file, its required columns checked."""
    if path.stat().st_size == 0:
        raise CatalogError(f"{path}: file is empty")
    try:
        if fmt == "parquet":
            pl.read_parquet_schema(path)
            lf = pl.scan_parquet(path)
        elif fmt == "csv":
            check_utf8(path)
            lf = _scan_csv(path)
        else:
            check_utf8(path)
            lf = _scan_jsonl(path)
        names = lf.collect_schema().names()
    except CatalogError:
        raise
    except Exception as exc:  # polars/pyarrow raise many kinds for unreadable files
        raise CatalogError(f"{path}: not a readable {fmt} file ({first_line(exc)}"
                           f"{where_unreadable(path, fmt)})") from None
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise CatalogError(f"{path}: missing required column(s) {', '.join(missing)}")
    return lf


def _scan_csv(path: Path) -> pl.LazyFrame:
    """Every field as text, under the header's names; fields beyond the header land in
    `EXTRA_FIELDS` (the row is then rejected) instead of failing the batch mid-stream."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise CatalogError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    schema = {name: pl.String() for name in [*header, EXTRA_FIELDS]}
    return pl.scan_csv(path, has_header=False, skip_rows=1, schema=schema,
                       missing_columns="insert", truncate_ragged_lines=True)


def _scan_jsonl(path: Path) -> pl.LazyFrame:
    """Values as text (lists as lists of text), never retyped by what other rows hold: two
    probe scans flag, row by row, objects or arrays where the contract wants one value and
    anything but an array where it wants a list."""
    try:
        inferred = dict(pl.scan_ndjson(path, infer_schema_length=None).collect_schema())
    except pl.exceptions.PolarsError:  # no common type for a column (or a broken line)
        inferred = _jsonl_keys(path)
    lists = {n for n, t in inferred.items() if isinstance(SCHEMA.get(n, t), pl.List)}
    values = pl.scan_ndjson(path, ignore_errors=True, schema={
        n: pl.List(pl.String()) if n in lists else pl.String() for n in inferred})
    scalars = [n for n in inferred if n in SCHEMA and n not in lists]
    contract_lists = [n for n in lists if n in SCHEMA]
    objects = pl.scan_ndjson(path, ignore_errors=True, schema={
        **{n: pl.Struct({"_": pl.Null()}) for n in scalars},
        **{n: pl.String() for n in contract_lists}})
    arrays = pl.scan_ndjson(path, ignore_errors=True,
                            schema={n: pl.List(pl.Null()) for n in scalars})
    probes = pl.concat([objects.select(pl.all().name.prefix("_o_")),
                        arrays.select(pl.all().name.prefix("_a_"))], how="horizontal")
    unfit = [(pl.col(f"_o_{n}").is_not_null() | pl.col(f"_a_{n}").is_not_null()).alias(UNFIT + n)
             for n in scalars]
    unfit += [(pl.col(f"_o_{n}").is_not_null() & pl.col(n).is_null()).alias(UNFIT + n)
              for n in contract_lists]
    return pl.concat([values, probes], how="horizontal").select(pl.col(list(inferred)), *unfit)


def _jsonl_keys(path: Path) -> dict[str, pl.DataType]:
    """Every key of a JSON Lines file, in order of appearance (lists as lists, anything else
    as text), read with Python's parser when Polars cannot settle on one type per column."""
    keys: dict[str, pl.DataType] = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise CatalogError(f"{path}: not a readable jsonl file (line {number}: "
                                   f"{exc.args[0].split(':')[0]})") from None
            if not isinstance(record, dict):
                raise CatalogError(f"{path}: not a readable jsonl file (line {number}: "
                                   "not a JSON object)")
            for key, value in record.items():
                if key not in keys or isinstance(value, list):
                    keys[key] = pl.List(pl.String()) if isinstance(value, list) else pl.String()
    return keys


def check_utf8(path: Path) -> None:
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


def where_unreadable(path: Path, fmt: str) -> str:
    """Where a text file stops parsing (`; line N: ...`), found again with Python's own
    parsers once the fast reader has failed; empty when they find nothing wrong."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    return f"; line {number}: {exc.args[0].split(':')[0]}"
                if not isinstance(value, dict):
                    return f"; line {number}: not a JSON object"
    elif fmt == "csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            try:
                for _ in reader:
                    pass
            except csv.Error as exc:
                return f"; line {reader.line_num}: {exc}"
    return ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
