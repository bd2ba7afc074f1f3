"""Shared test set-up: the quiet environment with 2 threads, a listing factory, an MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from knockoff.environment import quiet_environment

# before Polars, LightGBM or onnxruntime are imported (they read these once); 2 cores are shared
quiet_environment(threads=2)

import polars as pl  # noqa: E402
import pytest  # noqa: E402

from features.contract import SCHEMA  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "title": "Leather bag",
    "description": "A bag.",
    "brand": "Acme",
    "category": "Fashion > Bags",
    "price": 100.0,
    "list_price": None,
    "currency": "EUR",
    "listed_at": datetime(2026, 3, 1, 12, tzinfo=UTC),
    "image_count": 1,
    "image_hashes": None,
    "ships_from": "DE",
    "units_sold_30d": None,
    "returns_30d": None,
    "complaints_30d": None,
    "seller_registered_at": datetime(2020, 1, 1, tzinfo=UTC),
    "seller_country": "DE",
    "seller_rating": 4.5,
    "seller_review_count": 100,
    "seller_verified": True,
    "seller_contact_hash": None,
    "is_counterfeit": None,
}


def listings(*rows: dict[str, Any]) -> pl.DataFrame:
    """A contract-typed frame; each row gives listing_id/seller_id and what differs."""
    records = []
    for i, row in enumerate(rows):
        record = {"listing_id": f"L{i + 1}", "seller_id": f"S{i + 1}", **DEFAULTS, **row}
        records.append({name: record[name] for name in SCHEMA})
    return pl.DataFrame(records, schema=SCHEMA)


@pytest.fixture
def make_listings():
    return listings


@pytest.fixture(scope="session", autouse=True)
def bundle_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Downloaded bundles go to a temp folder, not ~/.cache/knockoff (subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("bundle-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KNOCKOFF_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real MLflow store (SQLite + artifacts) in a temp folder, one per test module."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder
