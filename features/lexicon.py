"""The brand lexicon (fitted on training rows): known brands and their typosquat variants
(omissions, transpositions, repetitions, homoglyphs, adjacent-key slips), each with its rapidfuzz
similarity to the brand it imitates. Variants that are common words in ordinary titles are
dropped. Its features, `brand_known`, `brand_typosquat` and `title_typosquat`, are expressions
that find variants with Aho-Corasick (`str.extract_many`), so they share work with the text
features.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from rapidfuzz import fuzz, process

from features.text import normalized_brand, normalized_text

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
        train.select(normalized_brand(pl.col("brand")).alias("brand_norm"))
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

    brand = normalized_brand(pl.col("brand"))
    return [
        pl.when(pl.col("brand").is_not_null()).then(brand.is_in(known.implode()))
        .alias("brand_known"),
        pl.when(pl.col("brand").is_not_null())
        .then(squat(pl.concat_str([pl.lit(" "), brand, pl.lit(" ")])))
        .alias("brand_typosquat"),
        squat(normalized_text("title")).alias("title_typosquat"),
    ]
