"""Text features of one listing: copy words, look-alike words, the declared brand in the title,
shouting and symbols, description length. Pure `pl.Expr` functions on the validated columns.

`normalized_text` and `normalized_brand` put titles and brands into the same form (lower case,
punctuation as spaces) so that brand names and their typosquats match on word boundaries; the
brand lexicon (`features.lexicon`) uses them too.
"""

from __future__ import annotations

import polars as pl

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


def normalized_text(col: str) -> pl.Expr:
    """Lower-case text with punctuation and symbols as spaces, padded by spaces, so that
    " word " patterns match whole words."""
    body = pl.col(col).fill_null("").str.to_lowercase().str.replace_all(PUNCT_RE, " ")
    return pl.concat_str([pl.lit(" "), body, pl.lit(" ")])


def normalized_brand(expr: pl.Expr) -> pl.Expr:
    """A brand name as it appears in normalized text: lower case, single spaces."""
    return expr.str.to_lowercase().str.replace_all(r"[\p{P}\p{S}\s]+", " ").str.strip_chars()


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
    brand = pl.concat_str([pl.lit(" "), normalized_brand(pl.col("brand")), pl.lit(" ")])
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
