"""`knockoff train --engine dask`: the fit step on a Dask cluster with
`lightgbm.dask.DaskLGBMClassifier`, the rest of `training.train` unchanged (the same prepared
rows, evaluation, MLflow run, bundle and ONNX export).

As locally, early stopping picks the number of trees on the newest share of the training
window and the model is then refit on all of it. Dask LightGBM has no early-stopping callback,
so the first fit runs the full `num_boost_round` and the count is read off the held-out rows'
log-loss curve with LightGBM's own rule (stop after `early_stopping_rounds` without
improvement; keep the best). The labelled training rows are split into one block
per worker and placed on it (scattered, i.e. persisted) before each fit."""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import lightgbm as lgb
import numpy as np
import polars as pl
from numpy.typing import NDArray

from features.contract import LABEL
from training.baselines import fit_logistic
from training.config import TrainConfig
from training.dataset import Prepared, TrainError, labels, matrix
from training.train import Models, lgb_params

# lgb_params' names -> the scikit-learn estimator's (the rest pass through as LightGBM params)
_SKLEARN_NAMES = {"min_data_in_leaf": "min_child_samples", "feature_fraction": "colsample_bytree",
                  "bagging_fraction": "subsample", "bagging_freq": "subsample_freq",
                  "lambda_l2": "reg_lambda", "seed": "random_state"}


def early_stopping_rounds(curve: Sequence[float], patience: int) -> int:
    """The tree count LightGBM's `early_stopping(patience)` keeps for this eval curve (lower
    is better): the best iteration before `patience` iterations pass without improvement."""
    best, best_at = math.inf, 0
    for i, value in enumerate(curve):
        if value < best:
            best, best_at = value, i
        elif i - best_at >= patience:
            break
    return best_at + 1


def logloss_curve(booster: lgb.Booster, rows: pl.DataFrame) -> NDArray[np.float64]:
    """Binary log loss on `rows` after each tree (what LightGBM's eval set reports), computed
    here from the trees' raw scores rather than on the cluster, where each worker would see
    only its own part of the rows."""
    X, y = matrix(rows), labels(rows).astype(np.float64)
    raw = np.cumsum([booster.predict(X, raw_score=True, start_iteration=i, num_iteration=1)
                     for i in range(booster.num_trees())], axis=0)
    p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)


def _persisted(client: Any, frame: pl.DataFrame, workers: list[str]) -> tuple[Any, Any]:
    """X and y as dask arrays of one block per worker, block i held by worker i (a fixed
    layout: which rows each LightGBM machine sees, hence the model, does not vary by run)."""
    import dask.array as da

    chunk = max(1, -(-frame.height // len(workers)))
    X_all, y_all = matrix(frame), labels(frame)
    blocks = []
    for i, worker in enumerate(workers):
        rows = slice(i * chunk, min((i + 1) * chunk, frame.height))
        if rows.start >= rows.stop:
            break
        X, y = client.scatter([X_all[rows], y_all[rows]], workers=[worker], direct=True)
        n = rows.stop - rows.start
        blocks.append((da.from_delayed(X, (n, X_all.shape[1]), dtype=X_all.dtype),
                       da.from_delayed(y, (n,), dtype=y_all.dtype)))
    return (da.concatenate([b[0] for b in blocks]), da.concatenate([b[1] for b in blocks]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _machines(client: Any, workers: list[str]) -> str:
    """LightGBM's machine list in the order of `workers` (its ranks), a free port on each."""
    ports = client.run(_free_port, workers=workers)
    return ",".join(f"{urlparse(w).hostname}:{ports[w]}" for w in workers)


def _classifier(client: Any, config: TrainConfig, y: NDArray[np.int8], trees: int,
                workers: list[str]) -> Any:
    from lightgbm.dask import DaskLGBMClassifier

    params = lgb_params(config, y)
    params.pop("num_threads")
    named = {_SKLEARN_NAMES.get(k, k): v for k, v in params.items()}
    return DaskLGBMClassifier(client=client, n_estimators=trees, n_jobs=1,
                              machines=_machines(client, workers), **named)


def fit_lightgbm_dask(client: Any, train: pl.DataFrame, config: TrainConfig,
                      workers: list[str]) -> lgb.Booster:
    """`training.train.fit_final_lightgbm` on the cluster (see the module docstring)."""
    cut = train["listed_at"].quantile(1.0 - config.early_stopping_share, "nearest")
    older, newest = train.filter(pl.col("listed_at") < cut), train.filter(
        pl.col("listed_at") >= cut)
    if older[LABEL].n_unique() < 2 or newest[LABEL].n_unique() < 2:
        raise TrainError("too few labelled training rows to hold some out for early stopping")
    X, y = _persisted(client, older, workers)
    probe = _classifier(client, config, labels(older), config.num_boost_round, workers)
    probe.fit(X, y)
    rounds = early_stopping_rounds(logloss_curve(probe.booster_, newest),
                                   config.early_stopping_rounds)
    X, y = _persisted(client, train, workers)
    final = _classifier(client, config, labels(train), max(rounds, 1), workers)
    final.fit(X, y)
    booster: lgb.Booster = final.booster_
    return booster


def dask_fit_step(client: Any) -> Callable[[Prepared, TrainConfig, bool], Models]:
    """A fit step for `training.train.train`: LightGBM on the cluster (one partition per
    worker), the logistic baseline as locally."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])

    def fit(prepared: Prepared, config: TrainConfig, progress: bool = True) -> Models:
        booster = fit_lightgbm_dask(client, prepared.train, config, workers)
        logistic = fit_logistic(matrix(prepared.train), labels(prepared.train), config.seed)
        return Models(booster, logistic)

    return fit
