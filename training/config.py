"""Training configuration: a frozen dataclass loaded from TOML, checked on creation."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from features.registry import OPTIONAL_INPUTS

# the optional input groups (features.registry.OPTIONAL_INPUTS), in their declared order
OPTIONAL_GROUP_NAMES: tuple[str, ...] = tuple(group for group, _ in OPTIONAL_INPUTS)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; logged whole as MLflow params and as train.toml."""

    # time split: [train window] [label delay gap] [validation window]
    valid_days: int = 30
    label_delay_days: int = 14
    # how officers work: daily review capacity, and the precision a flag must have
    review_capacity: int = 200
    target_precision: float = 0.9
    # LightGBM
    num_leaves: int = 31
    max_depth: int = 8  # bounds TreeSHAP reasons' cost (depth squared) and inference time
    learning_rate: float = 0.05
    num_boost_round: int = 150  # a cap: early stopping picks the count (136 on a 1M catalog)
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    scale_pos_weight: float = 0.0  # 0 = sqrt(negatives / positives) of the training labels
    # listings younger than 30 days have no sales history when scored: hide it on this share
    # of training rows so the model learns to score both new and established listings; and
    # hide each other optional input on a small share, so a batch without it still scores well
    after_sale_mask_share: float = 0.5
    optional_mask_share: float = 0.05
    all_optional_mask_share: float = 0.05  # rows with every optional input hidden at once
    # schema variants: one extra model per entry, trained with those optional input groups
    # absent (training.variants); scoring picks the one that fits a batch's columns. Default:
    # the platform schema without contact, images, description and list price, and required-only
    schema_variants: tuple[tuple[str, ...], ...] = (
        ("images", "seller_contact_hash", "description", "list_price"),
        OPTIONAL_GROUP_NAMES,
    )
    # early stopping uses the newest share of the training window's labelled rows (the
    # validation window stays untouched by model selection), then the model is refitted on all
    early_stopping_share: float = 0.2
    seed: int = 42
    threads: int = 2
    # refuse to train when validation rejects more than this share of the catalog's rows
    max_reject_share: float = 0.05
    # features and registry
    currency: str = "EUR"
    max_image_sellers: int = 25
    model_name: str = "knockoff"

    def __post_init__(self) -> None:
        # TOML gives lists: keep the frozen config hashable and comparable
        object.__setattr__(self, "schema_variants",
                           tuple(tuple(v) for v in self.schema_variants))
        problems = _schema_problems(self.schema_variants)
        if self.valid_days < 1:
            problems.append("valid_days must be >= 1")
        if self.label_delay_days < 0:
            problems.append("label_delay_days must be >= 0")
        if self.review_capacity < 1:
            problems.append("review_capacity must be >= 1")
        if not 0.0 < self.target_precision < 1.0:
            problems.append("target_precision must be between 0 and 1")
        if self.max_depth == 0 or self.max_depth < -1:
            problems.append("max_depth must be >= 1 (or -1 for no limit)")
        if self.num_leaves < 2 or self.num_boost_round < 1:
            problems.append("num_leaves must be >= 2 and num_boost_round >= 1")
        if not 0.0 < self.learning_rate <= 1.0:
            problems.append("learning_rate must be in (0, 1]")
        for name in ("feature_fraction", "bagging_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in (0, 1]")
        if self.scale_pos_weight < 0 or self.lambda_l2 < 0:
            problems.append("scale_pos_weight and lambda_l2 must be >= 0")
        for name in ("after_sale_mask_share", "optional_mask_share", "all_optional_mask_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        if not 0.0 < self.early_stopping_share < 1.0:
            problems.append("early_stopping_share must be between 0 and 1")
        if self.threads < 1:
            problems.append("threads must be >= 1")
        if not 0.0 <= self.max_reject_share <= 1.0:
            problems.append("max_reject_share must be between 0 and 1")
        if len(self.currency) != 3:
            problems.append("currency must be an ISO 4217 code such as EUR")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a config file; unknown keys are an error (a typo should not pass silently)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
        data = data.get("train", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def replace(self, **changes: object) -> TrainConfig:
        return type(self)(**{**asdict(self), **changes})

    def to_toml(self) -> str:
        lines = ["[train]"]
        for key, value in asdict(self).items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, tuple):
                lines.append(f"{key} = {json.dumps(value)}")
            elif isinstance(value, bool):
                lines.append(f"{key} = {str(value).lower()}")
            else:
                lines.append(f"{key} = {value!r}")
        return "\n".join(lines) + "\n"

    def params(self) -> dict[str, object]:
        return asdict(self)


def _schema_problems(variants: tuple[tuple[str, ...], ...]) -> list[str]:
    """Each schema variant names known optional groups, at least one, each variant once."""
    problems = []
    for groups in variants:
        unknown = sorted(set(groups) - set(OPTIONAL_GROUP_NAMES))
        if unknown or not groups:
            problems.append(f"schema_variants: {list(groups)} must name optional input groups "
                            f"({', '.join(OPTIONAL_GROUP_NAMES)})")
    if len({frozenset(g) for g in variants}) != len(variants):
        problems.append("schema_variants: a variant is listed twice")
    return problems
