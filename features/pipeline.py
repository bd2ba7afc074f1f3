"""Listing features: small named functions, fitted state, and the one `build_features` entry point.

Families: price relative to the brand's usual level, text (copy words, typosquats), images,
seller behaviour over the whole batch, the seller network, logistics/after-sale, and brand risk
learned from labels. Stateless features are `pl.Expr` functions; stateful ones are a
`fit_*`/`apply_*` pair around a frozen dataclass; batch-level ones (seller, image, network) are
aggregated over the whole input once (`batch_aggregates`) and joined, so a batch scored in chunks
gets the same features as scored whole.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.catalog import repeated_values
from features.contract import LABEL

STATE_VERSION = 1


class StateError(ValueError):
    """A feature state folder that cannot be used (missing, other version)."""
LOW_PRICE_RATIO = 0.5  # "far below the brand's usual price"
PARTITION_ROWS = 5_000_000  # rows per pass of the whole-batch seller and image group-bys
DEFAULT_CURRENCY = "EUR"

# Words sellers use to admit an imitation, in several languages (matched on word boundaries).
COPY_WORDS = (
    "replica", "replicas", "réplica", "réplicas", "replika", "réplique", "kopie", "copia",
    "imitación", "imitacion", "imitazione", "imitation", "nachbildung", "nachgemacht",
    "falsificación", "contrefaçon", "podróbka", "podrobka", "fake", "knockoff", "knock off",
    "super copy", "supercopy", "first copy", "master copy", "high copy", "mirror quality",
    "mirror grade", "oem quality", "unbranded original", "копия", "реплика", "подделка",
)
COPY_WORDS_RE = (
    r"\b(?:" + "|".join(w.replace(" ", r"\s+") for w in COPY_WORDS) + r")\b"
    r"|\baaa(?:\+|\b)|(?:^|[^\d])1\s?:\s?1(?:[^\d]|$)|高仿|复刻|a货"
)
PUNCT_RE = r"[\p{P}\p{S}]+"
# Innocent look-alike words that genuine accessories and homages use.
LOOKALIKE_RE = r"\b(?:style|inspired|compatible|for use with|case for|alike|homage)\b"

HOMOGLYPHS = {
    "o": "0о", "0": "o", "l": "1i", "i": "1lі", "1": "li", "s": "5", "e": "3е", "a": "4а",
    "c": "с", "p": "р", "x": "х", "m": ("rn",), "w": ("vv",), "d": ("cl",), "b": "6", "g": "9",
}
KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij",
    "i": "uok", "o": "ipl", "p": "ol", "a": "qsz", "s": "adw", "d": "sfe", "f": "dgr",
    "g": "fht", "h": "gjy", "j": "hku", "k": "jli", "l": "ko", "z": "xa", "x": "zcs",
    "c": "xvd", "v": "cbf", "b": "vng", "n": "bmh", "m": "nj",
}


# ------------------------------------------------------------------ stateless features

def normalized_text(col: str) -> pl.Expr:
    """Lower-case text with punctuation and symbols as spaces, padded by spaces, so that
    " word " patterns match whole words."""
    body = pl.col(col).fill_null("").str.to_lowercase().str.replace_all(PUNCT_RE, " ")
    return pl.concat_str([pl.lit(" "), body, pl.lit(" ")])


def title_copy_words() -> pl.Expr:
    """Count of words sellers use to admit an imitation ("replica", "1:1", "AAA", ...)."""
    return pl.col("title").str.to_lowercase().str.count_matches(COPY_WORDS_RE).alias(
        "title_copy_words"
    )


def description_copy_words() -> pl.Expr:
    """Copy words in the description; null when there is no description."""
    return pl.col("description").str.to_lowercase().str.count_matches(COPY_WORDS_RE).alias(
        "description_copy_words"
    )


def title_lookalike_words() -> pl.Expr:
    """Innocent look-alike words ("style", "compatible with") that genuine listings use."""
    return pl.col("title").str.to_lowercase().str.count_matches(LOOKALIKE_RE).alias(
        "title_lookalike_words"
    )


def brand_missing_from_title() -> pl.Expr:
    """1 when a declared brand does not appear in the title; null when unbranded."""
    brand = pl.concat_str([pl.lit(" "), _normalize(pl.col("brand")), pl.lit(" ")])
    present = normalized_text("title").str.contains(brand, literal=True)
    return pl.when(pl.col("brand").is_not_null()).then(~present).alias("brand_missing_from_title")


def title_upper_ratio() -> pl.Expr:
    """Share of the title's letters in capitals (shouting)."""
    letters = pl.col("title").str.len_chars() - pl.col("title").str.count_matches(r"\P{L}")
    upper = pl.col("title").str.count_matches(r"\p{Lu}")
    return pl.when(letters > 0).then(upper / letters).otherwise(0.0).alias("title_upper_ratio")


def title_symbol_ratio() -> pl.Expr:
    """Share of the title's characters that are symbols ("!!!", "$$$", "★")."""
    symbols = pl.col("title").str.count_matches(r"[^\p{L}\p{N}\s]")
    return (symbols / pl.col("title").str.len_chars()).alias("title_symbol_ratio")


def description_length() -> pl.Expr:
    """Characters in the description; null when there is none."""
    return pl.col("description").str.len_chars().alias("description_length")


def discount_depth() -> pl.Expr:
    """1 - price / list_price: how deep the shown discount is (negative = above list)."""
    return (1.0 - pl.col("price") / pl.col("list_price")).alias("discount_depth")


def image_count() -> pl.Expr:
    """Images on the listing, from `image_count` or else the number of image hashes."""
    return pl.coalesce(pl.col("image_count"), pl.col("image_hashes").list.len()).alias(
        "image_count"
    )


def seller_account_age_days() -> pl.Expr:
    """Age of the seller account when the listing went live, in days."""
    age = pl.col("listed_at") - pl.col("seller_registered_at")
    return (age.dt.total_seconds() / 86_400.0).alias("seller_account_age_days")


def ships_from_mismatch() -> pl.Expr:
    """1 when the item ships from another country than the seller's registration."""
    return (
        pl.col("ships_from").str.to_uppercase() != pl.col("seller_country").str.to_uppercase()
    ).alias("ships_from_mismatch")


def _per_unit_sold(col: str, name: str) -> pl.Expr:
    sold = pl.col("units_sold_30d")
    return pl.when(sold > 0).then(pl.col(col) / sold).alias(name)


def return_rate() -> pl.Expr:
    """Returns per unit sold in 30 days; null for listings too young or without sales."""
    return _per_unit_sold("returns_30d", "return_rate")


def complaint_rate() -> pl.Expr:
    """Authenticity complaints per unit sold in 30 days; null when too young or unsold."""
    return _per_unit_sold("complaints_30d", "complaint_rate")


STATELESS = (
    title_copy_words, description_copy_words, title_lookalike_words, brand_missing_from_title,
    title_upper_ratio, title_symbol_ratio, description_length, discount_depth, image_count,
    seller_account_age_days, ships_from_mismatch, return_rate, complaint_rate,
)


def _normalize(expr: pl.Expr) -> pl.Expr:
    """A brand name as it appears in normalized text: lower case, single spaces."""
    return expr.str.to_lowercase().str.replace_all(r"[\p{P}\p{S}\s]+", " ").str.strip_chars()


# ------------------------------------------------------------------ price levels (stateful)

@dataclass(frozen=True, eq=False)
class BrandPrices:
    """Median genuine-looking price per brand x category, with brand, category, global fallbacks."""

    brand_category: pl.DataFrame
    brand: pl.DataFrame
    category: pl.DataFrame
    overall: float
    min_listings: int


def fit_brand_prices(train: pl.LazyFrame, min_listings: int = 5) -> BrandPrices:
    """Price levels from rows not confirmed fake (fakes would drag the level down)."""
    genuine = train.filter(pl.col(LABEL).is_null() | ~pl.col(LABEL)).select(
        "brand", "category", "price"
    )

    def level(keys: list[str], name: str) -> pl.DataFrame:
        return (
            genuine.drop_nulls(keys)
            .group_by(keys)
            .agg(pl.col("price").median().alias(name), pl.len().alias("_n"))
            .filter(pl.col("_n") >= min_listings)
            .drop("_n")
            .sort(keys)
            .collect(engine="streaming")
        )

    overall = genuine.select(pl.col("price").median()).collect(engine="streaming").item()
    return BrandPrices(
        level(["brand", "category"], "_level_bc"),
        level(["brand"], "_level_b"),
        level(["category"], "_level_c"),
        float(overall if overall is not None else 1.0),
        min_listings,
    )


def apply_brand_prices(lf: pl.LazyFrame, state: BrandPrices) -> pl.LazyFrame:
    """price_brand_ratio, price_category_ratio, list_price_brand_ratio; unseen keys fall back."""
    joined = (
        lf.join(state.brand_category.lazy(), on=["brand", "category"], how="left",
                maintain_order="left")
        .join(state.brand.lazy(), on="brand", how="left", maintain_order="left")
        .join(state.category.lazy(), on="category", how="left", maintain_order="left")
    )
    category_level = pl.coalesce("_level_c", pl.lit(state.overall))
    brand_level = pl.coalesce("_level_bc", "_level_b", category_level)
    return joined.with_columns(
        (pl.col("price") / brand_level).alias("price_brand_ratio"),
        (pl.col("price") / category_level).alias("price_category_ratio"),
        (pl.col("list_price") / brand_level).alias("list_price_brand_ratio"),
    ).drop("_level_bc", "_level_b", "_level_c")


# ------------------------------------------------------------------ brand lexicon (stateful)

@dataclass(frozen=True, eq=False)
class BrandLexicon:
    """Known brands and their typosquat variants, each with its similarity to the brand."""

    known: pl.DataFrame  # brand_norm, listings
    variants: pl.DataFrame  # pattern (" variant "), brand_norm, similarity


def typo_variants(name: str) -> set[str]:
    """Omissions, transpositions, repetitions, homoglyphs and adjacent-key slips of a name."""
    out: set[str] = set()
    for i, ch in enumerate(name):
        out.add(name[:i] + name[i + 1 :])
        out.add(name[:i] + ch + name[i:])
        if i + 1 < len(name):
            out.add(name[:i] + name[i + 1] + ch + name[i + 2 :])
        for sub in HOMOGLYPHS.get(ch, ()):
            out.add(name[:i] + sub + name[i + 1 :])
        if len(name) >= 6:
            for sub in KEYBOARD.get(ch, ""):
                out.add(name[:i] + sub + name[i + 1 :])
    if "rn" in name:
        out.add(name.replace("rn", "m"))
    return {v for v in out if len(v.replace(" ", "")) >= 3 and v != name and "  " not in v}


def fit_brand_lexicon(
    train: pl.LazyFrame, min_listings: int = 20, common_word_share: float = 0.002
) -> BrandLexicon:
    """Brands declared on at least `min_listings` rows are known, unless they look like a typo
    of a far more common brand; variants frequent in ordinary titles are dropped (real words)."""
    counts = (
        train.select(_normalize(pl.col("brand")).alias("brand_norm"))
        .drop_nulls()
        .group_by("brand_norm")
        .agg(pl.len().alias("listings"))
        .filter(pl.col("listings") >= min_listings, pl.col("brand_norm").str.len_chars() >= 3)
        .sort(["listings", "brand_norm"], descending=[True, False])
        .collect(engine="streaming")
    )
    known: list[tuple[str, int]] = []
    for brand, n in counts.iter_rows():
        match = process.extractOne(brand, [k for k, _ in known], scorer=fuzz.ratio,
                                   score_cutoff=80) if known else None
        if match is None or known[match[2]][1] < 10 * n:
            known.append((brand, n))
    lexicon = lexicon_from_brands(known)
    variants = _drop_common_words(train, lexicon.variants, common_word_share)
    return BrandLexicon(lexicon.known, variants)


def lexicon_from_brands(known: list[tuple[str, int]]) -> BrandLexicon:
    """The lexicon of (normalized brand, listings) pairs: every variant that is not itself a
    known brand, with its rapidfuzz similarity to the brand it imitates (best if several)."""
    names = {k for k, _ in known}
    rows = [
        (f" {v} ", b, fuzz.ratio(v, b) / 100.0)
        for b in sorted(names) for v in typo_variants(b) if v not in names
    ]
    variants = (
        pl.DataFrame(rows, schema={"pattern": pl.String, "brand_norm": pl.String,
                                   "similarity": pl.Float64}, orient="row")
        .sort(["similarity", "pattern"], descending=[True, False])
        .unique("pattern", keep="first", maintain_order=True)
        .sort("pattern")
    )
    return BrandLexicon(
        pl.DataFrame(known, schema={"brand_norm": pl.String, "listings": pl.Int64}, orient="row"),
        variants,
    )


def _drop_common_words(
    train: pl.LazyFrame, variants: pl.DataFrame, share: float
) -> pl.DataFrame:
    if variants.is_empty():
        return variants
    patterns = variants["pattern"].to_list()
    n_rows, hits = pl.collect_all(
        [
            train.select(pl.len()),
            train.select(
                normalized_text("title").str.extract_many(patterns, overlapping=True)
                .list.unique().alias("p")
            ).explode("p").drop_nulls().group_by("p").agg(pl.len().alias("n")),
        ],
        engine="streaming",
    )
    # a real word shows up in many titles; a typosquat in a handful (never fewer than 20 hits)
    common = hits.filter(pl.col("n") > max(share * n_rows.item(), 20))["p"]
    return variants.filter(~pl.col("pattern").is_in(common.implode()))


def apply_brand_lexicon(lf: pl.LazyFrame, state: BrandLexicon) -> pl.LazyFrame:
    """brand_known, brand_typosquat (declared brand) and title_typosquat (title tokens)."""
    return lf.with_columns(brand_lexicon_features(state))


def brand_lexicon_features(state: BrandLexicon) -> list[pl.Expr]:
    """The lexicon's features as expressions (so they share work with the text features)."""
    patterns = state.variants["pattern"]
    similarity = state.variants["similarity"]
    known = state.known["brand_norm"]

    def squat(text: pl.Expr) -> pl.Expr:
        if patterns.is_empty():
            return pl.lit(0.0)
        found = text.str.extract_many(patterns.to_list(), overlapping=True)
        best = found.list.eval(
            pl.element().replace_strict(patterns, similarity, default=0.0)
        ).list.max()
        return best.fill_null(0.0)

    brand = _normalize(pl.col("brand"))
    return [
        pl.when(pl.col("brand").is_not_null()).then(brand.is_in(known.implode()))
        .alias("brand_known"),
        pl.when(pl.col("brand").is_not_null())
        .then(squat(pl.concat_str([pl.lit(" "), brand, pl.lit(" ")])))
        .alias("brand_typosquat"),
        squat(normalized_text("title")).alias("title_typosquat"),
    ]


# ------------------------------------------------------------------ brand risk (stateful, labels)

@dataclass(frozen=True, eq=False)
class BrandRisk:
    """Smoothed confirmed-fake share per brand, from labels older than the cutoff."""

    brand: pl.DataFrame
    prior: float
    smoothing: float
    label_cutoff: str | None  # ISO timestamp; labels at or after it were not used


def fit_brand_risk(
    train: pl.LazyFrame, label_cutoff: datetime | None, smoothing: float = 50.0
) -> BrandRisk:
    """Fit on labelled rows listed before `label_cutoff` (the delay gap keeps labels that
    arrive after inspection out), shrunk towards the overall labelled fake share."""
    labelled = train.filter(pl.col(LABEL).is_not_null())
    if label_cutoff is not None:
        labelled = labelled.filter(pl.col("listed_at") < label_cutoff)
    totals = labelled.select(
        pl.col(LABEL).sum().alias("fakes"), pl.len().alias("n")
    ).collect(engine="streaming")
    fakes, n = totals.row(0)
    prior = float(fakes / n) if n else 0.0
    per_brand = (
        labelled.drop_nulls("brand")
        .group_by("brand")
        .agg(pl.col(LABEL).sum().alias("fakes"), pl.len().alias("n"))
        .select(
            "brand",
            ((pl.col("fakes") + prior * smoothing) / (pl.col("n") + smoothing)).alias("_risk"),
        )
        .sort("brand")
        .collect(engine="streaming")
    )
    cutoff = None if label_cutoff is None else label_cutoff.isoformat()
    return BrandRisk(per_brand, prior, smoothing, cutoff)


def brand_risk_as_of(
    rows: pl.DataFrame, delay: timedelta, smoothing: float, fallback_prior: float
) -> pl.Series:
    """brand_risk for training rows without leakage: each row sees only the labels of rows
    listed more than `delay` before it (labels arrive after inspection), never its own.

    `rows` has brand, listed_at and the label; returns the feature in the same row order.
    Used for the training rows only: scoring uses the state fitted on the whole window."""
    history = (
        rows.filter(pl.col(LABEL).is_not_null())
        .select("brand", "listed_at", pl.col(LABEL).cast(pl.Int64).alias("_y"))
        .sort("listed_at")
        .with_columns(
            pl.col("_y").cum_sum().alias("_all_fakes"),
            pl.int_range(1, pl.len() + 1).alias("_all_n"),
        )
    )
    per_brand = history.drop_nulls("brand").with_columns(
        pl.col("_y").cum_sum().over("brand").alias("_fakes"),
        pl.int_range(1, pl.len() + 1).over("brand").alias("_n"),
    )
    asked = rows.select(
        pl.int_range(pl.len()).alias("_row"), "brand",
        (pl.col("listed_at") - delay).alias("_asof"),
    ).sort("_asof")
    seen = asked.join_asof(
        history.select("listed_at", "_all_fakes", "_all_n"), left_on="_asof",
        right_on="listed_at", strategy="backward",
    ).drop("listed_at").join_asof(
        per_brand.select("brand", "listed_at", "_fakes", "_n"), left_on="_asof",
        right_on="listed_at", by="brand", strategy="backward", check_sortedness=False,
    )
    prior = pl.when(pl.col("_all_n") > 0).then(pl.col("_all_fakes") / pl.col("_all_n")) \
        .otherwise(fallback_prior)
    risk = (pl.col("_fakes").fill_null(0) + prior * smoothing) / (
        pl.col("_n").fill_null(0) + smoothing)
    return seen.sort("_row").select(risk.alias("brand_risk"))["brand_risk"]


def apply_brand_risk(lf: pl.LazyFrame, state: BrandRisk) -> pl.LazyFrame:
    """brand_risk; unseen or missing brands get the prior."""
    return (
        lf.join(state.brand.lazy(), on="brand", how="left", maintain_order="left")
        .with_columns(pl.col("_risk").fill_null(state.prior).alias("brand_risk"))
        .drop("_risk")
    )


# ------------------------------------------------------------------ category codes (stateful)

@dataclass(frozen=True, eq=False)
class CategoryCodes:
    """Category -> number (by training frequency); saved with the model for ONNX."""

    codes: pl.DataFrame


def fit_category_codes(train: pl.LazyFrame) -> CategoryCodes:
    counts = (
        train.group_by("category").agg(pl.len().alias("n"))
        .sort(["n", "category"], descending=[True, False])
        .collect(engine="streaming")
    )
    return CategoryCodes(
        counts.select("category", pl.int_range(pl.len(), dtype=pl.Int64).alias("category_code"))
    )


def apply_category_codes(lf: pl.LazyFrame, state: CategoryCodes) -> pl.LazyFrame:
    """category_code; an unseen category is null (LightGBM's missing branch)."""
    return lf.join(state.codes.lazy(), on="category", how="left", maintain_order="left")


# ------------------------------------------------------------------ the fitted state

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


# ------------------------------------------------------------------ batch-level aggregates

@dataclass(frozen=True, eq=False)
class BatchAggregates:
    """Seller, image and contact aggregates over a whole batch, joined onto every chunk."""

    sellers: pl.DataFrame
    images: pl.DataFrame
    contacts: pl.DataFrame


def image_key() -> pl.Expr:
    """The main image hash as a 64-bit key (null without images): aggregating tens of millions
    of distinct images over 8-byte keys keeps the group-by small."""
    first = pl.col("image_hashes").list.first()
    return pl.when(first.is_not_null()).then(first.hash(seed=0)).alias("_image_key")


def batch_aggregates(lf: pl.LazyFrame, state: FeatureState) -> BatchAggregates:
    """Group-bys over the whole input, then seller clusters. Images and contacts used by one
    seller only are not kept (their counts are implied).

    The input is read once, into a narrow temporary Parquet file of the six columns the
    group-bys need; they all scan that file. (Polars runs each query of a `collect_all` from
    its own scan, so on a catalog every group-by would re-read and re-validate the batch: five
    passes, 44 s of 51 s for 10M listings.)"""
    with tempfile.TemporaryDirectory(prefix="knockoff-aggregates-") as tmp:
        narrow = Path(tmp) / "narrow.parquet"
        apply_brand_prices(
            lf.select("seller_id", "brand", "category", "price", "list_price", "listed_at",
                      "seller_contact_hash", image_key()),
            state.prices,
        ).select("seller_id", "brand", "listed_at", "seller_contact_hash", "_image_key",
                 "price_brand_ratio").sink_parquet(narrow, compression="lz4")
        return _aggregates(pl.scan_parquet(narrow), state)


def _aggregates(base: pl.LazyFrame, state: FeatureState) -> BatchAggregates:
    """The group-bys of `batch_aggregates` over its narrow file.

    Per-seller medians and distinct counts hold every row of a seller until the end, so the
    seller group-by is split into one pass per PARTITION_ROWS rows, each over the sellers whose
    id hashes to that part (the narrow file is cheap to re-read); likewise the images, by key."""
    rows = base.select(pl.len()).collect().item()
    parts = max(1, -(-rows // PARTITION_ROWS))
    seller_parts, image_parts = [], []
    for part in range(parts):
        sellers_here = pl.col("seller_id").hash(seed=1) % parts == part
        keys_here = pl.col("_image_key") % parts == part
        seller_parts.append(
            base.filter(sellers_here).group_by("seller_id").agg(
                pl.len().alias("seller_listings"),
                pl.col("brand").drop_nulls().n_unique().alias("seller_brands"),
                (pl.col("price_brand_ratio") < LOW_PRICE_RATIO).mean()
                .alias("seller_low_price_share"),
                pl.col("price_brand_ratio").median().alias("seller_median_price_ratio"),
                (
                    pl.len()
                    / ((pl.col("listed_at").max() - pl.col("listed_at").min())
                       .dt.total_seconds() / 86_400.0 + 1.0)
                ).alias("seller_listings_per_day"),
                pl.col("seller_contact_hash").drop_nulls().unique().alias("_contacts"),
            ).collect(engine="streaming")
        )
        keys = base.filter(keys_here).select("_image_key").collect(engine="streaming")
        shared = repeated_values(keys["_image_key"]).to_frame()
        del keys
        # Only an image on two or more listings can link sellers or brands: count distinct
        # sellers and brands on the rows of those images alone.
        image_parts.append(
            base.filter(keys_here).join(shared.lazy(), on="_image_key", how="semi")
            .group_by("_image_key").agg(
                pl.col("seller_id").hash(seed=0).n_unique().alias("main_image_sellers"),
                pl.col("brand").drop_nulls().hash(seed=0).n_unique().alias("main_image_brands"),
                pl.col("brand").is_null().any().alias("_unbranded_too"),
            ).filter(
                # the rest (one seller, one brand or none on every row) is implied by the row
                (pl.col("main_image_sellers") > 1) | (pl.col("main_image_brands") > 1)
                | ((pl.col("main_image_brands") == 1) & pl.col("_unbranded_too"))
            ).drop("_unbranded_too")
            .collect(engine="streaming")
        )
    sellers = pl.concat(seller_parts)
    contact_edges = (
        sellers.select("seller_id", pl.col("_contacts").alias("node")).explode("node")
        .drop_nulls()
    )
    sellers = sellers.drop("_contacts")
    images = pl.concat(image_parts)
    contacts = (
        contact_edges.group_by("node").agg(pl.len().alias("contact_accounts"))
        .filter(pl.col("contact_accounts") > 1)
        .select(pl.col("node").alias("seller_contact_hash"), "contact_accounts")
    )
    linking_images = images.filter(
        pl.col("main_image_sellers").is_between(2, state.max_image_sellers)
    ).select("_image_key")
    image_edges = (
        base.select("seller_id", "_image_key")
        .join(linking_images.lazy(), on="_image_key", how="semi")
        .unique()
        .select("seller_id", pl.col("_image_key").cast(pl.String).alias("node"))
        .collect(engine="streaming")
    )
    clusters = seller_clusters(
        pl.concat([
            contact_edges.with_columns(pl.lit("c").alias("kind")),
            image_edges.with_columns(pl.lit("i").alias("kind")),
        ])
    )
    sellers = sellers.join(clusters, on="seller_id", how="left").with_columns(
        pl.col("seller_cluster_size").fill_null(1)
    )
    return BatchAggregates(sellers, images, contacts)


def seller_clusters(edges: pl.DataFrame) -> pl.DataFrame:
    """Connected components of sellers linked through shared nodes (contact or image hashes).

    `edges` has seller_id, node, kind; returns seller_id, seller_cluster_size (sellers in the
    component). Sellers with no edges are absent (cluster of one)."""
    schema = {"seller_id": pl.String, "seller_cluster_size": pl.Int64}
    if edges.is_empty():
        return pl.DataFrame(schema=schema)
    edges = edges.with_columns(
        (pl.col("seller_id").rank("dense") - 1).cast(pl.Int64).alias("_s"),
        (pl.concat_str("kind", "node").rank("dense") - 1).cast(pl.Int64).alias("_n"),
    )
    n_sellers = int(edges["_s"].max()) + 1
    n_nodes = n_sellers + int(edges["_n"].max()) + 1
    rows = edges["_s"].to_numpy()
    cols = edges["_n"].to_numpy() + n_sellers
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    seller_label = pl.DataFrame({"_s": np.arange(n_sellers), "_c": labels[:n_sellers]})
    seller_label = seller_label.with_columns(
        pl.len().over("_c").cast(pl.Int64).alias("seller_cluster_size")
    )
    return (
        edges.select("seller_id", "_s").unique()
        .join(seller_label, on="_s")
        .select(list(schema))
    )


def apply_batch_aggregates(lf: pl.LazyFrame, agg: BatchAggregates) -> pl.LazyFrame:
    has_image = pl.col("_image_key").is_not_null()
    return (
        lf.with_columns(image_key())
        .join(agg.sellers.lazy(), on="seller_id", how="left", maintain_order="left")
        .join(agg.images.lazy(), on="_image_key", how="left", maintain_order="left")
        .join(agg.contacts.lazy(), on="seller_contact_hash", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("main_image_sellers", pl.when(has_image).then(1)),
            pl.coalesce("main_image_brands",
                        pl.when(has_image).then(pl.col("brand").is_not_null().cast(pl.UInt32))),
            pl.coalesce("contact_accounts",
                        pl.when(pl.col("seller_contact_hash").is_not_null()).then(1)),
        )
    )


# ------------------------------------------------------------------ the one entry point

FEATURE_COLUMNS: tuple[str, ...] = (
    # price
    "price_brand_ratio", "price_category_ratio", "discount_depth", "list_price_brand_ratio",
    # text
    "title_copy_words", "description_copy_words", "title_lookalike_words", "brand_known",
    "brand_typosquat", "title_typosquat", "brand_missing_from_title", "title_upper_ratio",
    "title_symbol_ratio", "description_length",
    # images
    "image_count", "main_image_sellers", "main_image_brands",
    # seller
    "seller_account_age_days", "seller_rating", "seller_review_count", "seller_verified",
    "seller_listings", "seller_brands", "seller_low_price_share", "seller_median_price_ratio",
    "seller_listings_per_day",
    # network
    "contact_accounts", "seller_cluster_size",
    # logistics and after-sale
    "ships_from_mismatch", "return_rate", "complaint_rate", "complaints_30d",
    # learned from labels, and the category as a number
    "brand_risk", "category_code",
)
ID_COLUMNS: tuple[str, ...] = ("listing_id", "seller_id")


def build_features(
    lf: pl.LazyFrame,
    state: FeatureState,
    *,
    aggregates: BatchAggregates | None = None,
    keep: tuple[str, ...] = ID_COLUMNS,
) -> pl.LazyFrame:
    """The feature table for validated rows: `keep` columns, then FEATURE_COLUMNS as Float32.

    Seller, image and network features come from `aggregates` over the whole batch; when not
    given they are computed from `lf` itself (one streaming pass). Pass the whole batch's
    aggregates when `lf` is a chunk of a larger batch."""
    if aggregates is None:
        aggregates = batch_aggregates(lf, state)
    rows = lf.with_columns(*(f() for f in STATELESS), *brand_lexicon_features(state.lexicon))
    rows = apply_brand_prices(rows, state.prices)
    rows = apply_brand_risk(rows, state.risk)
    rows = apply_category_codes(rows, state.categories)
    rows = apply_batch_aggregates(rows, aggregates)
    return rows.select(
        *keep, *(pl.col(c).cast(pl.Float32) for c in FEATURE_COLUMNS)
    )
