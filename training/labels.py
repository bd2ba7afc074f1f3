"""Officers' decisions as training labels (`knockoff train --labels PATH [--platform NAME]`).

The labels file is what `knockoff labels export` writes: listing_id, platform, is_counterfeit,
decided_at (plus model_version and kind, flag or audit). The catalog's rows belong to one
platform; its decisions override or fill the catalog's `is_counterfeit`, joined on listing_id.
A listing decided more than once (it came in two batches) takes its latest decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.contract import LABEL

COLUMNS = {"listing_id": pl.String, "platform": pl.String, LABEL: pl.Boolean,
           "decided_at": pl.Datetime("us", "UTC")}
DECISION = "_decision"


class LabelsError(ValueError):
    """The labels file cannot be used (unreadable, columns missing, platform unclear)."""


@dataclass(frozen=True, eq=False)
class Labels:
    """One platform's decisions: the latest per listing."""

    path: str
    platform: str
    frame: pl.DataFrame  # listing_id, _decision


@dataclass(frozen=True)
class LabelJoin:
    """What the decisions did to the catalog's labels."""

    platform: str
    joined: int  # catalog rows with a decision
    overrode: int  # ... that had a label already
    changed: int  # ... and whose decision says otherwise
    filled: int  # ... that had none
    unmatched: int  # decisions whose listing is not among the catalog's valid rows

    def counts(self) -> dict[str, int]:
        return {"labels_joined": self.joined, "labels_overrode": self.overrode,
                "labels_changed": self.changed, "labels_filled": self.filled,
                "labels_unmatched": self.unmatched}

    def summary(self) -> dict[str, object]:
        return {**self.counts(), "labels_platform": self.platform}

    def describe(self) -> str:
        return (f"{self.joined} decisions of platform {self.platform} joined: "
                f"{self.filled} filled a missing label, {self.overrode} overrode one "
                f"({self.changed} changed it); {self.unmatched} matched no catalog row")


def _read(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise LabelsError(f"{path}: not a readable Parquet labels file "
                          f"({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LabelsError(f"{path}: missing column(s) {', '.join(missing)} (write it with "
                          "`knockoff labels export`)")
    try:
        return frame.select(pl.col(c).cast(t) for c, t in COLUMNS.items())
    except pl.exceptions.PolarsError as exc:
        raise LabelsError(f"{path}: a column has the wrong type "
                          f"({str(exc).splitlines()[0]})") from None


def _platform(path: Path, frame: pl.DataFrame, platform: str | None) -> str:
    found = sorted(frame["platform"].drop_nulls().unique().to_list())
    if platform is None:
        if len(found) != 1:
            raise LabelsError(f"{path}: holds decisions of {len(found)} platforms "
                              f"({', '.join(found) or 'none'}); --platform is required to say "
                              "which platform the catalog's rows belong to")
        return str(found[0])
    if platform not in found:
        raise LabelsError(f"{path}: no decisions for platform {platform!r} (found: "
                          f"{', '.join(found) or 'none'})")
    return platform


def read_labels(path: str | Path, platform: str | None = None) -> Labels:
    """One platform's latest decision per listing; `platform` may be left out when the file
    holds a single platform's decisions."""
    path = Path(path)
    frame = _read(path)
    name = _platform(path, frame, platform)
    latest = (frame.filter(pl.col("platform") == name, pl.col(LABEL).is_not_null())
              .sort("decided_at").group_by("listing_id", maintain_order=True).last()
              .select("listing_id", pl.col(LABEL).alias(DECISION)))
    return Labels(str(path), name, latest)


def apply_labels(rows: pl.DataFrame, labels: Labels) -> tuple[pl.DataFrame, LabelJoin]:
    """The catalog's rows with decisions over their labels, and what changed."""
    joined = rows.join(labels.frame, on="listing_id", how="left", maintain_order="left")
    decided = joined[DECISION].is_not_null()
    had = joined[LABEL].is_not_null()
    report = LabelJoin(
        platform=labels.platform, joined=int(decided.sum()),
        overrode=int((decided & had).sum()),
        changed=int((decided & had & (joined[DECISION] != joined[LABEL])).sum()),
        filled=int((decided & ~had).sum()),
        unmatched=labels.frame.height - int(decided.sum()))
    out = joined.with_columns(pl.coalesce(DECISION, LABEL).alias(LABEL)).drop(DECISION)
    return out, report
