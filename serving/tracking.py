"""Every MLflow call in Knockoff lives here: runs, artifacts, the registry, bundle download.

Tracking URI: `MLFLOW_TRACKING_URI` if set, else SQLite under the project's `mlflow/` folder.
Artifacts of a SQLite store sit next to its database file (`artifacts/`). Telemetry is off.
Serving resolves and downloads bundles through it; training logs, registers and promotes.
Downloaded bundles are cached once per run and artifact path under `cache_dir()`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from serving.bundle import (
    FEATURE_SPEC,
    INPUT_NAME,
    MODEL_ONNX,
    OUTPUT_NAME,
    PARITY_SAMPLE,
    BundleError,
    seal,
    verify_digests,
)

PROJECT_MLFLOW_DIR = Path(__file__).resolve().parents[1] / "mlflow"
EXPERIMENT = "knockoff"
MODEL_NAME = "knockoff"
CHAMPION = "champion"
CHALLENGER = "challenger"  # the newest registered model, until it is promoted
DRIFT_EXPERIMENT = "knockoff-drift"
DEFAULT_MODEL = f"models:/{MODEL_NAME}@{CHAMPION}"  # what scoring uses unless told otherwise
BUNDLE_ARTIFACT = "bundle"
BUNDLE_TAG = "bundle_uri"
PIP_REQUIREMENTS = ["onnxruntime", "onnx", "numpy"]
INPUT_EXAMPLE_ROWS = 5
DESCRIPTION_LIMIT = 5000  # characters the registry stores in a model version's description


class RegistryError(LookupError):
    """A model reference that does not resolve (unknown name, alias or version)."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the run that produced it."""

    name: str
    version: str
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_MLFLOW_DIR / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go next to the database, not into the working directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def _mlflow() -> Any:
    """Import mlflow with telemetry off and point it at the store (called lazily, not at import)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow


def _experiment_id(mlflow: Any, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=_artifact_root(tracking_uri()))


@contextmanager
def start_run(
    run_name: str,
    params: Mapping[str, object],
    tags: Mapping[str, object],
    *,
    nested: bool = False,
    experiment: str = EXPERIMENT,
) -> Iterator[str]:
    """A run with the whole config as params and provenance as tags; yields the run id."""
    mlflow = _mlflow()
    experiment_id = _experiment_id(mlflow, experiment)
    with mlflow.start_run(
        run_name=run_name, experiment_id=experiment_id, nested=nested
    ) as active:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
        yield active.info.run_id


def log_metrics(metrics: Mapping[str, float], prefix: str = "") -> None:
    """Log finite metrics (NaN, e.g. a metric undefined for the window, is skipped)."""
    mlflow = _mlflow()
    finite = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v == v}
    mlflow.log_metrics(finite)


def log_curves(curves: Mapping[str, Sequence[float]]) -> None:
    """Per-iteration values (e.g. LightGBM's evaluation log) as metrics with their step, so the
    MLflow UI draws them as curves; NaN values are skipped."""
    mlflow = _mlflow()
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(name, float(v), now, step) for name, values in curves.items()
              for step, v in enumerate(values) if v == v]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    for start in range(0, len(points), 1000):  # the store's limit per batch
        client.log_batch(run_id, metrics=points[start : start + 1000])


def log_dataset(frame: pl.DataFrame, source: str | Path, name: str, digest: str,
                targets: str, context: str = "training") -> None:
    """`frame` (e.g. the training rows) as the run's MLflow dataset input: its schema, row
    count, `targets` column, `digest` (the catalog fingerprint) and the file it came from."""
    mlflow = _mlflow()
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # a local path fits two equivalent source kinds
        warnings.simplefilter("ignore", UserWarning)
        where = resolve_dataset_source(Path(source).resolve().as_uri())
    dataset = mlflow.data.from_polars(frame, source=where, targets=targets, name=name,
                                      digest=digest)
    mlflow.log_input(dataset, context=context)


def log_figure(figure: Any, name: str) -> None:
    _mlflow().log_figure(figure, name)


def log_text(text: str, name: str) -> None:
    _mlflow().log_text(text, name)


def log_table(frame: pl.DataFrame, name: str) -> None:
    """A small table as CSV (readable in the MLflow UI's artifact viewer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.write_csv(path)
        _mlflow().log_artifact(str(path))


def register_bundle(bundle_dir: Path, model_name: str, run_id: str) -> ModelRef:
    """Log the bundle's ONNX model as an MLflow model, the whole bundle as the run's `bundle/`
    artifact, and register a new version of `model_name` pointing at both."""
    mlflow = _mlflow()
    import onnx

    spec_path = bundle_dir / FEATURE_SPEC
    spec = json.loads(spec_path.read_text())
    example = _input_example(bundle_dir)
    info = mlflow.onnx.log_model(
        onnx.load(str(bundle_dir / MODEL_ONNX)),
        name="model",
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=PIP_REQUIREMENTS,
        signature=mlflow.models.infer_signature(
            example, {OUTPUT_NAME: np.zeros((1, 1), dtype=np.float32)}),
        input_example=example,
        metadata={"features": spec["features"], "threshold": spec["threshold"]},
    )
    version = mlflow.register_model(info.model_uri, model_name)
    ref = ModelRef(model_name, str(version.version), run_id)
    spec["model_version"] = ref.label
    spec["run_id"] = run_id
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    seal(bundle_dir)  # the spec changed: its digest with it
    mlflow.log_artifacts(str(bundle_dir), artifact_path=BUNDLE_ARTIFACT)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(
        model_name, ref.version, BUNDLE_TAG, f"runs:/{run_id}/{BUNDLE_ARTIFACT}"
    )
    client.set_registered_model_alias(model_name, CHALLENGER, ref.version)
    return ref


def _input_example(bundle_dir: Path) -> dict[str, np.ndarray]:
    """A few rows of the bundle's parity sample (validation rows, features in the model's
    order, NaN = missing) as the ONNX model's input example."""
    with np.load(bundle_dir / PARITY_SAMPLE, allow_pickle=False) as sample:
        return {INPUT_NAME: sample["X"][:INPUT_EXAMPLE_ROWS]}


def _alias_version(client: Any, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except _mlflow().exceptions.MlflowException:
        return None


def champion(model_name: str) -> ModelRef | None:
    """The version holding the champion alias, or None when there is none yet."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    return ModelRef(model_name, str(version.version), version.run_id)


def record_decision(ref: ModelRef, promoted: bool, reason: str, card: str) -> None:
    """The promotion decision in the registry and the run: `champion` moves to the version when
    promoted (and `challenger` leaves it), the reason as a version and run tag, the model card
    as the version's description (cut to what the registry stores, pointing at the full card)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    if promoted:
        client.set_registered_model_alias(ref.name, CHAMPION, ref.version)
        if _alias_version(client, ref.name, CHALLENGER) == ref.version:
            client.delete_registered_model_alias(ref.name, CHALLENGER)
    for key, value in (("promoted", str(promoted).lower()), ("promotion_reason", reason)):
        client.set_model_version_tag(ref.name, ref.version, key, value)
    if len(card) > DESCRIPTION_LIMIT:
        more = f"\n\n(cut here; the whole card: runs:/{ref.run_id}/model_card.md)"
        card = card[: DESCRIPTION_LIMIT - len(more)] + more
    client.update_model_version(ref.name, ref.version, description=card)
    mlflow.set_tags({"promoted": str(promoted).lower(), "promotion_reason": reason})


def set_run_tags(tags: Mapping[str, object]) -> None:
    _mlflow().set_tags({k: str(v) for k, v in tags.items()})


def resolve(ref: str) -> ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` to a registered version."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    body = ref.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = body.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except (ValueError, mlflow.exceptions.MlflowException) as exc:
        if body == f"{MODEL_NAME}@{CHAMPION}":
            raise RegistryError(
                f"{ref}: there is no champion model yet in {tracking_uri()}: a trained model "
                "becomes champion only when it beats the logistic baseline (and the current "
                "champion); train one with `knockoff train`, or name a version with --model "
                f"models:/{MODEL_NAME}/N"
            ) from None
        raise RegistryError(
            f"{ref}: no such registered model version in {tracking_uri()} "
            f"({str(exc).splitlines()[0]}); train one with `knockoff train` first"
        ) from None
    return ModelRef(name, str(version.version), version.run_id)


def bundle_location(run_id: str) -> str:
    """Where a run's bundle lives: a local folder for a local store, else its artifact URI."""
    uri = f"{_mlflow().get_run(run_id).info.artifact_uri}/{BUNDLE_ARTIFACT}"
    return uri.removeprefix("file://")


_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
_PATH_PART = re.compile(r"[A-Za-z0-9_.-]+")


def _run_artifact(ref: str) -> tuple[str, str]:
    """`runs:/RUN/PATH` as (run id, artifact path), refusing anything that could leave the
    run's artifacts (`..`, `.`, empty parts, absolute paths, escapes, odd characters)."""
    run_id, _, path = ref.removeprefix("runs:/").partition("/")
    parts = path.split("/")
    if not _RUN_ID.fullmatch(run_id) or not all(
        _PATH_PART.fullmatch(p) and p not in (".", "..") for p in parts
    ):
        raise RegistryError(
            f"{ref}: not a reference inside a run's artifacts; expected runs:/RUN_ID/PATH with "
            "plain names (letters, digits, '_', '-', '.'; no '..')"
        )
    return run_id, path


def cache_dir() -> Path:
    """Where downloaded bundles are kept: `$KNOCKOFF_CACHE_DIR`, else
    `$XDG_CACHE_HOME/knockoff`, else `~/.cache/knockoff`."""
    explicit = os.environ.get("KNOCKOFF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "knockoff"


def _cached_download(mlflow: Any, ref: str, run_id: str, path: str) -> Path:
    """The run's artifact folder, downloaded once: into a temporary folder next to the cache
    entry, then renamed into place, so a half-downloaded entry is never seen. An entry whose
    files no longer match their digests is downloaded again."""
    entry = cache_dir() / "bundles" / run_id / path
    if entry.is_dir():
        try:
            verify_digests(entry)
            return entry
        except BundleError:  # damaged in the cache: set it aside, download it again
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=entry.parent))
            entry.rename(stale / "entry")
            shutil.rmtree(stale, ignore_errors=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=entry.parent))
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(tmp))
        if not Path(local).is_dir():
            raise RegistryError(f"{ref}: not a bundle folder in the run's artifacts")
        try:
            Path(local).rename(entry)
        except OSError:  # another process published the same entry first: use theirs
            if not entry.is_dir():
                raise
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"{ref}: bundle not found ({str(exc).splitlines()[0]})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def download_bundle(ref: str) -> tuple[Path, ModelRef | None]:
    """A local bundle folder for a model reference: a folder path, `runs:/RUN/bundle`, or a
    registered version (`models:/knockoff@champion`, `models:/knockoff/3`). Bundles from the
    store are downloaded once per run and cached (`cache_dir()`)."""
    if Path(ref).is_dir():
        return Path(ref), None
    model: ModelRef | None = None
    if ref.startswith("models:/"):
        model = resolve(ref)
        run_id, path = model.run_id, BUNDLE_ARTIFACT
    elif ref.startswith("runs:/"):
        run_id, path = _run_artifact(ref)
    else:
        raise RegistryError(
            f"{ref}: not a bundle folder, models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ URI"
        )
    return _cached_download(_mlflow(), ref, run_id, path), model


def log_drift(metrics: Mapping[str, float], tags: Mapping[str, object], run_name: str,
              model_version: str) -> str:
    """A batch's drift as a run of the `knockoff-drift` experiment tagged with the model
    version and, for a registered version (`knockoff/3`), as tags on that version (the latest
    measurement and its run)."""
    with start_run(run_name, {}, {**tags, "model_version": model_version},
                   experiment=DRIFT_EXPERIMENT) as run_id:
        log_metrics(metrics)
    _tag_version(model_version, metrics, run_id)
    return run_id


def log_service_drift(model_version: str, platform: str, batch_id: str,
                      metrics: Mapping[str, float]) -> str:
    """The drift of a batch the service scored, appended to one run per model version in the
    `knockoff-drift` experiment (`service {version}`, tag `source=service`): each metric a
    history whose step counts the version's batches, so MLflow plots drift over time; the
    scores' PSIs also per platform (`score_psi/<platform>`). The version's drift tags follow
    the latest batch. Returns the run id."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    experiment_id = _experiment_id(mlflow, DRIFT_EXPERIMENT)
    found = client.search_runs(
        [experiment_id], max_results=1,
        filter_string=f"tags.source = 'service' and tags.model_version = '{model_version}'")
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(experiment_id, run_name=f"service {model_version}",
                                tags={"source": "service", "model_version": model_version})
        run_id = run.info.run_id
        client.set_terminated(run_id)  # no process holds it open; batches append to it
    step = len(client.get_metric_history(run_id, "score_psi"))
    values = dict(metrics)
    for key in ("score_psi", "flagged_score_psi"):
        if key in metrics:
            values[f"{key}/{platform}"] = metrics[key]
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[
        mlflow.entities.Metric(k, float(v), stamp, step) for k, v in values.items() if v == v])
    client.set_tag(run_id, "last_batch", batch_id)
    _tag_version(model_version, metrics, run_id)
    return run_id


def _tag_version(model_version: str, metrics: Mapping[str, float], run_id: str) -> None:
    """The latest drift measurement as tags on a registered version (`knockoff/3`)."""
    name, _, version = model_version.rpartition("/")
    if name and version.isdigit():
        client = _mlflow().MlflowClient()
        for key in ("score_psi", "flagged_score_psi", "max_feature_psi"):
            if key in metrics:
                client.set_model_version_tag(name, version, f"drift_{key}",
                                             f"{metrics[key]:.4f}")
        client.set_model_version_tag(name, version, "drift_warning",
                                     str(bool(metrics["warning"])).lower())
        client.set_model_version_tag(name, version, "drift_run", run_id)
