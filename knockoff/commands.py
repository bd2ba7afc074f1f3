"""The data subcommands: generate, features, train, tune, score, drift and demo (the service's
are in service_commands.py). Each pair is a `cmd_*` function (parse nothing, call one library
function, print its summary) and an `_add_*` function declaring its options, description and
example."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.config import TrainConfig


class UserError(Exception):
    """A mistake in the input or the options: one clear message, exit status 2."""


def _json_safe(value: object) -> object:
    """NaN (a metric undefined for the data, e.g. too few rows a day) becomes null: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def print_summary(summary: dict[str, object]) -> None:
    print(json.dumps(_json_safe(summary), default=str, allow_nan=False), flush=True)


def _check_format(out: str, fmt: str | None) -> None:
    """Refuse `--out x.parquet --format csv`: a suffix that contradicts --format."""
    from features.catalog import CatalogError
    from features.outputs import output_format

    if fmt is None:
        return
    try:
        implied = output_format(out)
    except CatalogError:  # a suffix that says nothing (e.g. .out): --format decides
        return
    if implied != fmt:
        raise UserError(f"--out {out} is a .{implied} name but --format is {fmt}: "
                        f"change one so they agree")


# ------------------------------------------------------------------ subcommands


def cmd_generate(args: argparse.Namespace) -> None:
    from synthetic.generate import generate_catalog

    try:
        summary = generate_catalog(
            Path(args.out), args.listings, args.seed, start=args.start.date(), days=args.days,
            drift=args.drift, id_prefix=args.id_prefix, progress=sys.stderr.isatty(),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print_summary(summary)


def cmd_features(args: argparse.Namespace) -> None:
    _check_format(args.out, args.format)
    from features.table import feature_table

    print(f"knockoff features: validating {args.input} and building its features "
          "(streaming; a few seconds per million listings) ...", file=sys.stderr, flush=True)
    if _engine(args) == "dask":
        from features.cluster import feature_table_dask

        summary = feature_table_dask(args.input, args.out, scheduler=args.scheduler,
                                     state_dir=args.state, partition_rows=args.partition_rows)
    else:
        summary = feature_table(args.input, args.out, state_dir=args.state, fmt=args.format)
    print(f"knockoff features: {summary['features']} rows -> {summary['out']}, "
          f"{summary['rejected']} rejected -> {summary['rejects']}", file=sys.stderr)
    print_summary(summary)


def _config(path: str | None) -> TrainConfig:
    from training.config import TrainConfig

    try:
        return TrainConfig.from_toml(path) if path else TrainConfig()
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _engine(args: argparse.Namespace) -> str:
    """The engine asked for, its options checked: --scheduler and --partition-rows only with
    --engine dask, which writes Parquet part files only."""
    if args.engine != "dask":
        if args.scheduler or args.partition_rows:
            raise UserError("--scheduler and --partition-rows need --engine dask")
    elif getattr(args, "format", None) == "csv":
        raise UserError("--engine dask writes a folder of Parquet parts; --format csv is "
                        "for --engine local")
    return str(args.engine)


def _train(args: argparse.Namespace, config: TrainConfig) -> Any:
    """`training.train.train` with LightGBM fitted locally or on the Dask cluster."""
    from training.train import train

    options = {"valid_from": args.valid_from, "holdout": args.holdout,
               "progress": sys.stderr.isatty(), "decided": _labels(args)}
    if _engine(args) == "local":
        return train(args.catalog, config, **options)
    from features.cluster import dask_client
    from training.distributed import dask_fit_step

    with dask_client(args.scheduler) as client:
        return train(args.catalog, config, fit_step=dask_fit_step(client), engine="dask",
                     **options)


def _labels(args: argparse.Namespace) -> Any:
    """--labels read and checked before training starts (None without it)."""
    from training.labels import LabelsError, read_labels

    if args.labels is None:
        if args.platform is not None:
            raise UserError("--platform says whose rows --labels joins; give --labels too")
        return None
    try:
        return read_labels(args.labels, args.platform)
    except LabelsError as exc:
        raise UserError(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> None:
    from training.split import SplitError
    from training.train import TrainError

    config = _config(args.config)
    if args.max_reject_share is not None:
        try:
            config = config.replace(max_reject_share=args.max_reject_share)
        except ValueError as exc:
            raise UserError(f"--max-reject-share: {exc}") from None
    try:
        result = _train(args, config)
    except (SplitError, TrainError) as exc:
        raise UserError(str(exc)) from None
    print(f"knockoff train: {args.catalog}: {result.input.describe()}", file=sys.stderr)
    joined = result.input.labels
    if joined is not None:
        print(f"knockoff train: {args.labels}: {joined.describe()}", file=sys.stderr)
    print(
        f"knockoff train: {result.model_version} "
        + ("promoted to champion" if result.promoted else "not promoted")
        + (f" (champion before: {result.champion_before})" if result.champion_before else ""),
        file=sys.stderr,
    )
    print_summary({**result.summary(), **(joined.summary() if joined else {})})


def cmd_tune(args: argparse.Namespace) -> None:
    from training.split import SplitError
    from training.train import TrainError
    from training.tune import tune

    try:
        summary = tune(args.catalog, args.trials, args.out, _config(args.config),
                       valid_from=args.valid_from, progress=sys.stderr.isatty())
    except (SplitError, TrainError) as exc:
        raise UserError(str(exc)) from None
    print(f"knockoff tune: best config written to {args.out}; train with "
          f"`knockoff train --catalog {args.catalog} --config {args.out}`", file=sys.stderr)
    print_summary(summary)


def cmd_score(args: argparse.Namespace) -> None:
    _check_format(args.out, args.format)
    from serving.scorer import ModelLoadError, score_catalog
    from serving.tracking import DEFAULT_MODEL

    model = args.model or DEFAULT_MODEL
    try:
        if _engine(args) == "dask":
            from serving.distributed import score_catalog_dask

            summary = score_catalog_dask(args.input, args.out, model=model,
                                         scheduler=args.scheduler, threads=args.threads,
                                         partition_rows=args.partition_rows)
        else:
            summary = score_catalog(args.input, args.out, model=model, fmt=args.format,
                                    chunk_rows=args.chunk_rows, threads=args.threads,
                                    progress=sys.stderr.isatty())
    except ModelLoadError as exc:
        raise UserError(f"cannot load model {model}: {exc}") from None
    absent = [c for c in summary["absent_columns"] if c != "is_counterfeit"]  # type: ignore[attr-defined]
    if absent:
        print(f"knockoff score: warning: optional columns absent: {', '.join(absent)}; listings "
              "are scored without them, but flags are less precise", file=sys.stderr)
    print(f"knockoff score: {summary['scored']} scored, {summary['flagged']} flagged, "
          f"{summary['rejected']} rejected -> {summary['out']} (rejects: {summary['rejects']})",
          file=sys.stderr)
    print_summary(summary)


def cmd_drift(args: argparse.Namespace) -> None:
    from serving import tracking
    from serving.drift import DriftError, catalog_drift
    from serving.scorer import ModelLoadError, Scorer

    model = args.model or tracking.DEFAULT_MODEL
    try:
        scorer = Scorer.load(model, threads=args.threads)
        report = catalog_drift(args.input, scorer, threshold=args.threshold)
    except ModelLoadError as exc:
        raise UserError(f"cannot load model {model}: {exc}") from None
    except DriftError as exc:
        raise UserError(str(exc)) from None
    summary = {**report.summary(), "model_version": scorer.model_version}
    if args.log:
        summary["drift_run_id"] = tracking.log_drift(
            report.metrics(), {"batch": str(args.input), "threshold": args.threshold},
            f"drift-{Path(args.input).stem}-{datetime.now(UTC):%Y%m%d-%H%M}",
            scorer.model_version)
    if report.warning:
        print(f"knockoff drift: warning: {args.input} has drifted from {scorer.model_version}'s "
              f"reference window (PSI > {args.threshold}, flagged listings > "
              f"{report.flagged_threshold:g}): {report.describe()}; drifted "
              f"features: {', '.join(report.drifted) or 'none'}", file=sys.stderr)
    else:
        print(f"knockoff drift: {args.input}: no warning (scores' PSI at most {args.threshold}, "
              f"{report.flagged_threshold:g} among the flagged listings); {report.describe()}",
              file=sys.stderr)
    print_summary(summary)


def cmd_demo(args: argparse.Namespace) -> None:
    from knockoff.demo import run_demo

    print_summary(run_demo(args.out, args.listings, args.batch, progress=sys.stderr.isatty(),
                           serve=args.serve))


# ------------------------------------------------------------------ options


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r} (e.g. 2026-05-01)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _count(text: str) -> int:
    """A whole number >= 1 (rows, trials, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "dask"], default="local",
                   help="local: this machine (default); dask: the partitions on a Dask cluster "
                   "(--out is then a folder of part-*.parquet, rejects in OUT.rejects/)")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. "
                   "tcp://10.0.0.5:8786 (default with --engine dask: 2 local worker processes)")
    p.add_argument("--partition-rows", type=_count, metavar="N", help="rows per Dask partition, "
                   "whole Parquet row groups (default 1000000)")


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], None], summary: str,
                example: str) -> argparse.ArgumentParser:
    """A subcommand whose help starts with `summary` and ends with `example`."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=f"{summary}.", epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def _add_generate(sub: Any) -> None:
    p = add_command(sub, "generate", cmd_generate, "write a synthetic labelled catalog (with the "
                    "ground truth)", "knockoff generate --listings 200000 --seed 7 --out a.parquet")
    p.add_argument("--listings", type=_count, default=1_000_000, metavar="N",
                   help="number of listings (default 1000000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--start", type=_date, default=datetime(2026, 1, 1, tzinfo=UTC),
                   metavar="DATE", help="first day of the time span (default 2026-01-01)")
    p.add_argument("--days", type=int, default=180, metavar="D",
                   help="time span in days, at least 31 (default 180)")
    p.add_argument("--drift", type=float, default=1.0, metavar="X",
                   help="strength of late-period drift: new rings, newly targeted brands "
                   "(default 1, 0 = none)")
    p.add_argument("--id-prefix", default="", metavar="P",
                   help="put P before every listing and seller id, so catalogs drawn with "
                   "different seeds can share a folder (default: none, ids L000000000, S0000000)")
    p.add_argument("--out", required=True, metavar="PATH", help="output .parquet, .csv or .jsonl")


def _add_features(sub: Any) -> None:
    p = add_command(sub, "features", cmd_features, "validate a catalog and write its feature table",
                    "knockoff features catalog.parquet --out features.parquet --state state/")
    _add_engine(p)
    p.add_argument("input", metavar="INPUT", help="catalog file or folder (.parquet, .csv, .jsonl)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output .parquet or .csv; rejects go next to it")
    p.add_argument("--state", metavar="DIR",
                   help="feature state folder: used if it exists, else fitted on INPUT and saved")
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="output format (default: from the --out suffix)")


def _add_train(sub: Any) -> None:
    p = add_command(sub, "train", cmd_train, "train, evaluate, track in MLflow, register, export "
                    "ONNX", "knockoff train --catalog catalog.parquet --holdout later.parquet")
    _add_engine(p)
    p.add_argument("--catalog", required=True, metavar="PATH",
                   help="labelled catalog file or folder")
    p.add_argument("--valid-from", type=_date, metavar="DATE", help="first day of the validation "
                   "window (default: the newest listing minus valid_days)")
    p.add_argument("--config", metavar="TOML", help="train.toml (defaults for anything not set)")
    p.add_argument("--holdout", metavar="PATH", help="another labelled catalog to evaluate model "
                   "and baselines on as well (e.g. a later one)")
    p.add_argument("--max-reject-share", type=float, metavar="SHARE",
                   help="refuse to train when validation rejects more than this share of the "
                   "catalog's rows (default 0.05, i.e. 5%%; max_reject_share in train.toml)")
    p.add_argument("--labels", metavar="PATH", help="officers' decisions (`knockoff labels "
                   "export`): they override or fill is_counterfeit, joined on listing_id")
    p.add_argument("--platform", metavar="NAME", help="the platform the catalog's rows belong "
                   "to (needed when --labels holds several platforms' decisions)")


def _add_tune(sub: Any) -> None:
    p = add_command(sub, "tune", cmd_tune, "Optuna search over LightGBM parameters (nested MLflow "
                    "runs)", "knockoff tune --catalog catalog.parquet --trials 20 --out best.toml")
    p.add_argument("--catalog", required=True, metavar="PATH",
                   help="labelled catalog file or folder")
    p.add_argument("--trials", type=_count, default=20, metavar="N",
                   help="number of trials (default 20)")
    p.add_argument("--out", default="best.toml", metavar="PATH",
                   help="where to write the best config (default best.toml)")
    p.add_argument("--valid-from", type=_date, metavar="DATE",
                   help="the validation window kept out of tuning")
    p.add_argument("--config", metavar="TOML", help="base train.toml (the non-searched settings)")


def _add_score(sub: Any) -> None:
    p = add_command(sub, "score", cmd_score, "score a catalog batch with the ONNX model",
                    "knockoff score batch.parquet --out scores.parquet --model models:/knockoff/3")
    _add_engine(p)
    p.add_argument("input", metavar="INPUT", help="catalog file or folder (.parquet, .csv, .jsonl)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="scores .parquet or .csv; rejects go next to it")
    p.add_argument("--model", metavar="REF", help="bundle folder, runs:/RUN/bundle or "
                   "models:/NAME@ALIAS or models:/NAME/VERSION (default: the registered champion)")
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="output format (default: from the --out suffix)")
    p.add_argument("--chunk-rows", type=_count, default=100_000, metavar="N",
                   help="rows per streaming batch (default 100000)")
    p.add_argument("--threads", type=_count, default=2, metavar="N",
                   help="onnxruntime threads (default 2)")


def _share(text: str) -> float:
    """A positive number (a PSI threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _add_drift(sub: Any) -> None:
    p = add_command(sub, "drift", cmd_drift, "population stability (PSI) of a batch's features "
                    "and scores against the reference its model was trained with",
                    "knockoff drift batch.parquet --model models:/knockoff/3 --log")
    p.add_argument("input", metavar="INPUT", help="catalog file or folder (.parquet, .csv, .jsonl)")
    p.add_argument("--model", metavar="REF", help="bundle folder, runs:/RUN/bundle or "
                   "models:/NAME@ALIAS or models:/NAME/VERSION (default: the registered champion)")
    p.add_argument("--threshold", type=_share, default=0.2, metavar="PSI",
                   help="warn when the scores' PSI over all listings is above this, or half of "
                   "it over the flagged listings (from 200 of them; default 0.2)")
    p.add_argument("--log", action="store_true", help="log the measurement to MLflow (a run of "
                   "the knockoff-drift experiment, and tags on the model version)")
    p.add_argument("--threads", type=_count, default=2, metavar="N",
                   help="onnxruntime threads (default 2)")


def _add_demo(sub: Any) -> None:
    p = add_command(sub, "demo", cmd_demo, "the whole loop on synthetic data: generate, train, "
                    "score through the service, show flags with reasons",
                    "knockoff demo --out var/demo --listings 200000")
    p.add_argument("--out", default="var/demo", metavar="DIR",
                   help="working folder (default var/demo)")
    p.add_argument("--listings", type=_count, default=1_000_000, metavar="N",
                   help="training catalog size (default 1000000)")
    p.add_argument("--batch", type=_count, default=200_000, metavar="N",
                   help="size of the later batch to score (default 200000)")
    p.add_argument("--serve", action="store_true",
                   help="afterwards keep the officers' console open on 127.0.0.1 until Ctrl-C")


def add_commands(sub: Any) -> None:
    """Declare the data subcommands, in the order `knockoff --help` lists them."""
    for add in (_add_generate, _add_features, _add_train, _add_tune, _add_score, _add_drift,
                _add_demo):
        add(sub)
