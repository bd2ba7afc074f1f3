"""A small trained world for the schema-variant tests: a catalog, a later batch, and the same
model exported with its schema variants and without them (training steps, no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from synthetic.generate import generate_catalog
from training.compare import evaluate_models
from training.config import OPTIONAL_GROUP_NAMES, TrainConfig
from training.dataset import Prepared, prepare
from training.train import export_bundle, fit_final_lightgbm, fit_models
from training.variants import VariantModel, fit_variants

SPARSE = ("images", "seller_contact_hash", "description", "list_price")  # issue 12's platform
NO_CONTACT = ("seller_contact_hash",)
CONFIG = TrainConfig(threads=2, schema_variants=(SPARSE, NO_CONTACT, OPTIONAL_GROUP_NAMES))


@dataclass(frozen=True)
class World:
    catalog: Path
    batch: Path  # later, with ground truth
    served: Path  # bundle with variants
    champion: Path  # the same main model, no variants
    prepared: Prepared
    variants: tuple[VariantModel, ...]


def build_world(folder: Path, listings: int = 30_000, batch: int = 12_000) -> World:
    catalog, later = folder / "catalog.parquet", folder / "batch.parquet"
    generate_catalog(catalog, listings, seed=11, days=120)
    generate_catalog(later, batch, seed=12, start=date(2026, 5, 1), days=45)
    prepared = prepare(catalog, CONFIG, None)
    models = fit_models(prepared, CONFIG, progress=False)
    evaluation = evaluate_models(prepared.valid, models.booster, models.logistic, CONFIG)
    variants = fit_variants(catalog, prepared, CONFIG, fit_final_lightgbm, progress=False)
    served = export_bundle(folder / "served", prepared, models.booster, evaluation, CONFIG,
                           "test", variants)
    champion = export_bundle(folder / "champion", prepared, models.booster, evaluation, CONFIG,
                             "test")
    return World(catalog, later, served, champion, prepared, variants)
