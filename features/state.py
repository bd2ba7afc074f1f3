"""The fitted feature state: everything `build_features` learned from training rows (price
levels, brand lexicon, brand risk, category codes, the currency and the shared-image limit).
`fit_state` fits it; `save`/`load` write it as Parquet tables plus `state.json` (no pickle), the
`feature_state/` folder of a model bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.fitted import (
    BrandPrices,
    BrandRisk,
    CategoryCodes,
    fit_brand_prices,
    fit_brand_risk,
    fit_category_codes,
)
from features.lexicon import BrandLexicon, fit_brand_lexicon

STATE_VERSION = 1
DEFAULT_CURRENCY = "EUR"


class StateError(ValueError):
    """A feature state folder that cannot be used (missing, other version)."""


@dataclass(frozen=True, eq=False)
class FeatureState:
    """Everything `build_features` learned from training data; saved as Parquet + JSON."""

    prices: BrandPrices
    lexicon: BrandLexicon
    risk: BrandRisk
    categories: CategoryCodes
    currency: str
    max_image_sellers: int  # shared main images used to link sellers (official photos excluded)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        scalars: dict[str, object] = {"version": STATE_VERSION}
        for f in fields(self):
            part = getattr(self, f.name)
            if not hasattr(part, "__dataclass_fields__"):
                scalars[f.name] = part
                continue
            for g in fields(part):
                value = getattr(part, g.name)
                if isinstance(value, pl.DataFrame):
                    value.write_parquet(folder / f"{f.name}.{g.name}.parquet")
                else:
                    scalars[f"{f.name}.{g.name}"] = value
        (folder / "state.json").write_text(json.dumps(scalars, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureState:
        folder = Path(folder)
        meta_path = folder / "state.json"
        if not meta_path.exists():
            raise StateError(f"{folder}: not a feature state folder (no state.json)")
        scalars = json.loads(meta_path.read_text())
        if scalars.get("version") != STATE_VERSION:
            raise StateError(f"{folder}: feature state version {scalars.get('version')} is not "
                             f"{STATE_VERSION}; refit it with this version of Knockoff")
        parts: dict[str, object] = {}
        for name, part_cls in (("prices", BrandPrices), ("lexicon", BrandLexicon),
                               ("risk", BrandRisk), ("categories", CategoryCodes)):
            values = {}
            for g in fields(part_cls):
                path = folder / f"{name}.{g.name}.parquet"
                values[g.name] = (
                    pl.read_parquet(path) if path.exists() else scalars[f"{name}.{g.name}"]
                )
            parts[name] = part_cls(**values)
        return cls(**parts, currency=scalars["currency"],  # type: ignore[arg-type]
                   max_image_sellers=scalars["max_image_sellers"])


def fit_state(
    train: pl.LazyFrame,
    *,
    label_cutoff: datetime | None = None,
    label_delay: timedelta = timedelta(days=14),
    currency: str = DEFAULT_CURRENCY,
    max_image_sellers: int = 25,
) -> FeatureState:
    """Fit every stateful feature on the training rows. Labels used for brand risk stop at
    `label_cutoff` (default: the newest listing minus `label_delay`)."""
    if label_cutoff is None:
        newest = train.select(pl.col("listed_at").max()).collect(engine="streaming").item()
        label_cutoff = newest - label_delay if newest is not None else None
    return FeatureState(
        prices=fit_brand_prices(train),
        lexicon=fit_brand_lexicon(train),
        risk=fit_brand_risk(train, label_cutoff),
        categories=fit_category_codes(train),
        currency=currency,
        max_image_sellers=max_image_sellers,
    )
