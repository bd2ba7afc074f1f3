"""Where results go: output paths, formats, and publishing a set of files all or nothing.

Every job writes its outputs under unique temporary names in the output's own folder and
renames them into place only when all of them are complete, so a reader never sees a half
written file, or a scores file without its rejects, and two runs writing the same `--out`
never publish each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from features.contract import CatalogError

_OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def rejects_path(out: str | Path) -> Path:
    """Where the rejects of an output go: `scores.parquet` -> `scores.rejects.parquet`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects{out.suffix}")


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """The output format: `fmt` if given, else from the extension (parquet or csv)."""
    fmt = fmt or _OUTPUT_FORMATS.get(Path(out).suffix.lower())
    if fmt not in ("parquet", "csv"):
        raise CatalogError(f"{out}: output must be .parquet or .csv (or pass --format)")
    return fmt


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: Path, fmt: str) -> None:
    """Write a table as Parquet, or CSV with list columns joined by `|` as the contract says."""
    lf = frame.lazy()
    if fmt == "csv":
        lists = [n for n, t in lf.collect_schema().items() if isinstance(t, pl.List)]
        lf = lf.with_columns(pl.col(n).list.join("|") for n in lists)
        lf.sink_csv(path, engine="streaming")
    else:
        lf.sink_parquet(path, engine="streaming")


def refuse_overwriting_inputs(outputs: Iterable[Path], source: str | Path,
                              files: Iterable[Path]) -> None:
    """`--out` (or the rejects file next to it) may never be an input, nor sit inside an input
    folder: writing it would destroy the batch being read."""
    source = Path(source)
    inputs = {f.resolve() for f in files}
    folder = source.resolve() if source.is_dir() else None
    for out in outputs:
        where = out.resolve()
        if where in inputs:
            raise CatalogError(f"--out {out}: is an input file of this batch; choose another path")
        if folder is not None and where.is_relative_to(folder):
            raise CatalogError(f"--out {out}: is inside the input folder {source}; "
                               "choose a path outside it")


@contextmanager
def publishing(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Yield one unique temporary path per target (same folder, so the rename is atomic);
    when the block completes, rename them onto their targets in the order given; if it fails
    or is interrupted, remove them all and publish nothing.

    Pass the file readers look for last: a rename can still fail (a folder sitting at a
    target is refused up front, but the disk is not ours), and a reader who finds that file
    must find the ones published before it complete."""
    for target in targets:
        if target.is_dir():
            raise CatalogError(f"{target}: is a folder; cannot write the output there")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"{target}: cannot create its folder ({exc.strerror})") from None
    temps = [_unique_temp(t) for t in targets]
    try:
        try:
            yield tuple(temps)
        except Exception as exc:
            _name_the_target(exc, temps, targets)
            raise
        for temp, target in zip(temps, targets, strict=True):
            _rename(temp, target)
    finally:  # after a complete publication nothing is left to remove
        for temp in temps:
            temp.unlink(missing_ok=True)


def _unique_temp(target: Path) -> Path:
    """A name no other run picks (process id and 64 random bits), not created here, so the
    writer creates it with the usual permissions."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.partial")


def _name_the_target(exc: Exception, temps: list[Path], targets: tuple[Path, ...]) -> None:
    """A failure writing a temporary file is reported against the output it stands for."""
    text = str(exc)
    for temp, target in zip(temps, targets, strict=True):
        if getattr(exc, "filename", None) == str(temp) or str(temp) in text:
            detail = getattr(exc, "strerror", None) or text.splitlines()[0]
            detail = detail.replace(str(temp), str(target))
            raise CatalogError(f"{target}: cannot be written ({detail})") from None


def _rename(temp: Path, target: Path) -> None:
    try:
        temp.replace(target)
    except OSError as exc:
        raise CatalogError(f"{target}: cannot be written ({exc.strerror})") from None
