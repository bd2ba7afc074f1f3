"""Schema-aware scoring: a bundle's model variants, one per optional-column set (schema).

A platform that never sends some optional inputs is scored best by a model trained without
them (issue 12). Training (`training.variants`) writes, besides the main model, one complete
bundle per configured schema into `variants/<key>/` of the main bundle (sealed by its
digests). A schema is the set of optional input groups (`features.registry.OPTIONAL_INPUTS`)
that are absent; its key names them (`full`, `required_only`, `no_description+list_price`).

Scoring picks, per file of a batch, the variant whose schema is the largest subset of the
columns the file has (a column is absent when the file lacks it or it is null on every row; the
after-sale columns, null for every listing younger than 30 days, only when the file lacks them),
nulls the inputs that variant was trained without (so features, aggregates included, are
computed as in its training), and scores each row with its file's variant. With every optional
column present the main model scores, exactly as a bundle without variants does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.catalog import Catalog
from features.contract import LISTING_COLUMNS
from features.registry import OPTIONAL_INPUTS
from features.rules import typed
from features.sources import scan_file
from serving.bundle import Bundle, BundleError
from serving.explain import PathContributions

VARIANTS_DIR = "variants"
SCHEMA_KEY = "schema"  # in a variant's feature_spec.json: {"key", "absent_groups"}
SCHEMA_COLUMN = "_schema"  # per row: the key of the variant that scores it
FULL = "full"
REQUIRED_ONLY = "required_only"

GROUPS: tuple[str, ...] = tuple(group for group, _ in OPTIONAL_INPUTS)
GROUP_COLUMNS: dict[str, tuple[str, ...]] = dict(OPTIONAL_INPUTS)
# null for every listing younger than 30 days, i.e. on every row of a batch of new listings,
# which the main model is trained for: absent only when a file does not have the columns
ROW_LEVEL_GROUPS: tuple[str, ...] = ("after_sale",)
_DTYPES = {c.name: c.dtype for c in LISTING_COLUMNS}


def schema_key(absent: Iterable[str]) -> str:
    """`full`, `required_only`, or `no_` + the absent groups in their declared order."""
    groups = [g for g in GROUPS if g in set(absent)]
    if not groups:
        return FULL
    if len(groups) == len(GROUPS):
        return REQUIRED_ONLY
    return "no_" + "+".join(groups)


def absent_columns(groups: Iterable[str]) -> tuple[str, ...]:
    """The catalog columns of these optional groups."""
    return tuple(c for g in GROUPS if g in set(groups) for c in GROUP_COLUMNS[g])


def absent_groups(columns: Iterable[str]) -> frozenset[str]:
    """The groups a batch cannot feed: any of their input columns is absent."""
    missing = set(columns)
    return frozenset(g for g in GROUPS if missing & set(GROUP_COLUMNS[g]))


def hide_inputs(rows: pl.LazyFrame, groups: Iterable[str]) -> pl.LazyFrame:
    """Rows with these groups' input columns null, as in a catalog that lacks them."""
    return rows.with_columns(pl.lit(None, _DTYPES[c]).alias(c) for c in absent_columns(groups))


@dataclass(frozen=True, eq=False)
class Variant:
    """One model of a bundle and the optional groups it was trained without."""

    absent: frozenset[str]
    bundle: Bundle
    explain: PathContributions

    @property
    def key(self) -> str:
        return schema_key(self.absent)


def _load_variant(folder: Path, features: tuple[str, ...], threads: int) -> Variant:
    """A variant bundle, verified like the main one (digests, threshold, ONNX parity)."""
    bundle = Bundle.load(folder, threads=threads)
    schema = bundle.spec.get(SCHEMA_KEY)
    groups = schema.get("absent_groups") if isinstance(schema, dict) else None
    if not (isinstance(groups, list) and groups and set(groups) <= set(GROUPS)):
        raise BundleError(f"{folder}: its spec lacks a valid '{SCHEMA_KEY}' (absent_groups "
                          f"among {', '.join(GROUPS)})")
    if schema_key(groups) != folder.name:
        raise BundleError(f"{folder}: schema {schema_key(groups)!r} does not match the folder")
    if bundle.features != features:
        raise BundleError(f"{folder}: its features differ from the main model's")
    return Variant(frozenset(groups), bundle, PathContributions.from_trees(bundle.trees))


@dataclass(frozen=True, eq=False)
class Variants:
    """The main model (schema `full`) and the bundle's schema variants."""

    items: tuple[Variant, ...]

    @classmethod
    def load(cls, main: Bundle, explain: PathContributions) -> Variants:
        """Every variant under `main`'s `variants/` folder, each verified at load."""
        root = main.path / VARIANTS_DIR
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        loaded = [_load_variant(f, main.features, main.threads) for f in folders]
        return cls((Variant(frozenset(), main, explain), *loaded))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(v.key for v in self.items)

    def get(self, key: str) -> Variant:
        return next(v for v in self.items if v.key == key)

    def pick(self, absent: frozenset[str]) -> Variant:
        """The variant trained on the most optional groups among those the batch has (its
        absent groups include every group the batch lacks); the main model when none fits."""
        fitting = [v for v in self.items if v.absent >= absent]
        if not fitting:
            return self.items[0]
        return min(fitting, key=lambda v: (len(v.absent), v.key))


_ROW_LEVEL = frozenset(absent_columns(ROW_LEVEL_GROUPS))


def file_schemas(files: tuple[Path, ...], fmt: str) -> list[frozenset[str]]:
    """The optional groups each file cannot feed (a column missing, or null on every row
    outside ROW_LEVEL_GROUPS), in one streaming pass over the optional columns of every file."""
    optional = absent_columns(GROUPS)
    scans = [scan_file(f, fmt) for f in files]
    sent = [set(lf.collect_schema().names()) for lf in scans]
    found = pl.collect_all([typed(lf, f, i, ()).select(
        pl.col(c).is_not_null().any() for c in optional)
        for i, (f, lf) in enumerate(zip(files, scans, strict=True))], engine="streaming")
    return [groups_not_fed({c: bool(frame[c].item()) for c in optional if c in names})
            for names, frame in zip(sent, found, strict=True)]


def groups_not_fed(filled: dict[str, bool]) -> frozenset[str]:
    """The optional groups a file cannot feed, from its optional columns (keys) and whether any
    row fills each (values): a column counts as absent when the file lacks it or, outside
    ROW_LEVEL_GROUPS, no row fills it. The one rule both engines pick variants by."""
    return absent_groups(c for c in absent_columns(GROUPS)
                         if c not in filled or (c not in _ROW_LEVEL and not filled[c]))


def rows_schema(rows: pl.LazyFrame) -> frozenset[str]:
    """The optional groups validated rows cannot feed (columns null on every row, outside
    ROW_LEVEL_GROUPS: rows in memory do not say which columns their file had)."""
    optional = [c for c in absent_columns(GROUPS) if c not in _ROW_LEVEL]
    found = rows.select(pl.col(c).is_not_null().any() for c in optional).collect()
    return absent_groups(c for c in optional if not found[c].item())


def _file_keys(files: tuple[Path, ...], fmt: str, keys: list[str]) -> pl.LazyFrame:
    """listing_id -> the schema key of the first file holding it (the row validation keeps)."""
    ids = [typed(scan_file(f, fmt), f, i, ()).select(
        "listing_id", pl.lit(key).alias(SCHEMA_COLUMN))
        for i, (f, key) in enumerate(zip(files, keys, strict=True))]
    return pl.concat(ids).unique("listing_id", keep="first", maintain_order=True)


@dataclass(frozen=True)
class SchemaPlan:
    """Validated rows ready to score: each row carries its variant's key in SCHEMA_COLUMN and
    the inputs that variant was trained without are null."""

    rows: pl.LazyFrame
    by_file: dict[str, str]
    thresholds: dict[str, float]  # of each variant used

    def summary(self) -> dict[str, object]:
        """`schema`: the variant that scored the batch (`mixed` when files differ) and its
        `threshold`; which variant scored each file, and each one's threshold."""
        keys = set(self.by_file.values())
        one = keys.pop() if len(keys) == 1 else None
        return {"schema": one or "mixed", "schema_by_file": self.by_file,
                "schema_thresholds": self.thresholds,
                **({"threshold": self.thresholds[one]} if one else {})}


def _hidden(rows: pl.LazyFrame, variants: list[Variant]) -> pl.LazyFrame:
    """Null each row's inputs its variant was trained without (one variant: plain nulls)."""
    if len(variants) == 1:
        return hide_inputs(rows, variants[0].absent)
    exprs = []
    for group in GROUPS:
        lacking = [v.key for v in variants if group in v.absent]
        if lacking:
            hide = pl.col(SCHEMA_COLUMN).is_in(lacking)
            exprs += [pl.when(hide).then(None).otherwise(pl.col(c)).alias(c)
                      for c in GROUP_COLUMNS[group]]
    return rows.with_columns(exprs)


def plan_catalog(catalog: Catalog, variants: Variants) -> SchemaPlan:
    """Pick each file's variant and prepare the catalog's rows for it (see the module doc)."""
    picked = [variants.pick(a) for a in file_schemas(catalog.files, catalog.format)]
    keys = [v.key for v in picked]
    by_file = {str(f): k for f, k in zip(catalog.files, keys, strict=True)}
    distinct = list({v.key: v for v in picked}.values())
    if len(distinct) == 1:
        rows = catalog.rows.with_columns(pl.lit(keys[0]).alias(SCHEMA_COLUMN))
    else:  # files of several schemas: each row gets its file's variant
        rows = catalog.rows.join(_file_keys(catalog.files, catalog.format, keys), on="listing_id",
                                 how="left", maintain_order="left")
    thresholds = {v.key: v.bundle.threshold for v in distinct}
    return SchemaPlan(_hidden(rows, distinct), by_file, thresholds)


def plan_rows(rows: pl.LazyFrame, variants: Variants) -> SchemaPlan:
    """The same for rows in memory, taken as one file."""
    variant = variants.pick(rows_schema(rows))
    rows = rows.with_columns(pl.lit(variant.key).alias(SCHEMA_COLUMN))
    return SchemaPlan(_hidden(rows, [variant]), {"rows": variant.key},
                      {variant.key: variant.bundle.threshold})


def split_scores(features: pl.DataFrame,
                 score: Callable[[str, pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """Score a feature table whose rows carry SCHEMA_COLUMN, each part by `score(key, part)`,
    and return the scores in the table's order."""
    keys = features[SCHEMA_COLUMN].unique(maintain_order=True).to_list()
    if len(keys) == 1:
        return score(keys[0], features)
    indexed = features.with_row_index("_row")
    parts = []
    for key in keys:
        part = indexed.filter(pl.col(SCHEMA_COLUMN) == key)
        parts.append(score(key, part.drop("_row")).with_columns(part["_row"]))
    return pl.concat(parts).sort("_row").drop("_row")
