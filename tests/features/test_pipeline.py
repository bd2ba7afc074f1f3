"""Each feature on a tiny literal frame with a known answer; state, chunks and engines agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import aggregates
from features.aggregates import batch_aggregates
from features.catalog import read_catalog
from features.fitted import (
    BrandPrices,
    BrandRisk,
    CategoryCodes,
    brand_risk_as_of,
    fit_brand_prices,
    fit_brand_risk,
)
from features.lexicon import fit_brand_lexicon, lexicon_from_brands, typo_variants
from features.network import seller_clusters
from features.pipeline import build_features
from features.registry import FEATURE_COLUMNS, STATELESS
from features.state import FeatureState, StateError, fit_state
from synthetic.generate import generate_catalog
from tests.conftest import listings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def hand_state() -> FeatureState:
    """A state written by hand, so every expected value below can be worked out on paper."""
    return FeatureState(
        prices=BrandPrices(
            brand_category=pl.DataFrame(
                {"brand": ["Acme"], "category": ["Fashion > Bags"], "_level_bc": [200.0]}
            ),
            brand=pl.DataFrame({"brand": ["Acme", "Zeta"], "_level_b": [250.0, 50.0]}),
            category=pl.DataFrame(
                {"category": ["Fashion > Bags", "Toys"], "_level_c": [100.0, 20.0]}
            ),
            overall=80.0,
            min_listings=1,
        ),
        lexicon=lexicon_from_brands([("acme", 10), ("gucci", 10)]),
        risk=BrandRisk(pl.DataFrame({"brand": ["Acme"], "_risk": [0.2]}), 0.05, 50.0, None),
        categories=CategoryCodes(
            pl.DataFrame({"category": ["Fashion > Bags", "Toys"], "category_code": [0, 1]})
        ),
        currency="EUR",
        max_image_sellers=25,
    )


def four_listings() -> pl.DataFrame:
    return listings(
        {  # a cheap, shouting, copy-word fake from a young account
            "title": "ACME Replica bag 1:1 !!!", "description": "aaa quality replica",
            "price": 100.0, "list_price": 400.0, "image_count": None,
            "image_hashes": ["h1", "h2"], "seller_id": "S1", "seller_contact_hash": "c1",
            "seller_registered_at": T0 - 10 * DAY, "ships_from": "CN",
            "units_sold_30d": 10, "returns_30d": 2, "complaints_30d": 1,
        },
        {  # same seller, 4 days later, an innocent accessory that mentions a typosquat
            "title": "Guci style case for Acme", "category": "Toys", "price": 50.0,
            "image_hashes": ["h1"], "seller_id": "S1", "seller_contact_hash": "c1",
            "seller_registered_at": T0 - 10 * DAY, "listed_at": T0 + 4 * DAY,
        },
        {  # unseen brand, linked to S1 by the contact hash
            "title": "Zeta bag", "brand": "Zeta", "price": 25.0, "image_hashes": ["h9"],
            "seller_id": "S2", "seller_contact_hash": "c1", "seller_registered_at": T0 - 30 * DAY,
        },
        {  # unbranded, unseen category, linked to S1 by the main image
            "title": "Garden hose", "brand": None, "category": "Garden", "price": 40.0,
            "image_hashes": ["h1"], "seller_id": "S3", "seller_verified": False,
        },
    )


GUCI = 2 * 4 / (4 + 5)  # rapidfuzz ratio of "guci" to "gucci": 2*matches/(len a + len b)
EXPECTED: dict[str, list[float | None]] = {
    "price_brand_ratio": [100 / 200, 50 / 250, 25 / 50, 40 / 80],
    "price_category_ratio": [100 / 100, 50 / 20, 25 / 100, 40 / 80],
    "discount_depth": [1 - 100 / 400, None, None, None],
    "list_price_brand_ratio": [400 / 200, None, None, None],
    "title_copy_words": [2, 0, 0, 0],  # "replica", "1:1"
    "description_copy_words": [2, 0, 0, 0],  # "aaa", "replica"
    "title_lookalike_words": [0, 2, 0, 0],  # "style", "case for"
    "brand_known": [1, 1, 0, None],
    "brand_typosquat": [0, 0, 0, None],
    "title_typosquat": [0, GUCI, 0, 0],
    "brand_missing_from_title": [0, 0, 0, None],
    "title_upper_ratio": [5 / 14, 2 / 20, 1 / 7, 1 / 10],
    "title_symbol_ratio": [4 / 24, 0, 0, 0],
    "description_length": [19, 6, 6, 6],
    "image_count": [2, 1, 1, 1],
    "main_image_sellers": [2, 2, 1, 2],  # h1: S1 and S3
    "main_image_brands": [1, 1, 1, 1],  # unbranded does not count
    "seller_account_age_days": [10, 14, 30, (T0 - datetime(2020, 1, 1, tzinfo=UTC)).days + 0.5],
    "seller_rating": [4.5, 4.5, 4.5, 4.5],
    "seller_review_count": [100, 100, 100, 100],
    "seller_verified": [1, 1, 1, 0],
    "seller_listings": [2, 2, 1, 1],
    "seller_brands": [1, 1, 1, 0],
    "seller_low_price_share": [0.5, 0.5, 0, 0],  # 0.2 < 0.5 counts, 0.5 does not
    "seller_median_price_ratio": [0.35, 0.35, 0.5, 0.5],
    "seller_listings_per_day": [2 / 5, 2 / 5, 1, 1],  # 2 listings over 4 days (+1)
    "contact_accounts": [2, 2, 2, None],
    "seller_cluster_size": [3, 3, 3, 3],  # S1-S2 by contact, S1-S3 by image
    "ships_from_mismatch": [1, 0, 0, 0],
    "return_rate": [0.2, None, None, None],
    "complaint_rate": [0.1, None, None, None],
    "complaints_30d": [1, None, None, None],
    "brand_risk": [0.2, 0.2, 0.05, 0.05],  # unseen and unbranded get the prior
    "category_code": [0, 1, 0, None],
}


def test_every_feature_has_a_known_answer() -> None:
    assert set(EXPECTED) == set(FEATURE_COLUMNS)
    assert len(FEATURE_COLUMNS) >= 24


@pytest.mark.parametrize("feature", FEATURE_COLUMNS)
def test_feature_on_literal_frame(feature: str) -> None:
    got = build_features(four_listings().lazy(), hand_state()).collect()
    expected = pl.Series(feature, EXPECTED[feature], dtype=pl.Float64).cast(pl.Float32)
    assert_frame_equal(got.select(feature), expected.to_frame(), abs_tol=1e-5)


def test_output_is_ids_then_features_as_float32() -> None:
    got = build_features(four_listings().lazy(), hand_state()).collect()
    assert got.columns == ["listing_id", "seller_id", *FEATURE_COLUMNS]
    assert all(got.schema[c] == pl.Float32 for c in FEATURE_COLUMNS)


def test_eager_and_lazy_agree() -> None:
    frame = four_listings()
    exprs = [f() for f in STATELESS]
    assert_frame_equal(frame.with_columns(exprs), frame.lazy().with_columns(exprs).collect())
    lf = build_features(frame.lazy(), hand_state())
    assert_frame_equal(lf.collect(engine="in-memory"), lf.collect(engine="streaming"))


def test_chunked_with_batch_aggregates_equals_whole() -> None:
    frame, state = four_listings(), hand_state()
    whole = build_features(frame.lazy(), state).collect()
    agg = batch_aggregates(frame.lazy(), state)
    chunks = [build_features(frame.slice(i, 2).lazy(), state, aggregates=agg).collect()
              for i in (0, 2)]
    assert_frame_equal(pl.concat(chunks), whole)
    # and the test can fail: a chunk alone sees only its own rows of each seller
    alone = build_features(frame.slice(1, 3).lazy(), state).collect()
    assert alone["seller_listings"][0] == 1 != whole["seller_listings"][1]


def test_seller_clusters_are_connected_components() -> None:
    edges = pl.DataFrame({
        "seller_id": ["a", "b", "b", "c", "d", "e"],
        "node": ["x", "x", "y", "y", "z", "w"],
        "kind": ["c", "c", "i", "i", "c", "i"],
    })
    got = dict(seller_clusters(edges).iter_rows())
    assert got == {"a": 3, "b": 3, "c": 3, "d": 1, "e": 1}


def test_typo_variants_cover_the_usual_tricks() -> None:
    variants = typo_variants("gucci")
    assert {"guci", "gucc1", "guccl", "gucic", "guccci"} <= variants
    assert "gucci" not in variants


def labelled_frame() -> pl.DataFrame:
    rows = []
    for i in range(30):
        rows.append({"brand": "Acme", "price": 100.0 + i, "is_counterfeit": None,
                     "listed_at": T0 + i * DAY})
    rows += [{"brand": "Acme", "price": 5.0, "is_counterfeit": True, "listed_at": T0}] * 20
    rows += [{"brand": "Acme", "title": "Acmee bag", "is_counterfeit": None}] * 2
    rows += [{"brand": "Acmee", "is_counterfeit": False, "listed_at": T0 + 40 * DAY}] * 25
    return listings(*rows).with_columns(
        pl.format("L{}", pl.int_range(pl.len())).alias("listing_id")
    )


def test_brand_prices_ignore_confirmed_fakes() -> None:
    prices = fit_brand_prices(labelled_frame().lazy())
    level = prices.brand.filter(pl.col("brand") == "Acme")["_level_b"].item()
    assert level > 100  # the 20 fakes at 5.0 would pull the median to ~5 otherwise


def test_brand_risk_uses_only_labels_before_cutoff_with_smoothing() -> None:
    frame = labelled_frame()
    risk = fit_brand_risk(frame.lazy(), label_cutoff=T0 + 10 * DAY, smoothing=10.0)
    # before the cutoff: 20 Acme fakes labelled, nothing else; prior = 20/20 = 1
    assert risk.prior == 1.0
    assert risk.brand["brand"].to_list() == ["Acme"]
    later = fit_brand_risk(frame.lazy(), label_cutoff=T0 + 50 * DAY, smoothing=10.0)
    prior = 20 / 45
    acmee = later.brand.filter(pl.col("brand") == "Acmee")["_risk"].item()
    assert acmee == pytest.approx((0 + prior * 10) / (25 + 10))


def test_lexicon_drops_typo_brands_and_common_words() -> None:
    frame = labelled_frame()
    lexicon = fit_brand_lexicon(frame.lazy(), min_listings=2)
    # "acmee" (25 listings) is not 10x rarer than "acme" (52), so both are known brands
    assert set(lexicon.known["brand_norm"]) == {"acme", "acmee"}
    big = pl.concat([frame] + [frame.with_columns(
        pl.lit("Acme").alias("brand"), pl.format("X{}{}", pl.lit(i), "listing_id")
        .alias("listing_id")) for i in range(10)])
    lexicon = fit_brand_lexicon(big.lazy(), min_listings=2)
    assert lexicon.known["brand_norm"].to_list() == ["acme"]  # acmee is now 10x rarer
    # "ace" is a variant of "acme" (one letter dropped) but also a word common in titles
    words = fit_brand_lexicon(
        listings(*[{"brand": "Acme", "title": "Ace of spades"}] * 30).lazy(), min_listings=2
    )
    assert " ace " not in words.variants["pattern"].to_list()
    assert " acm " in words.variants["pattern"].to_list()


def test_state_round_trips_through_save_and_load(tmp_path: Path) -> None:
    frame = labelled_frame()
    state = fit_state(frame.lazy(), label_cutoff=T0 + 50 * DAY)
    loaded = FeatureState.load(state.save(tmp_path / "state"))
    assert (loaded.currency, loaded.max_image_sellers) == (state.currency, state.max_image_sellers)
    for part in ("prices", "lexicon", "risk", "categories"):
        for name, value in vars(getattr(state, part)).items():
            other = getattr(getattr(loaded, part), name)
            if isinstance(value, pl.DataFrame):
                assert_frame_equal(other, value)
            else:
                assert other == value
    assert_frame_equal(
        build_features(frame.lazy(), loaded).collect(),
        build_features(frame.lazy(), state).collect(),
    )


def test_load_refuses_a_folder_without_state(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="state.json"):
        FeatureState.load(tmp_path)


def test_unseen_brand_and_category_fall_back() -> None:
    frame = listings({"brand": "Nobody", "category": "Space > Rockets", "price": 160.0})
    got = build_features(frame.lazy(), hand_state()).collect().row(0, named=True)
    assert got["price_brand_ratio"] == pytest.approx(160 / 80)  # overall level
    assert got["brand_risk"] == pytest.approx(0.05)
    assert got["category_code"] is None
    assert got["brand_known"] == 0


def test_brand_risk_as_of_sees_only_labels_older_than_the_delay() -> None:
    rows = pl.DataFrame({
        "brand": ["A", "A", "A", "B", None, "A"],
        "listed_at": [T0, T0 + DAY, T0 + 20 * DAY, T0 + 20 * DAY, T0 + 20 * DAY, T0 + 40 * DAY],
        "is_counterfeit": [True, False, None, True, None, True],
    })
    got = brand_risk_as_of(rows, timedelta(days=14), smoothing=2.0, fallback_prior=0.5)
    # rows 1-2: nothing older than 14 days -> the fallback prior; rows 3-5 see A's two labels
    # (1 fake of 2, prior 1/2): (1 + 0.5*2) / (2 + 2) = 0.5; B and unbranded: the prior 0.5.
    # Row 6 sees three labels (prior 2/3) and A's two: (1 + 2/3*2) / (2 + 2).
    assert got.to_list() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, (1 + 4 / 3) / 4])
    # a row's own label never counts: flipping row 6's label changes nothing for row 6
    flipped = rows.with_columns(pl.Series("is_counterfeit", [True, False, None, True, None,
                                                             False]))
    assert brand_risk_as_of(flipped, timedelta(days=14), 2.0, 0.5)[5] == got[5]


def test_main_image_brands_counts_a_sellers_own_image_used_with_and_without_brand() -> None:
    frame = listings(
        {"seller_id": "S1", "brand": None, "image_hashes": ["h7"]},
        {"seller_id": "S1", "brand": "Acme", "image_hashes": ["h7"]},
        {"seller_id": "S2", "brand": None, "image_hashes": ["h8"]},
    )
    got = build_features(frame.lazy(), hand_state()).collect()
    assert got["main_image_brands"].to_list() == [1, 1, 0]
    assert got["main_image_sellers"].to_list() == [1, 1, 1]


def test_aggregates_split_into_passes_equal_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.parquet"
    generate_catalog(path, 20_000, seed=4)
    rows, state = read_catalog(path).rows, hand_state()
    one = batch_aggregates(rows, state)
    monkeypatch.setattr(aggregates, "PARTITION_ROWS", 3_000)  # 7 passes
    split = batch_aggregates(rows, state)
    for name in ("sellers", "images", "contacts"):
        a, b = getattr(one, name), getattr(split, name)
        assert a.height > 1  # shared images and contacts exist, so this compares something
        assert_frame_equal(a.sort(a.columns[0]), b.sort(b.columns[0]))
