"""The feature registry: each of the model's features declared once, in the model's input order.

A declaration says how the feature is computed (a function returning a `pl.Expr`, or the fitted
state or batch aggregate that produces it), its monotone sign, the optional catalog input whose
absence makes it null, and how a reason puts it into words (its phrase for a value, its text when
missing). Everything else is derived from `FEATURES`: `FEATURE_COLUMNS` (the bundle's column
order: never reorder), `STATELESS`, `MONOTONE`, `OPTIONAL_GROUPS`; the reason templates in
`serving.reasons`. A declaration missing any of these is rejected when it is constructed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import polars as pl

from features import listing, text


class From(Enum):
    """Where a feature comes from when it is not a plain expression on the row."""

    INPUT = "the catalog column of the same name, as sent"
    BRAND_PRICES = "price levels fitted per brand x category (fitted.apply_brand_prices)"
    BRAND_LEXICON = "the fitted brand lexicon (lexicon.brand_lexicon_features)"
    BRAND_RISK = "brand risk fitted on older labels (fitted.apply_brand_risk)"
    CATEGORY_CODES = "the fitted category code table (fitted.apply_category_codes)"
    SELLERS = "per-seller aggregates over the whole batch (aggregates.batch_aggregates)"
    IMAGES = "per-main-image aggregates over the whole batch (aggregates.batch_aggregates)"
    NETWORK = "contact hashes and seller clusters over the whole batch (network.seller_network)"


# Optional catalog inputs (contract columns) that, when absent, null the features declared with
# them; `after_sale` is also null for listings younger than 30 days. Training hides each group on
# a seeded share of rows so the model learns missing values: the order fixes the random draws.
OPTIONAL_INPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("after_sale", ("units_sold_30d", "returns_30d", "complaints_30d")),
    ("seller_registered_at", ("seller_registered_at",)),
    ("images", ("image_count", "image_hashes")),
    ("seller_verified", ("seller_verified",)),
    ("seller_reviews", ("seller_rating", "seller_review_count")),
    ("ships_from", ("ships_from", "seller_country")),
    ("seller_contact_hash", ("seller_contact_hash",)),
    ("description", ("description",)),
    ("list_price", ("list_price",)),
)
_GROUPS = tuple(group for group, _ in OPTIONAL_INPUTS)
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One feature. Every field is required; `needs=None` says the feature needs only required
    columns (or `brand`, whose absence means unbranded and is a value of its own)."""

    name: str
    source: Callable[[], pl.Expr] | From  # an expression function must alias to `name`
    monotone: int  # +1: a higher value never lowers the score; -1: never raises it; 0: free
    needs: str | None  # the OPTIONAL_INPUTS group whose absence nulls it
    phrase: Callable[[float], str]  # the value in words, for reasons (never called with NaN)
    missing: str  # the reason's words when the value is missing

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"feature name {self.name!r} is not lower snake case")
        if not isinstance(self.source, From):
            if not callable(self.source):
                raise ValueError(f"{self.name}: source must be an expression function or a From")
            produced = self.source().meta.output_name()
            if produced != self.name:
                raise ValueError(f"{self.name}: its expression produces {produced!r}")
        if self.monotone not in (-1, 0, 1):
            raise ValueError(f"{self.name}: monotone must be -1, 0 or 1, not {self.monotone!r}")
        if self.needs is not None and self.needs not in _GROUPS:
            raise ValueError(f"{self.name}: needs {self.needs!r}, not an optional input group "
                             f"({', '.join(_GROUPS)})")
        if not callable(self.phrase):
            raise ValueError(f"{self.name}: phrase must be a function of the value")
        if not isinstance(self.missing, str) or not self.missing.strip():
            raise ValueError(f"{self.name}: missing must be the text shown for a missing value")


def _pct(v: float) -> int:
    return round(100 * v)


def _below(v: float, what: str) -> str:
    if v < 1:
        return f"price {_pct(1 - v)}% below {what}"
    return f"price {v:.1f}× {what}"


def _plural(n: float, one: str, many: str) -> str:
    return f"{int(n)} {one if int(n) == 1 else many}"


FEATURES: tuple[Feature, ...] = (
    # price
    Feature(name="price_brand_ratio", source=From.BRAND_PRICES, monotone=-1, needs=None,
            phrase=lambda v: _below(v, "this brand's usual price"),
            missing="price brand ratio unknown"),
    Feature(name="price_category_ratio", source=From.BRAND_PRICES, monotone=-1, needs=None,
            phrase=lambda v: _below(v, "the category's usual price"),
            missing="price category ratio unknown"),
    Feature(name="discount_depth", source=listing.discount_depth, monotone=1, needs="list_price",
            phrase=lambda v: f"shown discount of {_pct(v)}% off the list price"
            if v > 0 else "priced above its own list price",
            missing="discount depth unknown"),
    Feature(name="list_price_brand_ratio", source=From.BRAND_PRICES, monotone=0,
            needs="list_price",
            phrase=lambda v: f"list price {v:.1f}× this brand's usual price"
            + (" (inflated 'was' price)" if v > 1.2 else ""),
            missing="list price brand ratio unknown"),
    # text
    Feature(name="title_copy_words", source=text.title_copy_words, monotone=1, needs=None,
            phrase=lambda v: "title admits an imitation ('replica', '1:1', 'AAA' …): "
            + _plural(v, "copy word", "copy words") if v > 0 else "no copy words in the title",
            missing="title copy words unknown"),
    Feature(name="description_copy_words", source=text.description_copy_words, monotone=1,
            needs="description",
            phrase=lambda v: "description admits an imitation: "
            + _plural(v, "copy word", "copy words") if v > 0
            else "no copy words in the description",
            missing="no description"),
    Feature(name="title_lookalike_words", source=text.title_lookalike_words, monotone=0,
            needs=None,
            phrase=lambda v: "title uses look-alike words ('style', 'inspired by' …)"
            if v > 0 else "no look-alike words in the title",
            missing="title lookalike words unknown"),
    Feature(name="brand_known", source=From.BRAND_LEXICON, monotone=0, needs=None,
            phrase=lambda v: "declared brand is not a known brand" if v < 0.5
            else "declared brand is a known brand",
            missing="brand known unknown"),
    Feature(name="brand_typosquat", source=From.BRAND_LEXICON, monotone=0, needs=None,
            phrase=lambda v: f"declared brand looks like a misspelt known brand "
            f"({_pct(v)}% similar)" if v > 0 else "declared brand is spelt correctly",
            missing="brand typosquat unknown"),
    Feature(name="title_typosquat", source=From.BRAND_LEXICON, monotone=0, needs=None,
            phrase=lambda v: f"title contains a misspelt brand name ({_pct(v)}% similar)"
            if v > 0 else "no misspelt brand names in the title",
            missing="title typosquat unknown"),
    Feature(name="brand_missing_from_title", source=text.brand_missing_from_title, monotone=0,
            needs=None,
            phrase=lambda v: "declared brand is missing from the title" if v > 0.5
            else "declared brand appears in the title",
            missing="brand missing from title unknown"),
    Feature(name="title_upper_ratio", source=text.title_upper_ratio, monotone=0, needs=None,
            phrase=lambda v: f"{_pct(v)}% of the title in capitals",
            missing="title upper ratio unknown"),
    Feature(name="title_symbol_ratio", source=text.title_symbol_ratio, monotone=0, needs=None,
            phrase=lambda v: f"{_pct(v)}% of the title is symbols ('!!!', '$$$', '★')",
            missing="title symbol ratio unknown"),
    Feature(name="description_length", source=text.description_length, monotone=0,
            needs="description",
            phrase=lambda v: "empty description" if v == 0
            else f"description of {int(v)} characters",
            missing="no description"),
    # images
    Feature(name="image_count", source=listing.image_count, monotone=0, needs="images",
            phrase=lambda v: _plural(v, "image", "images") + " on the listing",
            missing="no images"),
    Feature(name="main_image_sellers", source=From.IMAGES, monotone=0, needs="images",
            phrase=lambda v: "main photo also used by "
            + _plural(v - 1, "other seller", "other sellers") if v > 1
            else "main photo used by no other seller",
            missing="no photo hashes"),
    Feature(name="main_image_brands", source=From.IMAGES, monotone=0, needs="images",
            phrase=lambda v: f"main photo used for {_plural(v, 'brand', 'different brands')}",
            missing="no photo hashes"),
    # seller
    Feature(name="seller_account_age_days", source=listing.seller_account_age_days, monotone=0,
            needs="seller_registered_at",
            phrase=lambda v: f"seller account {_plural(max(v, 0), 'day', 'days')} old",
            missing="seller registration date unknown"),
    Feature(name="seller_rating", source=From.INPUT, monotone=0, needs="seller_reviews",
            phrase=lambda v: f"seller rating {v:.1f} of 5",
            missing="seller has no rating yet"),
    Feature(name="seller_review_count", source=From.INPUT, monotone=0, needs="seller_reviews",
            phrase=lambda v: f"seller has {_plural(v, 'review', 'reviews')}",
            missing="seller review count unknown"),
    Feature(name="seller_verified", source=From.INPUT, monotone=0, needs="seller_verified",
            phrase=lambda v: "seller not verified by the platform" if v < 0.5
            else "seller verified by the platform",
            missing="seller verification unknown"),
    Feature(name="seller_listings", source=From.SELLERS, monotone=0, needs=None,
            phrase=lambda v: f"seller has {_plural(v, 'listing', 'listings')} in this batch",
            missing="seller listings unknown"),
    Feature(name="seller_brands", source=From.SELLERS, monotone=0, needs=None,
            phrase=lambda v: f"seller lists {_plural(v, 'brand', 'different brands')}",
            missing="seller brands unknown"),
    Feature(name="seller_low_price_share", source=From.SELLERS, monotone=1, needs=None,
            phrase=lambda v: f"{_pct(v)}% of the seller's listings are priced far "
            "below their brand",
            missing="seller low price share unknown"),
    Feature(name="seller_median_price_ratio", source=From.SELLERS, monotone=-1, needs=None,
            phrase=lambda v: "seller's typical " + _below(v, "brand level"),
            missing="seller median price ratio unknown"),
    Feature(name="seller_listings_per_day", source=From.SELLERS, monotone=0, needs=None,
            phrase=lambda v: f"seller lists {v:.1f} items a day",
            missing="seller listings per day unknown"),
    # network
    Feature(name="contact_accounts", source=From.NETWORK, monotone=0,
            needs="seller_contact_hash",
            phrase=lambda v: "seller's contact details shared by "
            + _plural(v, "account", "accounts"),
            missing="no seller contact details"),
    Feature(name="seller_cluster_size", source=From.NETWORK, monotone=0, needs=None,
            phrase=lambda v: "seller linked to "
            + _plural(v - 1, "other account", "other accounts") + " by shared contacts or photos"
            if v > 1 else "seller linked to no other account",
            missing="seller cluster size unknown"),
    # logistics and after-sale
    Feature(name="ships_from_mismatch", source=listing.ships_from_mismatch, monotone=0,
            needs="ships_from",
            phrase=lambda v: "ships from another country than the seller's" if v > 0.5
            else "ships from the seller's country",
            missing="ships from mismatch unknown"),
    Feature(name="return_rate", source=listing.return_rate, monotone=0, needs="after_sale",
            phrase=lambda v: f"{_pct(v)}% of units sold were returned",
            missing="no sales yet (listing younger than 30 days)"),
    Feature(name="complaint_rate", source=listing.complaint_rate, monotone=1,
            needs="after_sale",
            phrase=lambda v: f"{_pct(v)}% of units sold drew authenticity complaints",
            missing="no sales yet (listing younger than 30 days)"),
    Feature(name="complaints_30d", source=From.INPUT, monotone=0, needs="after_sale",
            phrase=lambda v: f"{_plural(v, 'authenticity complaint', 'authenticity complaints')}"
            " in 30 days",
            missing="no sales data yet"),
    # learned from labels, and the category as a number
    Feature(name="brand_risk", source=From.BRAND_RISK, monotone=0, needs=None,
            phrase=lambda v: f"brand often counterfeited ({_pct(v)}% of reviewed listings "
            "were fake)",
            missing="brand risk unknown"),
    Feature(name="category_code", source=From.CATEGORY_CODES, monotone=0, needs=None,
            phrase=lambda v: "category often targeted by counterfeiters",
            missing="category not seen in training"),
)


def feature_columns(features: tuple[Feature, ...]) -> tuple[str, ...]:
    """The declared names in order; a name declared twice is an error."""
    names = tuple(f.name for f in features)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"features declared more than once: {', '.join(twice)}")
    return names


FEATURE_COLUMNS: tuple[str, ...] = feature_columns(FEATURES)
# the expression features, computed row by row in `build_features`
STATELESS: tuple[Callable[[], pl.Expr], ...] = tuple(
    f.source for f in FEATURES if not isinstance(f.source, From)
)
# LightGBM monotone constraints: a lower price or more copy words never make a listing look
# safer, whatever the sample says (sellers cannot game the score that way)
MONOTONE: dict[str, int] = {f.name: f.monotone for f in FEATURES if f.monotone}
OPTIONAL_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(f.name for f in FEATURES if f.needs == group) for group in _GROUPS
}
# aggregates over the whole batch (seller, image and network features): they follow the batch's
# length and span as much as the market, so drift measures them without warning about them
BATCH_RELATIVE: frozenset[str] = frozenset(
    f.name for f in FEATURES if f.source in (From.SELLERS, From.IMAGES, From.NETWORK)
)
