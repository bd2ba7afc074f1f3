"""Drift per scored batch in the service: counted while the batch is scored (the same figures
as measuring the whole batch at once), stored once per batch however often it is scored,
higher for a drifted batch, kept from the platforms and shown to officers on the dashboard with
the flag precision and recall estimates. A real `knockoff serve` (tests/serving/review_world)
and, for the kill/retry case, the worker's steps on a temp SQLite database."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from features.registry import BATCH_RELATIVE
from serving import monitoring, store
from serving.drift import BatchDrift, bin_shares, catalog_drift, psi
from serving.exports import dashboard
from serving.jobs import ChampionWatch, ServiceSettings, Worker
from serving.scorer import Scorer, score_catalog
from serving.tables import batch_drift
from tests.serving.review_world import World, _score, build_world, knockoff

BATCH_FIELDS = {"batch_id", "status", "rows", "scored", "rejected", "flagged", "model_version",
                "submitted_at", "finished_at", "error"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("monitoring"))
    yield built
    built.stop()


@pytest.fixture(scope="module")
def engine(world: World) -> Engine:
    return store.connect(world.db)


@pytest.fixture(scope="module")
def scorer(world: World) -> Iterator[Scorer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", world.env["MLFLOW_TRACKING_URI"])
        yield Scorer.load(threads=1)


def _drift_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(batch_drift).order_by(batch_drift.c.computed_at)).mappings()]


def test_drift_counted_while_scoring_is_the_drift_of_the_whole_batch(
        world: World, scorer: Scorer, tmp_path: Path) -> None:
    batch = world.data.parent / "alpha.parquet"
    monitor = BatchDrift()
    calls: list[int] = []

    def observe(bundle: Any, features: Any, scores: Any) -> None:
        assert bundle is scorer.bundle  # the world's bundle has no schema variants
        calls.append(len(scores))
        monitor.add(bundle, features, scores)

    summary = score_catalog(batch, tmp_path / "scores.parquet", chunk_rows=500,
                            scorer=dataclasses.replace(scorer, observer=observe))
    counted = monitoring.batch_report(monitor, scorer, summary, tmp_path / "scores.parquet")
    whole = catalog_drift(batch, scorer)
    assert len(calls) > 1 and sum(calls) == summary["scored"] == whole.rows
    assert counted is not None and counted.rows == whole.rows
    assert counted.score_psi == pytest.approx(whole.score_psi, abs=1e-9)
    assert counted.psi.keys() == whole.psi.keys()
    for name, value in whole.psi.items():
        assert counted.psi[name] == pytest.approx(value, abs=1e-9), name
    assert counted.flagged is not None and whole.flagged is not None
    assert counted.flagged.rows == whole.flagged.rows == summary["flagged"] > 0
    assert counted.flagged.score_psi == pytest.approx(whole.flagged.score_psi, abs=1e-9)
    for name, value in whole.flagged.psi.items():
        assert counted.flagged.psi[name] == pytest.approx(value, abs=1e-9), name


def test_a_batch_scored_elsewhere_gets_the_scores_psi_from_its_scores_file(
        scorer: Scorer, tmp_path: Path) -> None:
    """The Dask engine's workers carry no observer: the scores' PSIs come from the scores
    file, against the model the summary names; features are left out, and a batch without a
    scored row, or whose files different variants scored, has no drift."""
    scores = np.random.default_rng(3).random(500) ** 2
    pl.DataFrame({"score": scores}).write_parquet(tmp_path / "scores.parquet")
    path = tmp_path / "scores.parquet"
    assert monitoring.batch_report(BatchDrift(), scorer, {"scored": 0}, path) is None
    assert monitoring.batch_report(BatchDrift(), scorer, {"scored": 500, "schema": "mixed"},
                                   path) is None
    report = monitoring.batch_report(BatchDrift(), scorer, {"scored": 500}, path)
    assert report is not None and report.psi == {} and report.rows == 500
    reference = scorer.bundle.reference
    assert reference is not None
    cuts, shares = reference.filter(population="all", name="score").select(
        "cuts", "shares").row(0)
    assert report.score_psi == pytest.approx(
        psi(np.asarray(shares), bin_shares(scores, np.asarray(cuts))), abs=1e-12)
    assert report.score_psi > 1  # uniform squared scores against a model's, mostly near 0
    assert report.flagged is not None and report.flagged.psi == {}
    assert report.flagged.rows == int((scores >= scorer.threshold).sum())
    assert report.flagged.flag_rate == pytest.approx(report.flagged.rows / 500)


def test_every_scored_batch_has_its_drift_and_platforms_do_not_see_it(
        world: World, engine: Engine) -> None:
    rows = _drift_rows(engine)
    assert len(rows) == len({r["batch_id"] for r in rows}) == 2
    for row in rows:
        assert row["model_version"].startswith("knockoff/") and row["rows"] > 3900
        assert 0 <= row["score_psi"] < 10 and len(row["feature_psi"]) == 34
        assert row["warning"] == (row["score_psi"] > 0.2)
    listed = httpx.get(f"{world.url}/v1/batches", headers=world.platform("alpha")).json()
    assert listed["items"] and all(set(b) == BATCH_FIELDS for b in listed["items"])


def test_a_drifted_and_an_undrifted_batch_store_what_knockoff_drift_measures(
        world: World, engine: Engine, scorer: Scorer) -> None:
    """An undrifted later batch of the training catalog's market (`--drift 0`) and one with
    twice the catalog's drift (`--drift 2`), another seed, through the service: each stores
    the figures `knockoff drift` gives for its file, over all listings and over the flagged
    ones. (Which is higher is tests/serving/test_drift.py's and bench/drift.py's business: this
    model's validation window holds too few flagged listings to tell them apart.)"""
    measured = {}
    for name, drift in (("undrifted", "0"), ("drifted", "2")):
        path = world.data.parent / f"{name}.parquet"
        knockoff(world.env, "generate", "--listings", "6000", "--seed", "31", "--days", "31",
                 "--start", "2026-06-01", "--drift", drift, "--id-prefix", name,
                 "--out", str(path))
        _score(world, "beta", path)
        stored = _drift_rows(engine)[-1]
        direct = catalog_drift(path, scorer)
        assert stored["rows"] == direct.rows == 6000
        assert stored["score_psi"] == pytest.approx(direct.score_psi, abs=1e-9)
        assert stored["feature_psi"] == pytest.approx(direct.psi, abs=1e-6)
        assert direct.flagged is not None and stored["flagged_rows"] == direct.flagged.rows > 0
        assert stored["flagged_score_psi"] == pytest.approx(direct.flagged.score_psi, abs=1e-9)
        assert stored["flag_rate"] == pytest.approx(direct.flagged.flag_rate, abs=1e-12)
        assert stored["reference_flag_rate"] == pytest.approx(
            direct.flagged.reference_flag_rate, abs=1e-12)
        measured[name] = stored
    print({k: round(v["score_psi"], 4) for k, v in measured.items()})
    assert measured["drifted"]["batch_id"] != measured["undrifted"]["batch_id"]
    assert measured["drifted"]["score_psi"] != measured["undrifted"]["score_psi"]


def test_a_batch_scored_twice_stores_its_drift_once(world: World, scorer: Scorer,
                                                    tmp_path: Path) -> None:
    """A worker scores the batch and stores its drift, then dies before marking it done; its
    lease expires, another worker scores it again: one drift row, the second worker's, and
    the dead worker can no longer write one."""
    engine = store.connect(f"sqlite:///{tmp_path / 'knockoff.db'}")
    store.add_platform(engine, "gamma", "test")
    settings = ServiceSettings(data_dir=tmp_path / "data", threads=1)
    upload = settings.batch_dir("b" * 32) / "upload.parquet"
    upload.parent.mkdir(parents=True)
    shutil.copy(world.data.parent / "alpha.parquet", upload)
    gamma = store.platform_named(engine, "gamma")
    assert gamma is not None
    store.create_batch(engine, gamma, "b" * 32, "parquet",
                       str(upload.relative_to(settings.data_dir)), "0" * 64, None, 10)

    first = store.claim_batch(engine, "killed", lease_seconds=0.5)
    assert first is not None
    dead = Worker(engine, settings, "killed", ChampionWatch())
    counts, _, drift = dead._score(first, scorer)
    assert drift is not None
    assert monitoring.save_drift(engine, first.id, "killed", counts["model_version"], drift)
    (written,) = _drift_rows(engine)
    time.sleep(0.6)  # the killed worker's lease runs out

    again = store.claim_batch(engine, "retry", lease_seconds=60)
    assert again is not None and again.id == first.id and again.attempts == 2
    Worker(engine, settings, "retry", ChampionWatch()).process(again, scorer)
    assert not monitoring.save_drift(engine, first.id, "killed", counts["model_version"], drift)
    (row,) = _drift_rows(engine)
    assert row["batch_id"] == first.id and row["computed_at"] > written["computed_at"]
    assert row["score_psi"] == pytest.approx(written["score_psi"], abs=1e-12)
    assert store.get_batch(engine, gamma, first.id).status == "done"  # type: ignore[union-attr]


def test_the_dashboard_shows_drift_and_the_flag_estimates(world: World, engine: Engine) -> None:
    ana = world.token("ana")
    for kind, verdicts in (("flag", ("counterfeit", "counterfeit", "genuine")),
                           ("audit", ("genuine", "genuine"))):
        found = httpx.get(f"{world.url}/v1/cases", params={"kind": kind, "status": "open",
                                                           "limit": len(verdicts)},
                          headers=ana).json()["items"]
        for case, verdict in zip(found, verdicts, strict=True):
            answer = httpx.post(f"{world.url}/v1/cases/{case['case_id']}/decision",
                                json={"verdict": verdict, "reason_code": "other"}, headers=ana)
            assert answer.status_code == 201, answer.text
    figures = dashboard(engine)
    latest = figures["drift"]["latest"]
    assert set(figures["drift"]["series"]) == {"alpha", "beta"}
    assert latest["batch_id"] == _drift_rows(engine)[-1]["batch_id"]
    assert len(latest["top_features"]) == 5
    (estimate,) = figures["estimates"]
    assert estimate["decided_flagged"] >= 3 and estimate["decided_audit"] >= 2
    precision = estimate["precision"]
    assert precision["low"] <= precision["estimate"] <= precision["high"]

    page = httpx.get(f"{world.url}/review/dashboard", headers=ana)
    assert page.status_code == 200
    html = page.text
    assert 'id="h-drift"' in html and 'aria-label="Score PSI per batch' in html
    # each platform's all-listings line, and its flagged-listings line where a batch had enough
    # flagged listings on both sides (this small world's reference has few)
    series = figures["drift"]["series"]
    lines = len(series) + sum(any(b["flagged_reliable"] for b in batches)
                              for batches in series.values())
    assert html.count("<polyline") == lines and html.count('stroke-dasharray="6 4"') == 2
    assert f"{latest['flagged_rows']} flagged (a flag rate of" in html
    assert ("for the flagged listings, above 0.1 once the batch and the reference each have 200"
            in html)
    assert not {f["feature"] for f in latest["top_features"]} & BATCH_RELATIVE
    assert f"<td>{latest['top_features'][0]['feature']}</td>" in html
    assert f"Latest batch: {latest['platform']}, {latest['batch_id']}" in html
    assert 'id="h-est"' in html and estimate["model_version"] in html
    assert (f'{precision["estimate"]:.3f} <span class="muted">({precision["low"]:.3f}–'
            f'{precision["high"]:.3f})</span>') in html
    assert f"{estimate['naive_precision']:.3f}" in html


def test_every_done_batch_is_a_step_of_its_model_versions_drift_run(world: World,
                                                                    engine: Engine) -> None:
    """The workers append each done batch's drift to one MLflow run per model version, a
    metric history per platform in the order the batches were done."""
    from mlflow import MlflowClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", world.env["MLFLOW_TRACKING_URI"])
        client = MlflowClient()
        rows = _drift_rows(engine)
        (version,) = {r["model_version"] for r in rows}
        experiment = client.get_experiment_by_name("knockoff-drift")
        assert experiment is not None
        (run,) = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.source = 'service' and tags.model_version = '{version}'")
        with engine.connect() as conn:
            names = dict(conn.execute(sa.text("SELECT id, name FROM platforms")).all())
        for platform_id, name in names.items():
            stored = [r["score_psi"] for r in rows if r["platform_id"] == platform_id]
            history = client.get_metric_history(run.info.run_id, f"score_psi/{name}")
            logged = [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
            assert logged == pytest.approx(stored, abs=1e-9), name
        # (the kill/retry test's batch "b...b", another database, logged here too)
        assert run.data.tags["last_batch"] in {r["batch_id"] for r in rows} | {"b" * 32}
        tags = client.get_model_version("knockoff", version.split("/")[1]).tags
        assert tags["drift_run"] == run.info.run_id and tags["drift_warning"] in ("true", "false")
