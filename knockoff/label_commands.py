"""Officers' decisions back into the model's life: `labels export` (the decided labels as
Parquet, for `knockoff train --labels`) and `report` (flag precision and recall per model
version, `serving.estimates`). Both read the service's database (`--db`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knockoff.commands import UserError, _date, add_command, print_summary

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from serving.estimates import FlagEstimate, Interval


def _connect(url: str | None) -> Engine:
    """The service's database; one that cannot be opened is the user's to fix (exit 2)."""
    from serving import store

    try:
        return store.connect(url)
    except store.StoreError as exc:
        raise UserError(str(exc)) from None


def cmd_labels(args: argparse.Namespace) -> None:
    import polars as pl

    from features.outputs import publishing
    from serving.exports import labels

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserError(f"--out {out}: labels are written as Parquet; name it *.parquet")
    data = labels(_connect(args.db), args.since)
    with publishing(out) as (temp,):
        temp.write_bytes(data)
    frame = pl.read_parquet(out)
    counts = {name: dict(frame[name].value_counts().sort(name).iter_rows())
              for name in ("platform", "kind")}
    print(f"knockoff labels: {frame.height} decided labels written to {out}", file=sys.stderr)
    print_summary({"out": str(out), "labels": frame.height,
                   "counterfeit": int(frame["is_counterfeit"].sum()),
                   "genuine": int((~frame["is_counterfeit"]).sum()),
                   "by_platform": counts["platform"], "by_kind": counts["kind"],
                   "since": args.since.isoformat() if args.since else None})


def _interval(found: Interval | None) -> str:
    if found is None:
        return "n/a"
    return f"{found.estimate:.3f} [{found.low:.3f}, {found.high:.3f}]"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report_table(estimates: list[FlagEstimate]) -> str:
    """The estimates for people: one line per model version."""
    head = ("model_version", "flagged", "unflagged", "decided flag/audit",
            "precision [95% CI]", "recall [95% CI]", "naive precision/recall")
    rows = [(e.model_version, str(e.flagged), str(e.unflagged),
             f"{e.decided_flagged}/{e.decided_audit}", _interval(e.precision),
             _interval(e.recall), f"{_share(e.naive_precision)}/{_share(e.naive_recall)}")
            for e in estimates]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in (head, *rows))


def cmd_report(args: argparse.Namespace) -> None:
    from serving.estimates import flag_estimates

    estimates = flag_estimates(_connect(args.db))
    if estimates:
        print(report_table(estimates), file=sys.stderr)
        print("precision and recall of all scored listings, weighted by how each batch's "
              "flagged and unflagged listings were sampled for decisions; naive = decided "
              "cases taken as they are", file=sys.stderr)
    else:
        print("knockoff report: no scored batches yet", file=sys.stderr)
    models: list[dict[str, Any]] = [e.as_dict() for e in estimates]
    print_summary({"models": models})


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (default "
                        "$KNOCKOFF_DATABASE_URL, else sqlite:///var/knockoff.db)")


def add_label_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `labels export` and `report` on the `knockoff` parser's subparsers."""
    p = sub.add_parser("labels", help="officers' decisions as training labels",
                       description="Officers' decisions as training labels.",
                       epilog="example:\n  knockoff labels export --out labels.parquet",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = add_command(actions, "export", cmd_labels, "write officers' decided labels as Parquet "
                    "(listing_id, platform, is_counterfeit, decided_at, model_version, kind)",
                    "knockoff labels export --since 2026-11-01 --out labels.parquet")
    q.add_argument("--out", required=True, metavar="PATH", help="the labels file (.parquet)")
    q.add_argument("--since", type=_date, metavar="DATE",
                   help="only decisions made at or after DATE (ISO, UTC when no zone)")
    _db_option(q)

    p = add_command(sub, "report", cmd_report, "estimated flag precision and recall per model "
                    "version, with intervals", "knockoff report --db sqlite:///var/knockoff.db")
    _db_option(p)
