"""The service's store on SQLite and on a real PostgreSQL: migrations, hashed keys, argon2
passwords, isolation, idempotency, leases, one set of cases per batch, the audit log."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from serving import migrations, store
from serving.jobs import ServiceSettings, sweep_orphans


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A new, migrated database per test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'knockoff.db'}"
    else:
        server = request.getfixturevalue("postgres_url")
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = f"{server.rsplit('/', 1)[0]}/{name}"
    engine = store.connect(url)
    yield engine
    engine.dispose()


def _batch(engine: Engine, platform: store.Platform, key: str | None = None,
           body: str = "a" * 64, max_queued: int = 10) -> tuple[store.Batch, bool]:
    return store.create_batch(engine, platform, uuid.uuid4().hex, "parquet", "x/upload.parquet",
                              body, key, max_queued)


def _case(batch: store.Batch, listing: str) -> dict[str, object]:
    return {"platform_id": batch.platform_id, "batch_id": batch.id, "listing_id": listing,
            "seller_id": "S1", "title": "Bag", "price": 10.0, "image_hashes": ["ab"],
            "score": 0.9, "reasons": ["price 71% below this brand's usual price"],
            "model_version": "knockoff/1", "kind": "flag", "status": "open",
            "created_at": store.now()}


def test_migrations_create_the_schema_once_and_rerun_cleanly(engine: Engine) -> None:
    store.connect(engine.url.render_as_string(hide_password=False))  # second run: no-op
    tables = set(sa.inspect(engine).get_table_names())
    assert {"platforms", "api_keys", "users", "batches", "cases", "decisions",
            "audit_log", "alembic_version"} <= tables
    head = ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == head


def test_keys_are_stored_hashed_and_revocable(engine: Engine) -> None:
    key = store.add_platform(engine, "alpha", "cli:test")
    assert key.startswith(store.KEY_PREFIX) and len(key) > 40
    with engine.connect() as conn:
        stored = conn.execute(sa.select(store.api_keys)).mappings().one()
    assert key not in str(dict(stored)) and stored["key_sha256"] != key
    assert store.platform_for_key(engine, key) == store.platform_named(engine, "alpha")
    assert store.platform_for_key(engine, key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    with pytest.raises(store.StoreError, match="already exists"):
        store.add_platform(engine, "alpha", "cli:test")
    for bad in ("", "a b/c", "x" * 101, "café"):  # a platform name is a URL path segment
        with pytest.raises(store.StoreError, match="letters, digits"):
            store.add_platform(engine, bad, "cli:test")
    store.revoke_platform(engine, "alpha", "cli:test")
    assert store.platform_for_key(engine, key) is None
    with pytest.raises(store.StoreError, match="no platform"):
        store.revoke_platform(engine, "nobody", "cli:test")


def test_users_have_argon2id_passwords_and_can_be_disabled(engine: Engine) -> None:
    store.add_user(engine, "olga", "officer", "correct horse", "cli:test")
    with engine.connect() as conn:
        digest = conn.scalar(sa.select(store.users.c.password_hash))
    assert digest.startswith("$argon2id$")
    assert store.verify_user(engine, "olga", "correct horse")["role"] == "officer"
    assert store.verify_user(engine, "olga", "wrong") is None
    with pytest.raises(store.StoreError, match="role must be"):
        store.add_user(engine, "max", "boss", "pw", "cli:test")
    store.disable_user(engine, "olga", "cli:test")
    assert store.verify_user(engine, "olga", "correct horse") is None
    assert store.list_users(engine)[0]["disabled"] is True


def test_batches_are_isolated_idempotent_and_limited(engine: Engine) -> None:
    store.add_platform(engine, "alpha", "cli:test")
    store.add_platform(engine, "beta", "cli:test")
    alpha, beta = store.platform_named(engine, "alpha"), store.platform_named(engine, "beta")
    first, created = _batch(engine, alpha, key="k1")
    assert created and first.status == "queued"
    assert store.get_batch(engine, alpha, first.id) == first
    assert store.get_batch(engine, beta, first.id) is None
    assert store.list_batches(engine, beta, 10, None) == ([], None)
    again, created = _batch(engine, alpha, key="k1")
    assert not created and again.id == first.id
    with pytest.raises(store.IdempotencyConflict):
        _batch(engine, alpha, key="k1", body="b" * 64)
    assert _batch(engine, beta, key="k1")[1]  # keys are per platform
    _batch(engine, alpha, max_queued=2)
    with pytest.raises(store.QueueFull):
        _batch(engine, alpha, max_queued=2)
    page, cursor = store.list_batches(engine, alpha, 1, None)
    rest, end = store.list_batches(engine, alpha, 10, cursor)
    assert cursor == page[0].id and [b.id for b in rest] == [first.id] and end is None
    with pytest.raises(store.StoreError, match="unknown cursor"):
        store.list_batches(engine, beta, 10, first.id)


def test_an_expired_lease_moves_to_another_worker_and_cases_are_never_doubled(
        engine: Engine) -> None:
    store.add_platform(engine, "alpha", "cli:test")
    alpha = store.platform_named(engine, "alpha")
    batch, _ = _batch(engine, alpha)
    claimed = store.claim_batch(engine, "w1", lease_seconds=-1)  # w1 "dies": lease expired
    assert claimed.id == batch.id and claimed.status == "scoring" and claimed.attempts == 1
    again = store.claim_batch(engine, "w2", lease_seconds=60)
    assert again.id == batch.id and again.attempts == 2
    assert store.claim_batch(engine, "w3", lease_seconds=60) is None  # w2's lease holds
    assert not store.renew_lease(engine, batch.id, "w1", 60)
    assert store.renew_lease(engine, batch.id, "w2", 60)
    counts = {"rows": 3, "scored": 3, "rejected": 0, "flagged": 2, "model_version": "knockoff/1"}
    cases = [_case(batch, "L1"), _case(batch, "L2")]
    assert not store.finish_batch(engine, batch.id, "w1", counts, [cases])  # lost its lease
    assert store.finish_batch(engine, batch.id, "w2", counts, [cases[:1], cases[1:]])
    assert not store.finish_batch(engine, batch.id, "w2", counts, [cases])  # already done
    assert store.count_cases(engine, alpha, batch.id) == {"flag": 2, "duplicates": 0}
    done = store.get_batch(engine, alpha, batch.id)
    assert (done.status, done.flagged, done.model_version) == ("done", 2, "knockoff/1")
    with engine.connect() as conn:
        actions = conn.execute(sa.select(store.audit_log.c.action).where(
            store.audit_log.c.entity_id == batch.id).order_by(store.audit_log.c.id)).scalars()
        assert list(actions) == ["batch.submit", "batch.claim", "batch.claim", "batch.done"]


def test_concurrent_workers_claim_each_batch_once(engine: Engine) -> None:
    store.add_platform(engine, "alpha", "cli:test")
    alpha = store.platform_named(engine, "alpha")
    ids = {_batch(engine, alpha, max_queued=100)[0].id for _ in range(12)}
    claims: list[str] = []

    def work(name: str) -> None:
        while (batch := store.claim_batch(engine, name, 60)) is not None:
            claims.append(batch.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == sorted(ids)


def test_a_failed_batch_keeps_its_error(engine: Engine) -> None:
    store.add_platform(engine, "alpha", "cli:test")
    alpha = store.platform_named(engine, "alpha")
    batch, _ = _batch(engine, alpha)
    store.claim_batch(engine, "w1", 60)
    assert store.fail_batch(engine, batch.id, "w1", "upload.csv: not a readable csv file")
    failed = store.get_batch(engine, alpha, batch.id)
    assert failed.status == "failed" and failed.error.startswith("upload.csv")
    assert failed.finished_at is not None and store.queued_count(engine) == 0


def test_a_database_that_cannot_be_opened_is_a_clear_error() -> None:
    with pytest.raises(store.StoreError, match="cannot open the database nonsense://x"):
        store.connect("nonsense://x")
    with pytest.raises(store.StoreError, match=r"nobody:\*\*\*@127.0.0.1") as refused:
        store.connect("postgresql+psycopg://nobody:secret@127.0.0.1:1/x")
    assert "secret" not in str(refused.value)


def test_upload_folders_left_without_a_batch_are_swept_once_old(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server killed mid-upload leaves a folder no batch names: the next `serve` or `worker`
    start deletes it once nothing in it changed for an hour; batches' folders and uploads
    still being written stay."""
    settings = ServiceSettings(data_dir=tmp_path / "data")
    assert sweep_orphans(engine, settings) == 0  # no batches folder yet
    store.add_platform(engine, "alpha", "cli:test")
    alpha = store.platform_named(engine, "alpha")
    assert alpha is not None
    batch, _ = _batch(engine, alpha)
    hour_ago = time.time() - 3700
    folders = {name: settings.batch_dir(name) for name in
               (batch.id, "a" * 32, "b" * 32, "c" * 32)}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        upload = folder / "upload.csv"
        upload.write_text("listing_id\n")
        if name != "c" * 32:  # c: its upload is still being written
            os.utime(upload, (hour_ago, hour_ago))
        if name != "b" * 32:  # b: cut off a minute ago
            os.utime(folder, (hour_ago, hour_ago))
    assert sweep_orphans(engine, settings) == 1
    assert [n for n, f in folders.items() if not f.exists()] == ["a" * 32]
    assert "removed 1 upload folder(s) with no batch" in capsys.readouterr().err
    assert sweep_orphans(engine, settings, older_than=0) == 2  # b and c, never the batch's
    assert folders[batch.id].exists()
