"""A plain pandas 3 reference of the 34 listing features, for `bench/features.py`.

Written the way a competent pandas user would: default dtypes (Arrow-backed `str`), vectorised
`.str` methods, `groupby`/`merge`/`map`, scipy connected components for the seller network.
It reads the same fitted state as the Polars pipeline (the state folder's Parquet tables and
`state.json`) and applies the same row validation as `read_catalog` for Parquet input, so that
both compute the same table from the same file. Only regexes and constants come from
`features/`; nothing here calls Polars.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.aggregates import LOW_PRICE_RATIO
from features.registry import FEATURE_COLUMNS
from features.text import COPY_WORDS_RE, LOOKALIKE_RE, PUNCT_RE

BRAND_SPACE_RE = r"[\p{P}\p{S}\s]+"
STRING_COLUMNS = (
    "listing_id", "seller_id", "title", "description", "brand", "category", "currency",
    "ships_from", "seller_country", "seller_contact_hash",
)
# what the features read, plus `currency` (a required column that validation checks)
COLUMNS = (
    "listing_id", "seller_id", "title", "description", "brand", "category", "price",
    "list_price", "currency", "listed_at", "image_count", "image_hashes", "ships_from",
    "units_sold_30d", "returns_30d", "complaints_30d", "seller_registered_at", "seller_country",
    "seller_rating", "seller_review_count", "seller_verified", "seller_contact_hash",
)
REQUIRED = ("listing_id", "seller_id", "title", "category", "price", "currency", "listed_at")
NON_NEGATIVE = ("image_count", "units_sold_30d", "returns_30d", "complaints_30d",
                "seller_review_count")


@dataclass(frozen=True)
class PandasState:
    """The fitted feature state, as pandas objects."""

    level_bc: pd.DataFrame  # brand, category, _level_bc
    level_b: pd.Series  # brand -> _level_b
    level_c: pd.Series  # category -> _level_c
    overall: float
    known: pd.Series  # normalized brand names
    similarity: dict[str, float]  # typosquat (normalized, without padding) -> similarity
    alternation: str  # regex matching any padded typosquat pattern
    window_sizes: tuple[int, ...]  # words per typosquat pattern
    risk: pd.Series  # brand -> smoothed fake share
    prior: float
    category_code: pd.Series  # category -> code
    max_image_sellers: int


def load_state(folder: str | Path) -> PandasState:
    """Read a `FeatureState.save` folder without Polars."""
    folder = Path(folder)
    meta = json.loads((folder / "state.json").read_text())

    def table(name: str) -> pd.DataFrame:
        return pd.read_parquet(folder / f"{name}.parquet")

    def lookup(name: str, key: str, value: str) -> pd.Series:
        frame = table(name)
        return pd.Series(frame[value].to_numpy(), index=frame[key].to_numpy())

    variants = table("lexicon.variants")
    words = [p[1:-1] for p in variants["pattern"]]  # patterns are " variant "
    return PandasState(
        level_bc=table("prices.brand_category"),
        level_b=lookup("prices.brand", "brand", "_level_b"),
        level_c=lookup("prices.category", "category", "_level_c"),
        overall=float(meta["prices.overall"]),
        known=table("lexicon.known")["brand_norm"],
        similarity=dict(zip(words, variants["similarity"].astype(float), strict=True)),
        alternation="|".join(re.escape(p).replace("\\ ", " ") for p in variants["pattern"]),
        window_sizes=tuple(sorted({w.count(" ") + 1 for w in words})),
        risk=lookup("risk.brand", "brand", "_risk"),
        prior=float(meta["risk.prior"]),
        category_code=lookup("categories.codes", "category", "category_code"),
        max_image_sellers=int(meta["max_image_sellers"]),
    )


# ------------------------------------------------------------------ reading and validation

def read_rows(path: str | Path) -> pd.DataFrame:
    """The good rows of a Parquet catalog, as `read_catalog` keeps them (for typed input:
    strings stripped and blank ones missing, row rules and duplicate ids rejected)."""
    df = pd.read_parquet(path, columns=list(COLUMNS))
    for col in STRING_COLUMNS:
        text = df[col].str.strip()
        df[col] = text.mask(text == "")
    bad = df[list(REQUIRED)].isna().any(axis=1)
    bad |= df["price"] <= 0
    bad |= df["list_price"] <= 0
    bad |= (df["seller_rating"] < 0) | (df["seller_rating"] > 5)
    for col in NON_NEGATIVE:
        bad |= df[col] < 0
    bad |= df["listing_id"].notna() & df["listing_id"].duplicated()
    return df.loc[~bad].reset_index(drop=True)


# ------------------------------------------------------------------ features

def normalize_brand(brand: pd.Series) -> pd.Series:
    return brand.str.lower().str.replace(BRAND_SPACE_RE, " ", regex=True).str.strip()


def best_typosquat(words: str, state: PandasState) -> float:
    """Highest similarity of any run of whole words in `words` that is a known typosquat."""
    tokens = words.split(" ")
    best = 0.0
    for k in state.window_sizes:
        for i in range(len(tokens) - k + 1):
            best = max(best, state.similarity.get(" ".join(tokens[i : i + k]), 0.0))
    return best


def typosquat(padded: pd.Series, state: PandasState) -> pd.Series:
    """Best typosquat similarity in " padded text "; a regex alternation finds candidate rows,
    which are then scanned word by word (so overlapping matches count, like the pipeline)."""
    out = pd.Series(0.0, index=padded.index)
    if not state.similarity:
        return out
    candidates = padded[padded.str.contains(state.alternation, regex=True, na=False)]
    out[candidates.index] = [best_typosquat(text[1:-1], state) for text in candidates]
    return out


def seller_clusters(contact_edges: pd.DataFrame, image_edges: pd.DataFrame) -> pd.Series:
    """seller_id -> sellers in its connected component (sellers linked by shared nodes)."""
    edges = pd.concat([
        pd.DataFrame({"seller_id": contact_edges.iloc[:, 0],
                      "node": "c" + contact_edges.iloc[:, 1]}),
        pd.DataFrame({"seller_id": image_edges.iloc[:, 0], "node": "i" + image_edges.iloc[:, 1]}),
    ], ignore_index=True)
    if edges.empty:
        return pd.Series(dtype="int64")
    seller_code, sellers = pd.factorize(edges["seller_id"])
    node_code, nodes = pd.factorize(edges["node"])
    n = len(sellers) + len(nodes)
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (seller_code, node_code + len(sellers))),
        shape=(n, n),
    )
    _, labels = connected_components(graph, directed=False)
    seller_label = labels[: len(sellers)]
    sizes = np.bincount(seller_label)
    return pd.Series(sizes[seller_label], index=sellers)


def build_features(df: pd.DataFrame, state: PandasState) -> pd.DataFrame:
    """listing_id, seller_id and FEATURE_COLUMNS (float32) for validated rows."""
    f: dict[str, pd.Series] = {}
    title = df["title"]
    title_lower = title.str.lower()
    description_lower = df["description"].str.lower()

    # text
    f["title_copy_words"] = title_lower.str.count(COPY_WORDS_RE)
    f["description_copy_words"] = description_lower.str.count(COPY_WORDS_RE)
    f["title_lookalike_words"] = title_lower.str.count(LOOKALIKE_RE)
    title_words = title_lower.str.replace(PUNCT_RE, " ", regex=True)
    title_norm = " " + title_words + " "
    has_brand = df["brand"].notna()
    brand_norm = normalize_brand(df["brand"])
    present = pd.Series(
        [f" {b} " in t if isinstance(b, str) else False
         for b, t in zip(brand_norm, title_norm, strict=True)],
        index=df.index,
    )
    f["brand_missing_from_title"] = (~present).where(has_brand)
    letters = title.str.count(r"\p{L}")
    upper = title.str.count(r"\p{Lu}")
    f["title_upper_ratio"] = (upper / letters).where(letters > 0, 0.0)
    f["title_symbol_ratio"] = title.str.count(r"[^\p{L}\p{N}\s]") / title.str.len()
    f["description_length"] = df["description"].str.len()

    # brand lexicon: the declared brand per distinct value, the title row by row
    f["brand_known"] = brand_norm.isin(state.known).where(has_brand)
    distinct = pd.Series(brand_norm.dropna().unique())
    brand_squat = pd.Series(typosquat(" " + distinct + " ", state).to_numpy(), index=distinct)
    f["brand_typosquat"] = brand_norm.map(brand_squat).where(has_brand)
    f["title_typosquat"] = typosquat(title_norm, state)

    # price levels: brand x category, then brand, then category, then overall
    levels = df[["brand", "category"]].merge(state.level_bc, on=["brand", "category"],
                                             how="left")
    category_level = df["category"].map(state.level_c).fillna(state.overall)
    brand_level = (
        pd.Series(levels["_level_bc"].to_numpy(), index=df.index)
        .fillna(df["brand"].map(state.level_b))
        .fillna(category_level)
    )
    price_brand_ratio = df["price"] / brand_level
    f["price_brand_ratio"] = price_brand_ratio
    f["price_category_ratio"] = df["price"] / category_level
    f["list_price_brand_ratio"] = df["list_price"] / brand_level
    f["discount_depth"] = 1.0 - df["price"] / df["list_price"]

    # logistics, seller profile, after-sale
    f["image_count"] = df["image_count"].astype("float64").fillna(df["image_hashes"].str.len())
    age = df["listed_at"] - df["seller_registered_at"]
    f["seller_account_age_days"] = age.dt.total_seconds() / 86_400.0
    both = df["ships_from"].notna() & df["seller_country"].notna()
    f["ships_from_mismatch"] = (
        df["ships_from"].str.upper() != df["seller_country"].str.upper()
    ).where(both)
    sold = df["units_sold_30d"]
    f["return_rate"] = (df["returns_30d"] / sold).where(sold > 0)
    f["complaint_rate"] = (df["complaints_30d"] / sold).where(sold > 0)
    for col in ("seller_rating", "seller_review_count", "seller_verified", "complaints_30d"):
        f[col] = df[col]
    f["brand_risk"] = df["brand"].map(state.risk).fillna(state.prior)
    f["category_code"] = df["category"].map(state.category_code)

    # batch aggregates: sellers, main images, contacts, seller network
    main_image = df["image_hashes"].str[0]
    batch = pd.DataFrame({
        "seller_id": df["seller_id"], "brand": df["brand"], "listed_at": df["listed_at"],
        "contact": df["seller_contact_hash"], "main_image": main_image,
        "ratio": price_brand_ratio, "low": price_brand_ratio < LOW_PRICE_RATIO,
    })
    sellers = batch.groupby("seller_id", sort=False).agg(
        seller_listings=("seller_id", "size"),
        seller_brands=("brand", "nunique"),
        seller_low_price_share=("low", "mean"),
        seller_median_price_ratio=("ratio", "median"),
        first=("listed_at", "min"),
        last=("listed_at", "max"),
    )
    span_days = (sellers["last"] - sellers["first"]).dt.total_seconds() / 86_400.0
    sellers["seller_listings_per_day"] = sellers["seller_listings"] / (span_days + 1.0)
    images = batch.dropna(subset=["main_image"]).groupby("main_image", sort=False).agg(
        main_image_sellers=("seller_id", "nunique"),
        main_image_brands=("brand", "nunique"),
    )
    contacts = batch.groupby("contact", sort=False)["seller_id"].nunique()
    linking = images.index[images["main_image_sellers"].between(2, state.max_image_sellers)]
    clusters = seller_clusters(
        batch[["seller_id", "contact"]].dropna().drop_duplicates(),
        batch.loc[batch["main_image"].isin(linking), ["seller_id", "main_image"]]
        .drop_duplicates(),
    )
    sellers["seller_cluster_size"] = clusters.reindex(sellers.index).fillna(1)
    per_seller = df[["seller_id"]].merge(sellers, left_on="seller_id", right_index=True,
                                         how="left")
    for col in ("seller_listings", "seller_brands", "seller_low_price_share",
                "seller_median_price_ratio", "seller_listings_per_day", "seller_cluster_size"):
        f[col] = pd.Series(per_seller[col].to_numpy(), index=df.index)
    f["main_image_sellers"] = main_image.map(images["main_image_sellers"])
    f["main_image_brands"] = main_image.map(images["main_image_brands"])
    f["contact_accounts"] = df["seller_contact_hash"].map(contacts)

    out = df[["listing_id", "seller_id"]].copy()
    for col in FEATURE_COLUMNS:
        out[col] = f[col].to_numpy(dtype="float64", na_value=np.nan).astype("float32")
    return out


def features_from_file(catalog: str | Path, state_dir: str | Path) -> pd.DataFrame:
    """Read, validate and featurize a Parquet catalog with a saved feature state."""
    return build_features(read_rows(catalog), load_state(state_dir))
