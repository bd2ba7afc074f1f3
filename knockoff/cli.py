"""The `knockoff` command line: thin subcommands over features/, training/ and serving/."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the input or the options: one clear message, exit status 2."""


def _quiet_environment() -> None:
    """No telemetry from the libraries we call, and threads that yield when idle."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _json_safe(value: object) -> object:
    """NaN (a metric undefined for the data, e.g. too few rows a day) becomes null: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_summary(summary: dict[str, object]) -> None:
    print(json.dumps(_json_safe(summary), default=str, allow_nan=False))


def cmd_generate(args: argparse.Namespace) -> None:
    from synthetic.generate import generate_catalog

    try:
        summary = generate_catalog(
            Path(args.out), args.listings, args.seed, start=args.start.date(), days=args.days,
            drift=args.drift, progress=sys.stderr.isatty(),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _print_summary(summary)


def cmd_features(args: argparse.Namespace) -> None:
    from features.table import feature_table

    print(f"knockoff features: validating {args.input} and building its features "
          "(streaming; a few seconds per million listings) ...", file=sys.stderr, flush=True)
    summary = feature_table(args.input, args.out, state_dir=args.state, fmt=args.format)
    print(f"knockoff features: {summary['features']} rows -> {summary['out']}, "
          f"{summary['rejected']} rejected -> {summary['rejects']}", file=sys.stderr)
    _print_summary(summary)


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r} (e.g. 2026-05-01)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _config(path: str | None) -> TrainConfig:
    from training.config import TrainConfig

    try:
        return TrainConfig.from_toml(path) if path else TrainConfig()
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> None:
    from training.split import SplitError
    from training.train import TrainError, train

    try:
        result = train(args.catalog, _config(args.config), valid_from=args.valid_from,
                       holdout=args.holdout, progress=sys.stderr.isatty())
    except (SplitError, TrainError) as exc:
        raise UserError(str(exc)) from None
    print(
        f"knockoff train: {result.model_version} "
        + ("promoted to champion" if result.promoted else "not promoted")
        + (f" (champion before: {result.champion_before})" if result.champion_before else ""),
        file=sys.stderr,
    )
    _print_summary(result.summary())


def cmd_tune(args: argparse.Namespace) -> None:
    from training.split import SplitError
    from training.train import TrainError
    from training.tune import tune

    if args.trials < 1:
        raise UserError("--trials must be at least 1")
    try:
        summary = tune(args.catalog, args.trials, args.out, _config(args.config),
                       valid_from=args.valid_from, progress=sys.stderr.isatty())
    except (SplitError, TrainError) as exc:
        raise UserError(str(exc)) from None
    print(f"knockoff tune: best config written to {args.out}; train with "
          f"`knockoff train --catalog {args.catalog} --config {args.out}`", file=sys.stderr)
    _print_summary(summary)


def cmd_score(args: argparse.Namespace) -> None:
    from serving.scorer import ModelLoadError, score_catalog

    if args.chunk_rows < 1 or args.threads < 1:
        raise UserError("--chunk-rows and --threads must be at least 1")
    try:
        summary = score_catalog(args.input, args.out, model=args.model, fmt=args.format,
                                chunk_rows=args.chunk_rows, threads=args.threads,
                                progress=sys.stderr.isatty())
    except ModelLoadError as exc:
        raise UserError(f"cannot load model {args.model}: {exc}") from None
    absent = [c for c in summary["absent_columns"] if c != "is_counterfeit"]  # type: ignore[attr-defined]
    if absent:
        print(f"knockoff score: warning: optional columns absent: {', '.join(absent)}; listings "
              "are scored without them, but flags are less precise", file=sys.stderr)
    print(f"knockoff score: {summary['scored']} scored, {summary['flagged']} flagged, "
          f"{summary['rejected']} rejected -> {summary['out']} (rejects: {summary['rejects']})",
          file=sys.stderr)
    _print_summary(summary)


def cmd_demo(args: argparse.Namespace) -> None:
    from knockoff.demo import run_demo

    _print_summary(run_demo(args.out, args.listings, args.batch, progress=sys.stderr.isatty()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knockoff", description="Counterfeit-listing detection for e-commerce catalogs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write a synthetic labelled catalog")
    p.add_argument("--listings", type=int, default=1_000_000, help="rows (default 1000000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=_date, default=datetime(2026, 1, 1, tzinfo=UTC),
                   help="first day of the time span (default 2026-01-01)")
    p.add_argument("--days", type=int, default=180, help="time span in days (default 180)")
    p.add_argument("--drift", type=float, default=1.0,
                   help="strength of late-period drift: new rings, newly targeted brands")
    p.add_argument("--out", required=True, help="output .parquet, .csv or .jsonl")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("features", help="validate a catalog and write its feature table")
    p.add_argument("input", help="catalog file or folder (.parquet, .csv, .jsonl)")
    p.add_argument("--out", required=True, help="output .parquet or .csv")
    p.add_argument("--state", help="feature state folder: used if it exists, else fitted+saved")
    p.add_argument("--format", choices=["parquet", "csv"])
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train, evaluate, track in MLflow, register, export ONNX")
    p.add_argument("--catalog", required=True, help="labelled catalog file or folder")
    p.add_argument("--valid-from", type=_date, help="first day of the validation window "
                   "(default: the newest listing minus valid_days)")
    p.add_argument("--config", help="train.toml (defaults for anything not set)")
    p.add_argument("--holdout", help="another labelled catalog to evaluate model and baselines "
                   "on as well (e.g. a later one)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="Optuna search over LightGBM parameters (nested MLflow runs)")
    p.add_argument("--catalog", required=True, help="labelled catalog file or folder")
    p.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    p.add_argument("--out", default="best.toml", help="where to write the best config")
    p.add_argument("--valid-from", type=_date, help="the validation window kept out of tuning")
    p.add_argument("--config", help="base train.toml (the non-searched settings)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("score", help="score a catalog batch with the ONNX model")
    p.add_argument("input", help="catalog file or folder (.parquet, .csv, .jsonl)")
    p.add_argument("--out", required=True, help="scores .parquet or .csv; rejects go next to it")
    p.add_argument("--model", default="models:/knockoff@champion",
                   help="bundle folder, runs:/RUN/bundle or models:/NAME@ALIAS|/VERSION "
                   "(default: the registered champion)")
    p.add_argument("--format", choices=["parquet", "csv"])
    p.add_argument("--chunk-rows", type=int, default=100_000,
                   help="rows per streaming batch (default 100000)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="the whole loop on synthetic data")
    p.add_argument("--out", default="var/demo", help="working folder (default var/demo)")
    p.add_argument("--listings", type=int, default=1_000_000, help="training catalog size")
    p.add_argument("--batch", type=int, default=200_000, help="size of the batch to score")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_environment()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    from features.catalog import CatalogError
    from features.pipeline import StateError

    try:
        func(args)
    except (UserError, CatalogError, StateError) as exc:
        print(f"knockoff {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a path that cannot be read or written: the user's to fix
        where = f" {exc.filename}" if exc.filename else ""
        print(f"knockoff {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"knockoff {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
