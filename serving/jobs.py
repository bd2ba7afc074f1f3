"""Durable scoring jobs: the database is the queue.

A worker leases the oldest queued batch (or one whose worker died: its lease expired), keeps
the lease alive with a heartbeat thread, scores the upload with the champion into the batch's
folder, then inserts the cases (flagged listings plus a seeded audit sample of the others) and
marks the batch done in one transaction. Scoring again after a crash replaces the files and
the cases, so a batch ends with one set of files and one case per listing whatever happened.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy.engine import Engine

from features.catalog import CatalogError, read_catalog
from serving import monitoring, store
from serving.distributed import score_upload
from serving.drift import BatchDrift, DriftReport
from serving.scorer import DEFAULT_MODEL, ModelLoadError, Scorer
from serving.tables import CASE_SNAPSHOT

MAX_ATTEMPTS = 3  # a batch that crashes the scorer this often fails instead of looping
CASE_CHUNK = 10_000  # cases inserted per statement
SNAPSHOT = [name for name, _ in CASE_SNAPSHOT]


@dataclass(frozen=True)
class ServiceSettings:
    """Service defaults; each one can be set by an environment variable (`KNOCKOFF_...`)."""

    data_dir: Path = Path("var")
    upload_limit: int = 4 << 30  # bytes
    max_queued: int = 10  # queued batches per platform
    lease_seconds: float = 60.0
    audit_share: float = 0.005  # of unflagged listings, as `audit` cases
    poll_seconds: float = 1.0
    threads: int = 2  # onnxruntime threads per worker
    dask_rows: int = 0  # Parquet batches of more rows are scored on Dask (0: never)
    dask_scheduler: str | None = None  # its scheduler (None: a local cluster per batch)

    @classmethod
    def from_env(cls, data_dir: str | None = None) -> ServiceSettings:
        """The defaults, overridden by `KNOCKOFF_...` variables; a value that is not a number
        of the right kind and range raises SettingError naming the variable."""
        env = os.environ.get
        return cls(
            data_dir=Path(data_dir or env("KNOCKOFF_DATA_DIR") or "var"),
            upload_limit=_setting("KNOCKOFF_UPLOAD_LIMIT", cls.upload_limit, int, 1),
            max_queued=_setting("KNOCKOFF_MAX_QUEUED", cls.max_queued, int, 1),
            lease_seconds=_setting("KNOCKOFF_LEASE_SECONDS", cls.lease_seconds, float, 1),
            audit_share=_setting("KNOCKOFF_AUDIT_SHARE", cls.audit_share, float, 0, 1),
            poll_seconds=_setting("KNOCKOFF_POLL_SECONDS", cls.poll_seconds, float, 0.01),
            threads=_setting("KNOCKOFF_THREADS", cls.threads, int, 1),
            dask_rows=_setting("KNOCKOFF_DASK_ROWS", cls.dask_rows, int, 0),
            dask_scheduler=env("KNOCKOFF_DASK_SCHEDULER") or None,
        )

    def batch_dir(self, batch_id: str) -> Path:
        return self.data_dir / "batches" / batch_id


class SettingError(ValueError):
    """A `KNOCKOFF_...` setting that cannot be used."""


def _setting(name: str, default: Any, kind: type, low: float,
             high: float | None = None) -> Any:
    """`name` from the environment as `kind` within [low, high], else `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < low or (high is not None and value > high):
        span = f"{low:g}..{high:g}" if high is not None else f"at least {low:g}"
        noun = "an integer" if kind is int else "a number"
        raise SettingError(f"{name} must be {noun}, {span}; got {raw!r}")
    return value


def public_message(exc: BaseException, folder: Path) -> str:
    """An error message without the server's paths: `upload.csv: ...`, as the CLI names files."""
    return str(exc).replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")


class ChampionWatch:
    """Which version holds the champion alias, asked of the registry at most every `ttl` s."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._label: str | None = None

    def current(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked >= self.ttl:
                self._label = _champion_label()
                self._checked = time.monotonic()
            return self._label


def _champion_label() -> str | None:
    from serving import tracking

    try:
        return tracking.resolve(DEFAULT_MODEL).label
    except Exception:  # no champion yet, or the registry cannot be reached: wait for it
        return None


class Worker:
    """Scores queued batches one at a time until `stop` is set."""

    def __init__(self, engine: Engine, settings: ServiceSettings, name: str | None = None,
                 champion: ChampionWatch | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.champion = champion or ChampionWatch()
        self.scorer: Scorer | None = None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except (Exception, pl.exceptions.PanicException):
                # e.g. the database went away for a moment: log it and poll again
                traceback.print_exc(file=sys.stderr)
                worked = False
            if not worked:
                stop.wait(self.settings.poll_seconds)

    def run_once(self) -> bool:
        """Score one batch if there is one and a champion to score it with."""
        version = self.champion.current()
        if version is None:
            return False
        if self.scorer is None or self.scorer.model_version != version:
            try:
                self.scorer = Scorer.load(DEFAULT_MODEL, threads=self.settings.threads)
            except ModelLoadError as exc:
                print(f"knockoff worker: cannot load the champion: {exc}", file=sys.stderr)
                return False
        batch = store.claim_batch(self.engine, self.name, self.settings.lease_seconds)
        if batch is None:
            return False
        self.process(batch, self.scorer)
        return True

    def process(self, batch: store.Batch, scorer: Scorer) -> None:
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(batch.id, stop), daemon=True)
        beat.start()
        folder = self.settings.batch_dir(batch.id)
        try:
            counts, cases, drift = self._score(batch, scorer)
            if drift is not None:  # before the batch is done, while the lease is still ours
                monitoring.save_drift(self.engine, batch.id, self.name,
                                      str(counts["model_version"]), drift)
        except CatalogError as exc:
            store.fail_batch(self.engine, batch.id, self.name, public_message(exc, folder))
        except (Exception, pl.exceptions.PanicException) as exc:
            traceback.print_exc(file=sys.stderr)
            if batch.attempts >= MAX_ATTEMPTS:
                store.fail_batch(self.engine, batch.id, self.name,
                                 f"scoring failed {batch.attempts} times "
                                 f"({type(exc).__name__}); please submit it again")
            else:
                store.release_batch(self.engine, batch.id, self.name)
        else:
            done = store.finish_batch(self.engine, batch.id, self.name, counts, cases)
            if done and drift is not None:
                monitoring.track_drift(self.engine, batch.id, batch.platform_id,
                                       str(counts["model_version"]), drift)
        finally:
            stop.set()
            beat.join()

    def _heartbeat(self, batch_id: str, stop: threading.Event) -> None:
        lease = self.settings.lease_seconds
        while not stop.wait(lease / 3):
            try:
                if not store.renew_lease(self.engine, batch_id, self.name, lease):
                    return  # another worker took it over; our result will not be committed
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def _score(self, batch: store.Batch, scorer: Scorer
               ) -> tuple[dict[str, Any], Iterator[list[dict[str, Any]]], DriftReport | None]:
        folder = self.settings.batch_dir(batch.id)
        upload = self.settings.data_dir / batch.upload_path
        _clear_outputs(folder, keep=upload)  # what a killed attempt may have left
        monitor = BatchDrift()  # counts drift as the batch is scored
        observed = dataclasses.replace(scorer, observer=monitor.add)
        summary = score_upload(upload, folder / "scores.parquet", observed,
                               self.settings.threads, self.settings.dask_rows,
                               self.settings.dask_scheduler)
        counts = {k: summary[k] for k in ("rows", "scored", "rejected", "flagged",
                                          "model_version")}
        cases = case_frame(batch, upload, folder / "scores.parquet", scorer,
                           self.settings.audit_share)
        drift = monitoring.batch_report(monitor, scorer, summary, folder / "scores.parquet")
        return counts, _chunks(cases), drift


ORPHAN_AGE_SECONDS = 3600.0  # an upload in progress is never this old without its batch row


def sweep_orphans(engine: Engine, settings: ServiceSettings,
                  older_than: float = ORPHAN_AGE_SECONDS) -> int:
    """Delete the batch folders with no batch in the database, untouched for `older_than`
    seconds: uploads cut off by a server killed mid-request (a refused upload is deleted when
    it is refused). Returns how many were deleted; said on stderr."""
    root = settings.data_dir / "batches"
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than
    stale = {p.name: p for p in root.iterdir() if p.is_dir() and _touched(p) < cutoff}
    known = store.known_batches(engine, list(stale))
    orphans = [p for name, p in stale.items() if name not in known]
    for folder in orphans:
        shutil.rmtree(folder, ignore_errors=True)
    if orphans:
        print(f"knockoff: removed {len(orphans)} upload folder(s) with no batch, older than "
              f"{older_than / 3600:g} h (uploads cut off by a stopped server)", file=sys.stderr)
    return len(orphans)


def _touched(folder: Path) -> float:
    """When the folder or a file in it last changed (an upload being written updates its
    file, not the folder)."""
    return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])


def _clear_outputs(folder: Path, keep: Path) -> None:
    for path in folder.iterdir():
        if path.resolve() != keep.resolve():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def case_frame(batch: store.Batch, upload: Path, scores: Path, scorer: Scorer,
               audit_share: float) -> pl.DataFrame:
    """One case per flagged listing plus a seeded random sample of the unflagged ones (the
    same sample every time the batch is scored), each with the listing as submitted."""
    seed = int(batch.id[:8], 16)
    in_sample = pl.col("listing_id").hash(seed) % 1_000_000 < round(audit_share * 1_000_000)
    picked = pl.scan_parquet(scores).filter(pl.col("flagged") | in_sample).select(
        "listing_id", "score", "reasons", "model_version",
        kind=pl.when(pl.col("flagged")).then(pl.lit("flag")).otherwise(pl.lit("audit")))
    listings = read_catalog(upload, currency=scorer.state.currency).rows
    return picked.join(listings.select(["listing_id", *SNAPSHOT]), on="listing_id",
                        how="left").with_columns(
        platform_id=pl.lit(batch.platform_id), batch_id=pl.lit(batch.id),
        status=pl.lit("open"), created_at=pl.lit(store.now()),
    ).collect(engine="streaming")


def _chunks(frame: pl.DataFrame) -> Iterator[list[dict[str, Any]]]:
    """Rows as dicts a chunk at a time: a big batch's cases are never all Python objects."""
    for start in range(0, frame.height, CASE_CHUNK):
        yield frame.slice(start, CASE_CHUNK).to_dicts()
