"""Scoring benchmark: inference engines, model size against quality, and the end-to-end scorer.

Sections (every ratio is measured within the same run, with interleaved repetitions):

1. inference  On one float32 matrix of real features (`--infer-rows` rows of the features of
              `--infer-catalog`, built through the bundle's feature state once and cached in
              `--data`), LightGBM `predict` vs onnxruntime (`serving.bundle.onnx_session` +
              `onnx_predict`, the code the scorer runs) vs lleaves (compiled with llvmlite,
              cached in `--data`), at 1 and 2 threads, for (a) a reference model of 300 trees x
              63 leaves trained without early stopping and (b) the shipped model (`--bundle`,
              default `knockoff train` at the current TrainConfig on `--train-catalog`). Then
              the onnxruntime variants that were tried (session options, chunk sizes, Python
              threads over single-threaded runs, outputs fetched, a TreeEnsembleRegressor graph)
              on the shipped model, each checked against LightGBM before timing.
2. size       A (trees, leaves) grid trained with fixed rounds (no early stopping) on the
              prepared `--train-catalog` (features cached in `--data`): validation average
              precision on the labelled validation rows (the training metric) and against the
              generator's ground truth on every validation row, onnxruntime seconds per 1M rows at
              2 threads on the section-1 matrix, and the seconds of the scorer's reason
              contributions (`serving.explain.PathContributions`) per 10k rows. Names the
              smallest model within `--ap-tolerance` AP of the best.
3. e2e        `serving.scorer.score_catalog` on a generated catalog of `--rows` rows (seed 0,
              `catalog_<rows>.parquet` in `--data`, shared with bench/features.py), in a fresh
              subprocess so peak RSS (VmHWM) is the run's own. The scorer's pieces are wrapped
              (in that subprocess only) to split its time into model load, read/validation +
              whole-batch aggregates, waiting for the next feature chunk, inference, reasons
              (decision-path contributions + words), assembling the chunk and writing. Then
              peak RSS at every `--memory-sizes` catalog.

The machine is shared: thread counts are explicit everywhere, onnxruntime never spins, times are
`time.perf_counter` (min and median over `--repeats`) next to process CPU seconds, and the load
average is recorded around every timed block.

Run from the repo root:

    OMP_WAIT_POLICY=PASSIVE ORT_DISABLE_TELEMETRY=1 MLFLOW_DISABLE_TELEMETRY=true \
        POLARS_MAX_THREADS=2 .venv/bin/python bench/score.py [--quick] [--rows N] \
        [--memory-sizes 10000000,40000000] [--data bench/out] [--sections inference,size,e2e]

`--quick` shrinks every section (200k-row matrix, 2x2 grid, 1M-row end to end). The script prints
a table per section, then one JSON line with every figure as the last line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# bench/ holds a script called features.py: the repo root must come first so that `features` is
# the project's package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)]
for _key, _value in {
    "OMP_WAIT_POLICY": "PASSIVE",
    "ORT_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "POLARS_MAX_THREADS": "2",
}.items():
    os.environ.setdefault(_key, _value)

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxmltools  # noqa: E402
import onnxruntime as ort  # noqa: E402
import polars as pl  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from onnxmltools.convert.common.data_types import FloatTensorType  # noqa: E402

from serving.bundle import INPUT_NAME, onnx_predict, onnx_session  # noqa: E402
from training.export import (  # noqa: E402
    TARGET_OPSET,
    booster_to_onnx,
    classifier_to_regressor,
    snap_thresholds,
)

GIB = 1024**3
SEED = 0  # generated catalogs: the same seed and file names as bench/features.py
REFERENCE = (300, 63)  # trees, leaves of the section-1 reference model
CONTRIB_ROWS = 10_000
CHECK_ROWS = 100_000  # rows on which every engine and variant is checked against LightGBM
BYTES_PER_ROW = 100  # generated Parquet catalog, measured: 975 MB for 10M rows
LABEL = "is_counterfeit"
RESULTS: dict[str, Any] = {}  # every figure of this run (checkpointed, printed last as JSON)
TRUTH = "true_is_counterfeit"


# ------------------------------------------------------------------ small helpers


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def say(text: str = "") -> None:
    print(text, flush=True)


def peak_rss_bytes() -> int:
    """This process's own peak resident set size (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as an aligned text table (floats to 3 significant decimals)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    say(f"\n== {title}")
    say("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    say("  ".join("-" * w for w in widths))
    for r in cells:
        say("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def file_key(*paths: Path, training: bool = True) -> str:
    """A short key over files' names, sizes and mtimes, and the source of the code that
    computes features (and, with `training`, trains and exports): a cache never outlives a change
    to that code."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for source in sorted(code_files(training)):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def code_files(training: bool = True) -> list[Path]:
    """Sources whose changes invalidate cached features (and prepared tables, models, bundles)."""
    names = ("train.py", "config.py", "split.py", "evaluate.py", "export.py") if training else ()
    return [*(ROOT / "features").glob("*.py"), *(ROOT / "training" / n for n in names)]


@dataclass
class Timing:
    """Repeated timings of one callable: wall seconds and process CPU seconds."""

    wall: list[float]
    cpu: list[float]

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def median(self) -> float:
        return float(np.median(self.wall))

    def as_dict(self) -> dict[str, Any]:
        return {"min": round(self.best, 4), "median": round(self.median, 4),
                "cpu_min": round(min(self.cpu), 4), "runs": [round(w, 4) for w in self.wall]}


def measure(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Time every callable `repeats` times, round-robin, so load changes hit all of them alike."""
    out = {name: Timing([], []) for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            cpu, start = time.process_time(), time.perf_counter()
            call()
            out[name].wall.append(time.perf_counter() - start)
            out[name].cpu.append(time.process_time() - cpu)
    return out


def run_worker(kind: str, result: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run `--worker kind` in a fresh interpreter and return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = Path(fh.name) if result is None else result
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
               "--result", str(result_path)]
    for key, value in kwargs.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    try:
        subprocess.run(command, check=True, cwd=ROOT)
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


# ------------------------------------------------------------------ data: catalogs, features


def catalog_path(data: Path, listings: int) -> Path:
    return data / f"catalog_{listings}.parquet"


def ensure_catalog(data: Path, listings: int) -> tuple[Path, float | None]:
    """The seed-0 catalog of `listings` rows, generated (in a subprocess) unless present.
    Returns the path and the generation seconds (None when it already existed)."""
    path = catalog_path(data, listings)
    if path.exists():
        return path, None
    need = 1.3 * BYTES_PER_ROW * listings
    free = shutil.disk_usage(data).free
    if free < need:
        raise SystemExit(f"not enough disk for {path}: {free / GIB:.1f} GiB free, "
                         f"~{need / GIB:.1f} GiB needed")
    say(f"generating {path} ({listings:,} rows, ~{listings / 1e6 * 12:.0f} s) ...")
    result = run_worker("generate", catalog=path, listings=listings)
    return path, float(result["seconds"])


def shipped_bundle(data: Path, catalog: Path) -> Path:
    """The bundle `training.train.train(catalog, TrainConfig())` writes (the shipped model at
    the current config), trained once in a subprocess with its own MLflow store in `data` and
    copied to `data/score_bundle_<key>`."""
    folder = data / f"score_bundle_{file_key(catalog)}"
    if not (folder / "model.onnx").exists():
        say(f"training the current-config bundle on {catalog} (cached in {folder.name}) ...")
        result = run_worker("train", catalog=catalog, out=folder)
        say(f"trained in {result['seconds']:.0f} s: {result['trees']} trees")
    return folder


def feature_matrix(data: Path, catalog: Path, bundle: Path, rows: int) -> NDArray[np.float32]:
    """The first `rows` rows of `catalog`'s features (bundle's feature state, whole-batch
    aggregates over the catalog), C-contiguous float32, cached in `data`."""
    key = file_key(catalog, bundle / "feature_spec.json", training=False)
    cache = data / f"score_X_{catalog.stem}_{key}.npy"
    if not cache.exists():
        from features.aggregates import batch_aggregates
        from features.catalog import read_catalog
        from features.pipeline import build_features
        from features.registry import FEATURE_COLUMNS
        from serving.scorer import Scorer

        say(f"building features of {catalog} (cached as {cache.name}) ...")
        scorer = Scorer.load(str(bundle), threads=2)
        rows_lf = read_catalog(catalog, currency=scorer.state.currency).rows
        aggregates = batch_aggregates(rows_lf, scorer.state)
        frame = build_features(rows_lf, scorer.state, aggregates=aggregates).collect(
            engine="in-memory")
        X = np.ascontiguousarray(frame.select(FEATURE_COLUMNS).to_numpy(), dtype=np.float32)
        tmp = cache.with_suffix(".partial.npy")
        np.save(tmp, X)
        tmp.rename(cache)
    X = np.load(cache, mmap_mode="r")
    if X.shape[0] < rows:
        raise SystemExit(f"{catalog} has only {X.shape[0]} feature rows, {rows} asked")
    return np.ascontiguousarray(X[:rows])


@dataclass(frozen=True)
class Prepared:
    """Training and validation feature tables of the training catalog (as `knockoff train`)."""

    train: pl.DataFrame
    valid: pl.DataFrame
    key: str

    @property
    def valid_labelled(self) -> pl.DataFrame:
        return self.valid.filter(pl.col(LABEL).is_not_null())


def prepared(data: Path, catalog: Path) -> Prepared:
    """`training.train.prepare(catalog, TrainConfig(), None)`, its tables cached in `data`."""
    key = file_key(catalog)
    folder = data / f"score_prepared_{catalog.stem}_{key}"
    if not (folder / "valid.parquet").exists():
        from training.config import TrainConfig
        from training.train import prepare

        say(f"preparing {catalog} (cached in {folder.name}) ...")
        prep = prepare(catalog, TrainConfig(), None)
        folder.mkdir(parents=True, exist_ok=True)
        prep.train.write_parquet(folder / "train.parquet")
        prep.valid.write_parquet(folder / "valid.parquet")
    return Prepared(pl.read_parquet(folder / "train.parquet"),
                    pl.read_parquet(folder / "valid.parquet"), key)


# ------------------------------------------------------------------ models


def grid_model(
    data: Path, prep: Prepared, trees: int, leaves: int, max_depth: int
) -> tuple[Path, float | None]:
    """A LightGBM model with the training config's parameters but `trees` fixed rounds (no early
    stopping), `leaves` and `max_depth`; thresholds snapped to float32 as in a bundle. Cached in
    `data`; returns the model file and the fit seconds (None when cached)."""
    from training.config import TrainConfig
    from training.train import labels, lgb_params, matrix

    config = TrainConfig().replace(num_leaves=leaves, num_boost_round=trees, max_depth=max_depth)
    y = labels(prep.train)
    params = lgb_params(config, y)
    key = hashlib.sha256(f"{prep.key}{sorted(params.items())}{trees}".encode()).hexdigest()[:10]
    path = data / "score_models" / f"t{trees}_l{leaves}_d{max_depth}_{key}.txt"
    if path.exists():
        return path, None
    from features.registry import FEATURE_COLUMNS

    start = time.perf_counter()
    train_set = lgb.Dataset(matrix(prep.train), y, feature_name=list(FEATURE_COLUMNS))
    booster = lgb.train(params, train_set, num_boost_round=trees)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    snap_thresholds(booster).save_model(tmp)
    tmp.rename(path)
    return path, seconds


def model_shape(booster: lgb.Booster) -> dict[str, int]:
    dump = booster.dump_model()["tree_info"]
    return {"trees": len(dump), "leaves": int(sum(t["num_leaves"] for t in dump)),
            "max_leaves": int(max(t["num_leaves"] for t in dump))}


def lleaves_model(data: Path, model_file: Path) -> tuple[Any, float]:
    """A compiled lleaves model (object file cached in `data`) and the compile/load seconds."""
    import lleaves

    key = hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]
    cache = data / "score_lleaves" / f"{model_file.stem}_{key}.o"
    cache.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(cache))
    return model, time.perf_counter() - start


# ------------------------------------------------------------------ onnxruntime variants


def session(model: bytes, threads: int, spinning: str | None = "0",
            level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            parallel: bool = False) -> ort.InferenceSession:
    """A raw onnxruntime session with the given knobs (the variants, not the shipped path)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 2 if parallel else 1
    options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if parallel
                              else ort.ExecutionMode.ORT_SEQUENTIAL)
    options.graph_optimization_level = level
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def classifier_model(booster: lgb.Booster, n_features: int) -> onnx.ModelProto:
    """The TreeEnsembleClassifier graph onnxmltools writes (bundle format 1)."""
    model = onnxmltools.convert_lightgbm(
        booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET, zipmap=False)
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


def regressor_model(model: onnx.ModelProto) -> bytes:
    """The classifier rewritten as TreeEnsembleRegressor + Sigmoid, as the bundle ships it."""
    return classifier_to_regressor(model).SerializeToString()


def chunked_predict(
    sessions: Sequence[ort.InferenceSession], X: NDArray[np.float32], chunk_rows: int,
    all_outputs: bool = False,
) -> Callable[[], NDArray[np.float64]]:
    """P(fake) for X: chunks of `chunk_rows` rows; with several sessions (or one session listed
    several times) the chunks run concurrently from that many Python threads."""
    outputs = sessions[0].get_outputs()
    name = outputs[-1].name
    pool = ThreadPoolExecutor(len(sessions)) if len(sessions) > 1 else None

    def predict() -> NDArray[np.float64]:
        out = np.empty(len(X), dtype=np.float64)
        starts = list(range(0, len(X), chunk_rows))

        def work(k: int) -> None:
            for start in starts[k :: len(sessions)]:
                chunk = X[start : start + chunk_rows]
                result = sessions[k].run(None if all_outputs else [name], {INPUT_NAME: chunk})
                out[start : start + len(chunk)] = result[-1][:, -1]

        if pool is None:
            work(0)
        else:
            list(pool.map(work, range(len(sessions))))
        return out

    return predict


def old_session(model: bytes, threads: int) -> ort.InferenceSession:
    """onnx_session as it was before this benchmark (intra-op pool, default spinning)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ort_variants(
    model: onnx.ModelProto, X: NDArray[np.float32], threads: int
) -> dict[str, Callable[[], NDArray[np.float64]]]:
    """Every onnxruntime configuration tried, by name (all at `threads` CPU threads unless the
    name says 1)."""
    clf = model.SerializeToString()
    reg = regressor_model(model)
    big, t = 1_000_000, threads
    full = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    shared1 = session(clf, 1)
    return {
        f"old onnx_session: intra={t}, spin default, chunk 1M": chunked_predict(
            [old_session(clf, t)], X, big),
        f"intra={t} spin=1 chunk 1M": chunked_predict([session(clf, t, "1")], X, big),
        f"intra={t} spin=0 chunk 1M": chunked_predict([session(clf, t, "0")], X, big),
        f"intra={t} spin=0 chunk 256k": chunked_predict([session(clf, t)], X, 262_144),
        f"intra={t} spin=0 chunk 64k": chunked_predict([session(clf, t)], X, 65_536),
        f"intra={t} spin=0 chunk 1M, label+probabilities": chunked_predict(
            [session(clf, t)], X, big, all_outputs=True),
        f"intra={t} spin=0 chunk 1M, optimisation off": chunked_predict(
            [session(clf, t, level=off)], X, big),
        f"intra={t} spin=0 chunk 1M, ORT_PARALLEL inter=2": chunked_predict(
            [session(clf, t, level=full, parallel=True)], X, big),
        "intra=1 (1 thread) chunk 64k": chunked_predict([shared1], X, 65_536),
        f"{t} py threads x 1 shared intra=1 session, chunk 16k": chunked_predict(
            [shared1] * t, X, 16_384),
        f"{t} py threads x 1 shared intra=1 session, chunk 64k": chunked_predict(
            [shared1] * t, X, 65_536),
        f"{t} py threads x 1 shared intra=1 session, chunk 256k": chunked_predict(
            [shared1] * t, X, 262_144),
        f"{t} py threads x {t} intra=1 sessions, chunk 64k": chunked_predict(
            [session(clf, 1) for _ in range(t)], X, 65_536),
        f"regressor+sigmoid intra={t} spin=0 chunk 1M": chunked_predict(
            [session(reg, t)], X, big),
        f"regressor+sigmoid {t} py threads x intra=1, chunk 64k": chunked_predict(
            [session(reg, 1)] * t, X, 65_536),
        f"new onnx_session(m, {t}) + onnx_predict (shipped code)": functools.partial(
            onnx_predict, onnx_session(clf, t), X),
    }


# ------------------------------------------------------------------ section 1: inference


def engines(
    booster: lgb.Booster, model: onnx.ModelProto, compiled: Any, X: NDArray[np.float32],
    threads: Sequence[int],
) -> dict[str, Callable[[], object]]:
    """LightGBM, onnxruntime (old and shipped session code) and lleaves at each thread count."""
    clf = model.SerializeToString()
    calls: dict[str, Callable[[], object]] = {}
    for t in threads:
        calls[f"lightgbm t{t}"] = functools.partial(booster.predict, X, num_threads=t)
        calls[f"onnxruntime t{t}"] = functools.partial(onnx_predict, onnx_session(clf, t), X)
        calls[f"onnxruntime-old t{t}"] = chunked_predict([old_session(clf, t)], X, 1_000_000)
        calls[f"lleaves t{t}"] = functools.partial(compiled.predict, X, n_jobs=t)
    return calls


def check_agreement(
    calls: dict[str, Callable[[], object]], reference: NDArray[np.float64],
    tolerance: float = 1e-5,
) -> dict[str, float]:
    """max |P - LightGBM| of every engine (calls built on the rows `reference` scores); raises on
    a disagreement above tolerance so that no wrong variant is ever timed."""
    diffs = {}
    for name, call in calls.items():
        diff = float(np.abs(np.asarray(call(), dtype=np.float64) - reference).max())
        if diff > tolerance:
            raise SystemExit(f"{name}: max |diff| to LightGBM {diff:.3g} > {tolerance:g}")
        diffs[name] = diff
    return diffs


def section_inference(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    say(f"\n### 1. inference only  (load {load_average()})")
    X = feature_matrix(data, args.infer_catalog, args.bundle, args.infer_rows)
    prep = prepared(data, args.train_catalog)
    reference_file, fit_seconds = grid_model(data, prep, *REFERENCE, args.max_depth)
    models = {
        f"reference {REFERENCE[0]}x{REFERENCE[1]}": reference_file,
        "shipped": args.bundle / "model.txt",
    }
    threads = sorted({1, args.threads})
    result: dict[str, Any] = {"rows": len(X), "features": X.shape[1], "threads": threads,
                              "models": {}}
    rows_out = []
    for label, path in models.items():
        booster = lgb.Booster(model_file=str(path))
        shape = model_shape(booster)
        model = booster_to_onnx(booster, X.shape[1])
        compiled, compile_seconds = lleaves_model(data, path)
        X_check = X[:CHECK_ROWS]
        diffs = check_agreement(engines(booster, model, compiled, X_check, threads),
                                booster.predict(X_check, num_threads=args.threads))
        calls = engines(booster, model, compiled, X, threads)
        load_before = load_average()
        timings = measure(calls, args.repeats)
        load_after = load_average()
        figures: dict[str, Any] = {"model_file": str(path), **shape,
                                   "lleaves_compile_or_load_seconds": round(compile_seconds, 2),
                                   "load_before": load_before, "load_after": load_after,
                                   "engines": {}}
        for t in threads:
            lgb_s = timings[f"lightgbm t{t}"].best
            lgb_cpu = min(timings[f"lightgbm t{t}"].cpu)
            for engine in ("lightgbm", "onnxruntime", "onnxruntime-old", "lleaves"):
                name = f"{engine} t{t}"
                tm = timings[name]
                figures["engines"][name] = {**tm.as_dict(), "speed_vs_lightgbm":
                                            round(lgb_s / tm.best, 3),
                                            "cpu_vs_lightgbm": round(lgb_cpu / min(tm.cpu), 3),
                                            "max_abs_diff": diffs[name]}
                rows_out.append({"model": label, "engine": engine, "threads": t,
                                 "min s": tm.best, "median s": tm.median,
                                 "cpu s": min(tm.cpu), "x LightGBM": lgb_s / tm.best,
                                 "cpu x LightGBM": lgb_cpu / min(tm.cpu),
                                 "max|diff|": f"{diffs[name]:.1e}"})
        figures["onnxruntime_vs_lightgbm"] = {
            f"t{t}": figures["engines"][f"onnxruntime t{t}"]["speed_vs_lightgbm"] for t in threads}
        figures["lleaves_vs_lightgbm"] = {
            f"t{t}": figures["engines"][f"lleaves t{t}"]["speed_vs_lightgbm"] for t in threads}
        result["models"][label] = figures
        if fit_seconds is not None and label.startswith("reference"):
            figures["fit_seconds"] = round(fit_seconds, 2)
    table(f"inference on {len(X):,} x {X.shape[1]} float32 rows of {args.infer_catalog.name} "
          f"(x LightGBM = LightGBM min s / engine min s at the same threads, cpu x LightGBM "
          f"the same with process CPU seconds; "
          f"onnxruntime-old = onnx_session before this change)", rows_out,
          ["model", "engine", "threads", "min s", "median s", "cpu s", "x LightGBM",
           "cpu x LightGBM", "max|diff|"])
    for label, figures in result["models"].items():
        say(f"{label}: {figures['trees']} trees, {figures['leaves']} leaves; load "
            f"{figures['load_before']} -> {figures['load_after']}; onnxruntime/LightGBM "
            f"{figures['onnxruntime_vs_lightgbm']}, lleaves/LightGBM "
            f"{figures['lleaves_vs_lightgbm']}")

    # the variants tried, on the shipped model at args.threads
    booster = lgb.Booster(model_file=str(args.bundle / "model.txt"))
    model = classifier_model(booster, X.shape[1])
    X_check = X[:CHECK_ROWS]
    check_agreement(ort_variants(model, X_check, args.threads),
                    booster.predict(X_check, num_threads=args.threads))
    variants: dict[str, Callable[[], object]] = dict(ort_variants(model, X, args.threads))
    variants[f"lightgbm t{args.threads}"] = functools.partial(
        booster.predict, X, num_threads=args.threads)
    load_before = load_average()
    timings = measure(variants, args.repeats)
    load_after = load_average()
    lgb_s = timings[f"lightgbm t{args.threads}"].best
    lgb_cpu = min(timings[f"lightgbm t{args.threads}"].cpu)
    rows_out = [{"variant": name, "min s": tm.best, "median s": tm.median, "cpu s": min(tm.cpu),
                 "x LightGBM": lgb_s / tm.best, "cpu x LightGBM": lgb_cpu / min(tm.cpu)}
                for name, tm in timings.items()]
    table(f"onnxruntime variants, shipped model, {len(X):,} rows, {args.threads} threads "
          f"(load {load_before} -> {load_after})", rows_out,
          ["variant", "min s", "median s", "cpu s", "x LightGBM", "cpu x LightGBM"])
    result["variants"] = {
        "model": "shipped", "threads": args.threads, "load_before": load_before,
        "load_after": load_after,
        "timings": {name: {**tm.as_dict(), "speed_vs_lightgbm": round(lgb_s / tm.best, 3),
                           "cpu_vs_lightgbm": round(lgb_cpu / min(tm.cpu), 3)}
                    for name, tm in timings.items()},
    }
    return result


# ------------------------------------------------------------------ section 2: size vs quality


def average_precision(y: NDArray[np.int8], score: NDArray[np.float64]) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, score))


def bootstrap_sd(y: NDArray[np.int8], score: NDArray[np.float64], n: int = 200) -> float:
    """Standard deviation of AP over bootstrap resamples of the rows (its sampling noise)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        values.append(average_precision(y[idx], score[idx]))
    return float(np.std(values))


def section_size(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    from serving.explain import PathContributions
    from training.train import labels, matrix

    say(f"\n### 2. model size vs quality  (load {load_average()})")
    prep = prepared(data, args.train_catalog)
    X = feature_matrix(data, args.infer_catalog, args.bundle, args.infer_rows)
    valid_l = prep.valid_labelled
    X_valid, y_valid = matrix(valid_l), labels(valid_l)
    X_all, y_truth = matrix(prep.valid), labels(prep.valid, TRUTH)
    X_contrib = np.ascontiguousarray(X[:CONTRIB_ROWS])
    candidates: dict[str, Path] = {}
    fit: dict[str, float | None] = {}
    for trees in args.grid_trees:
        for leaves in args.grid_leaves:
            name = f"{trees}x{leaves}"
            candidates[name], fit[name] = grid_model(data, prep, trees, leaves, args.max_depth)
    candidates["shipped (early-stopped)"] = args.bundle / "model.txt"
    fit["shipped (early-stopped)"] = None

    calls: dict[str, Callable[[], object]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, path in candidates.items():
        booster = lgb.Booster(model_file=str(path))
        sess = onnx_session(booster_to_onnx(booster, X.shape[1]), args.threads)
        calls[f"onnx {name}"] = functools.partial(onnx_predict, sess, X)
        calls[f"reasons {name}"] = functools.partial(
            PathContributions.from_text(booster.model_to_string()), X_contrib, args.threads)
        score_valid = booster.predict(X_valid, num_threads=args.threads)
        rows[name] = {
            "model": name, **model_shape(booster),
            "AP labelled": average_precision(y_valid, score_valid),
            "AP truth": average_precision(y_truth, booster.predict(X_all,
                                                                   num_threads=args.threads)),
            "fit s": fit[name], "score_valid": score_valid,
        }
    load_before = load_average()
    timings = measure(calls, args.repeats)
    load_after = load_average()
    per_million = 1_000_000 / len(X)
    for name, row in rows.items():
        row["onnx s/1M"] = timings[f"onnx {name}"].best * per_million
        row["reasons s/10k"] = timings[f"reasons {name}"].best * 10_000 / len(X_contrib)
    grid = [r for n, r in rows.items() if not n.startswith("shipped")]
    best = max(grid, key=lambda r: r["AP labelled"])
    best_truth = max(grid, key=lambda r: r["AP truth"])
    keep = [r for r in grid if r["AP labelled"] >= best["AP labelled"] - args.ap_tolerance]
    keep_truth = [r for r in grid if r["AP truth"] >= best_truth["AP truth"] - args.ap_tolerance]
    smallest = min(keep, key=lambda r: (r["onnx s/1M"], r["leaves"]))
    smallest_truth = min(keep_truth, key=lambda r: (r["onnx s/1M"], r["leaves"]))
    noise = bootstrap_sd(y_valid, best.pop("score_valid"))
    for r in rows.values():
        r.pop("score_valid", None)
        r["dAP labelled"] = r["AP labelled"] - best["AP labelled"]
        r["dAP truth"] = r["AP truth"] - best_truth["AP truth"]
    table(f"size vs quality: fixed rounds, max_depth {args.max_depth}, trained on "
          f"{args.train_catalog.name} ({prep.train.height:,} labelled rows); AP on "
          f"{valid_l.height:,} labelled validation rows and vs truth on {prep.valid.height:,}; "
          f"onnx at {args.threads} threads on {len(X):,} rows (load {load_before} -> "
          f"{load_after})", list(rows.values()),
          ["model", "trees", "leaves", "max_leaves", "AP labelled", "dAP labelled", "AP truth",
           "dAP truth", "onnx s/1M", "reasons s/10k", "fit s"])
    say(f"best AP labelled {best['model']} ({best['AP labelled']:.4f}, bootstrap sd {noise:.4f});"
        f" smallest within {args.ap_tolerance}: {smallest['model']}; on truth AP the best is "
        f"{best_truth['model']} and the smallest within {args.ap_tolerance}: "
        f"{smallest_truth['model']}")
    return {"max_depth": args.max_depth, "train_rows": prep.train.height,
            "valid_labelled_rows": valid_l.height, "valid_rows": prep.valid.height,
            "onnx_rows": len(X), "threads": args.threads, "load_before": load_before,
            "load_after": load_after, "ap_tolerance": args.ap_tolerance,
            "best_labelled": best["model"], "best_truth": best_truth["model"],
            "ap_labelled_bootstrap_sd": round(noise, 5),
            "smallest_within_tolerance_labelled": smallest["model"],
            "smallest_within_tolerance_truth": smallest_truth["model"],
            "models": {n: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
                       for n, r in rows.items()}}


# ------------------------------------------------------------------ section 3: end to end


PARTS = ("load_model", "read_validate_aggregates", "features_and_write", "inference",
         "reasons_contrib", "reasons_words", "assemble", "rejects")


def e2e_run(data: Path, bundle: Path, listings: int, threads: int, chunk_rows: int,
            need_gib: float) -> dict[str, Any]:
    """score_catalog on the seed-0 catalog of `listings` rows in a fresh process; waits (up to
    20 min) until `need_gib` of memory is available so the machine's other jobs are not pushed
    into the OOM killer, and skips the run if it never is."""
    catalog, generate_seconds = ensure_catalog(data, listings)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    deadline = time.monotonic() + (1200 if need_gib < 0.9 * total else 0)  # never if it can't fit
    while _available_memory() / GIB < need_gib and time.monotonic() < deadline:
        say(f"waiting: {_available_memory() / GIB:.1f} GiB available, {need_gib:.1f} wanted")
        time.sleep(30)
    vm = _available_memory()
    if vm / GIB < need_gib:
        say(f"skipping {listings:,} rows: only {vm / GIB:.1f} GiB available")
        return {"skipped": f"only {vm / GIB:.1f} GiB available, {need_gib:.1f} wanted"}
    say(f"scoring {catalog.name} in a fresh process (load {load_average()}, "
        f"{vm / GIB:.1f} GiB available) ...")
    out = data / f".score_e2e_{listings}.parquet"
    load_before = load_average()
    result = run_worker("e2e", catalog=catalog, bundle=bundle, out=out, threads=threads,
                        chunk_rows=chunk_rows)
    result.update(load_before=load_before, load_after=load_average(),
                  generate_seconds=generate_seconds, available_memory_gib=round(vm / GIB, 1))
    return result


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def section_e2e(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    say(f"\n### 3. end to end  (load {load_average()}, disk free "
        f"{shutil.disk_usage(data).free / GIB:.0f} GiB)")
    runs: dict[int, dict[str, Any]] = {}
    for listings in [args.rows] + [n for n in args.memory_sizes if n != args.rows]:
        done = [(n, r["peak_rss_gib"]) for n, r in runs.items() if "skipped" not in r]
        # linear in rows from the largest run so far (an upper bound: RSS grows slower) + 2 GiB
        need = 2.0 + (max(done)[1] * listings / max(done)[0] if done else 2.0)
        runs[listings] = run = e2e_run(data, args.bundle, listings, args.threads,
                                       args.chunk_rows, need)
        if "skipped" not in run:
            say(f"  {listings:,} rows: {run['seconds']:.0f} s, {run['rows_per_second']:,.0f} "
                f"rows/s, peak RSS {run['peak_rss_gib']:.2f} GiB, parts "
                + ", ".join(f"{k} {v:.1f}" for k, v in run["parts"].items()))
        RESULTS["e2e_partial"] = runs
        checkpoint(data)
    main = runs[args.rows]
    if "skipped" in main:
        raise SystemExit(f"end to end at {args.rows:,} rows skipped: {main['skipped']}")
    wall = main["seconds"]
    shares = [{"part": part, "seconds": main["parts"][part],
               "share": main["parts"][part] / wall} for part in PARTS]
    shares.append({"part": "total (score_catalog wall)", "seconds": wall, "share": 1.0})
    table(f"end to end: score_catalog on {args.rows:,} rows, {args.threads} threads, chunks of "
          f"{args.chunk_rows:,} ({main['rows_per_second']:,.0f} rows/s, peak RSS "
          f"{main['peak_rss_gib']:.2f} GiB, load {main['load_before']} -> {main['load_after']})",
          shares, ["part", "seconds", "share"])
    say("features_and_write = the streaming query's time outside scoring (it re-reads and "
        "validates the catalog, computes features, writes Parquet); reasons_contrib = "
        "decision-path contributions and reasons_words = top_reasons, for flagged rows only; "
        "assemble = the rest of Scorer.score_features "
        "(to_numpy, per-row reason lists, output frame).")
    say(f"score_catalog's own summary seconds: {main['summary_seconds']}")
    ran = {n: r for n, r in runs.items() if "skipped" not in r}
    mem_rows = [{"rows": n, "seconds": r["seconds"], "rows/s": r["rows_per_second"],
                 "peak RSS GiB": r["peak_rss_gib"], "flagged": r["flagged"],
                 "load": f"{r['load_before'][0]}->{r['load_after'][0]}"}
                for n, r in sorted(ran.items())]
    table("peak RSS by catalog size (each a fresh process)", mem_rows,
          ["rows", "seconds", "rows/s", "peak RSS GiB", "flagged", "load"])
    for n, r in runs.items():
        if "skipped" in r:
            say(f"{n:,} rows skipped: {r['skipped']}")
    runs = ran
    sizes = sorted(runs)
    ratio = runs[sizes[-1]]["peak_rss_gib"] / runs[sizes[0]]["peak_rss_gib"]
    say(f"peak RSS {sizes[-1]:,} / {sizes[0]:,} rows: {ratio:.2f}x for "
        f"{sizes[-1] / sizes[0]:.1f}x the rows")
    return {"rows": args.rows, "threads": args.threads, "chunk_rows": args.chunk_rows,
            "runs": {str(n): r for n, r in runs.items()}, "peak_rss_ratio": round(ratio, 3)}


# ------------------------------------------------------------------ workers (subprocesses)


def worker_generate(args: argparse.Namespace) -> dict[str, Any]:
    from synthetic.generate import generate_catalog

    scratch = args.catalog.with_name(f".partial_{args.catalog.name}")
    start = time.perf_counter()
    generate_catalog(scratch, args.listings, SEED)
    seconds = time.perf_counter() - start
    scratch.rename(args.catalog)
    return {"seconds": seconds, "rows": args.listings}


def worker_train(args: argparse.Namespace) -> dict[str, Any]:
    """`training.train.train` with the default TrainConfig; copies the bundle to args.out."""
    store = args.out.with_name(f"{args.out.name}_mlflow")
    store.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    from training.config import TrainConfig
    from training.train import train

    start = time.perf_counter()
    result = train(args.catalog, TrainConfig(), progress=False)
    seconds = time.perf_counter() - start
    tmp = args.out.with_name(f".{args.out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result.bundle, tmp)
    tmp.rename(args.out)
    trees = lgb.Booster(model_file=str(args.out / "model.txt")).num_trees()
    return {"seconds": seconds, "trees": trees, "metrics": result.metrics}


def worker_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """score_catalog with its pieces wrapped by timers (this process only)."""
    import serving.scorer as sc
    from serving.bundle import Bundle

    spent: dict[str, float] = dict.fromkeys(
        ("read_catalog", "aggregates", "inference", "contributions", "reason_words",
         "score_features", "write_frame"), 0.0)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    sc.read_catalog = timed("read_catalog", sc.read_catalog)  # type: ignore[assignment]
    sc.batch_aggregates = timed("aggregates", sc.batch_aggregates)  # type: ignore[assignment]
    sc.top_reasons = timed("reason_words", sc.top_reasons)  # type: ignore[assignment]
    sc.write_frame = timed("write_frame", sc.write_frame)  # type: ignore[assignment]
    Bundle.predict = timed("inference", Bundle.predict)  # type: ignore[method-assign]
    from serving.explain import PathContributions

    PathContributions.__call__ = timed(  # type: ignore[method-assign]
        "contributions", PathContributions.__call__)
    sc.Scorer.score_features = timed(  # type: ignore[method-assign]
        "score_features", sc.Scorer.score_features)

    start = time.perf_counter()
    scorer = sc.Scorer.load(str(args.bundle), threads=args.threads)
    load_seconds = time.perf_counter() - start
    try:
        summary = sc.score_catalog(args.catalog, args.out, scorer=scorer,
                                   chunk_rows=args.chunk_rows, threads=args.threads)
        wall = time.perf_counter() - start
    finally:
        args.out.unlink(missing_ok=True)
        sc.rejects_path(args.out).unlink(missing_ok=True)
    seconds = summary["seconds"]
    loop = float(seconds["scoring"])
    reasons = spent["contributions"] + spent["reason_words"]
    parts = {
        "load_model": load_seconds + float(seconds["load_model"]),
        "read_validate_aggregates": spent["read_catalog"] + spent["aggregates"],
        # features and the Parquet sink run inside the same Polars query as scoring
        "features_and_write": loop - spent["score_features"],
        "inference": spent["inference"],
        "reasons_contrib": spent["contributions"],
        "reasons_words": spent["reason_words"],
        "assemble": spent["score_features"] - spent["inference"] - reasons,
        "rejects": float(seconds["rejects"]),
    }
    return {
        "rows": summary["rows"], "scored": summary["scored"], "flagged": summary["flagged"],
        "seconds": wall, "rows_per_second": summary["scored"] / wall,
        "peak_rss_gib": peak_rss_bytes() / GIB, "parts": parts,
        "pieces": spent, "summary_seconds": seconds,
    }


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "generate": worker_generate, "e2e": worker_e2e, "train": worker_train,
}


# ------------------------------------------------------------------ main


def int_list(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


SECTIONS = ("inference", "size", "e2e")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes: 200k-row matrix, 2x2 grid, 1M-row end to end")
    p.add_argument("--rows", type=int, help="end-to-end catalog rows (default 10M, quick 1M)")
    p.add_argument("--memory-sizes", type=int_list,
                   help="catalog sizes for the peak-RSS comparison (default 10M,40M; quick "
                        "250k,1M)")
    p.add_argument("--data", type=Path, default=BENCH / "out", help="catalogs, caches")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--bundle", type=Path,
                   help="the shipped bundle (default: `knockoff train`'s bundle for the current "
                        "TrainConfig on --train-catalog, trained once and cached in --data)")
    p.add_argument("--infer-catalog", type=Path, default=ROOT / "var/q/b.parquet")
    p.add_argument("--train-catalog", type=Path, default=ROOT / "var/q/a.parquet")
    p.add_argument("--infer-rows", type=int, help="matrix rows (default 1M, quick 200k)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, help="timed repetitions (default 3, quick 2)")
    p.add_argument("--grid-trees", type=int_list, help="default 50,100,200,300 (quick 50,300)")
    p.add_argument("--grid-leaves", type=int_list, help="default 15,31,63 (quick 15,63)")
    p.add_argument("--max-depth", type=int, default=8, help="grid max_depth (config: 8)")
    p.add_argument("--ap-tolerance", type=float, default=0.002)
    p.add_argument("--chunk-rows", type=int, default=100_000, help="score_catalog chunk_rows")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--catalog", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--listings", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "rows": 1_000_000 if quick else 10_000_000,
        "memory_sizes": [250_000, 1_000_000] if quick else [10_000_000, 40_000_000],
        "infer_rows": 200_000 if quick else 1_000_000,
        "repeats": 2 if quick else 3,
        "grid_trees": [50, 300] if quick else [50, 100, 200, 300],
        "grid_leaves": [15, 63] if quick else [15, 31, 63],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    return args


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    import lleaves  # noqa: F401

    return {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "versions": {name: version(name) for name in (
            "lightgbm", "onnxruntime", "onnx", "onnxmltools", "lleaves", "llvmlite", "polars",
            "numpy")},
        "env": {k: os.environ.get(k) for k in (
            "OMP_WAIT_POLICY", "ORT_DISABLE_TELEMETRY", "MLFLOW_DISABLE_TELEMETRY",
            "POLARS_MAX_THREADS")},
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](args)
        args.result.write_text(json.dumps(result))
        return
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.bundle is None:
        args.bundle = shipped_bundle(data, args.train_catalog)
    figures = RESULTS
    figures.update({"args": {k: (str(v) if isinstance(v, Path) else v)
                             for k, v in vars(args).items() if v is not None},
                    "environment": environment(), "load_start": load_average()})
    say(f"score bench: sections {args.sections}, load {figures['load_start']}, "
        f"{figures['environment']['cpus']} cpus")
    runners: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "inference": section_inference, "size": section_size, "e2e": section_e2e}
    figures["args"]["bundle"] = str(args.bundle)
    for name in args.sections:
        figures[name] = runners[name](args, data)
        figures.pop("e2e_partial", None)
        checkpoint(data)
    figures["load_end"] = load_average()
    figures["seconds"] = round(time.perf_counter() - started, 1)
    checkpoint(data)
    say(f"\nload average {figures['load_start']} at start, {figures['load_end']} at end; "
        f"{figures['seconds']:.0f} s")
    say(json.dumps(figures, default=_json_default))


def checkpoint(data: Path) -> None:
    """RESULTS so far, in `data/score_results.json` (a killed run keeps its finished parts)."""
    tmp = data / ".score_results.json.partial"
    tmp.write_text(json.dumps(RESULTS, default=_json_default) + "\n")
    tmp.rename(data / "score_results.json")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Iterable):
        return list(value)  # type: ignore[arg-type]
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
