"""Tests for the synthetic catalog generator (small catalogs, fast)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from features.contract import SCHEMA, TRUTH
from synthetic.generate import generate_catalog
from synthetic.market import BRANDS, NEWLY_TARGETED
from synthetic.text import COPY_WORDS

N = 40_000
START = date(2026, 1, 1)
DAYS = 180
START_DT = datetime(2026, 1, 1, tzinfo=UTC)
SNAPSHOT = START_DT + timedelta(days=DAYS)
FAKE = pl.col(TRUTH)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], pl.DataFrame]:
    out = tmp_path_factory.mktemp("gen") / "nested" / "catalog.parquet"
    summary = generate_catalog(out, N, seed=11, start=START, days=DAYS, chunk_rows=15_000)
    return summary, pl.read_parquet(out)


def test_columns_and_dtypes_match_contract(catalog: tuple[dict, pl.DataFrame]) -> None:
    _, df = catalog
    assert df.columns == [*SCHEMA, TRUTH]
    for name, dtype in SCHEMA.items():
        assert df.schema[name] == dtype, name
    assert df.schema[TRUTH] == pl.Boolean()
    assert df[TRUTH].null_count() == 0


def test_one_row_group_per_chunk(catalog: tuple[dict, pl.DataFrame]) -> None:
    summary = catalog[0]
    meta = pq.ParquetFile(str(summary["path"])).metadata
    assert meta.num_row_groups == 3
    assert meta.row_group(0).num_rows == 15_000


def test_ids_and_basic_values(catalog: tuple[dict, pl.DataFrame]) -> None:
    summary, df = catalog
    assert df.height == N == summary["listings"]
    assert df["listing_id"].n_unique() == N
    assert df["listing_id"].str.contains(r"^L\d{9}$").all()
    assert df["seller_id"].str.contains(r"^S\d{7}$").all()
    assert df["seller_id"].n_unique() <= summary["sellers"]
    assert (df["currency"] == "EUR").all()
    assert (df["price"] > 0).all()
    assert (df["title"].str.len_chars() > 0).all()
    assert df["ships_from"].str.contains(r"^[A-Z]{2}$").all()
    assert df["seller_country"].str.contains(r"^[A-Z]{2}$").all()
    assert df["seller_rating"].drop_nulls().is_between(0, 5).all()
    # rating is null exactly for sellers without reviews
    assert (df["seller_rating"].is_null() == (df["seller_review_count"] == 0)).all()
    # brand null for roughly a tenth of the listings
    assert 0.05 < df["brand"].is_null().mean() < 0.2


def test_images_are_hex_hashes_main_first(catalog: tuple[dict, pl.DataFrame]) -> None:
    _, df = catalog
    assert (df["image_hashes"].list.len() == df["image_count"]).all()
    assert df["image_count"].is_between(1, 10).all()
    hashes = df["image_hashes"].explode()
    assert hashes.str.contains(r"^[0-9a-f]{16}$").all()
    fake_mean = df.filter(FAKE)["image_count"].mean()
    genuine_mean = df.filter(~FAKE)["image_count"].mean()
    assert fake_mean < genuine_mean


def test_time_span_and_registration(catalog: tuple[dict, pl.DataFrame]) -> None:
    summary, df = catalog
    assert summary["start"] == START.isoformat()
    assert summary["end"] == (START + timedelta(days=DAYS)).isoformat()
    assert df["listed_at"].min() >= START_DT
    assert df["listed_at"].max() < SNAPSHOT
    assert (df["seller_registered_at"] < df["listed_at"]).all()


def test_prevalence_and_biased_labels(catalog: tuple[dict, pl.DataFrame]) -> None:
    summary, df = catalog
    prevalence = df[TRUTH].mean()
    assert 0.01 <= prevalence <= 0.05
    assert summary["prevalence"] == pytest.approx(prevalence)
    labelled = df.filter(pl.col("is_counterfeit").is_not_null())
    share = labelled.height / df.height
    assert 0.05 < share < 0.3
    assert summary["labelled_share"] == pytest.approx(share)
    fake_share = labelled["is_counterfeit"].mean()
    assert summary["labelled_fake_share"] == pytest.approx(fake_share)
    assert fake_share > 2 * prevalence  # review is biased towards suspicious listings
    agreement = (labelled["is_counterfeit"] == labelled[TRUTH]).mean()
    assert 0.9 < agreement < 1.0  # ~2% label noise


def test_recent_listings_rarely_labelled(catalog: tuple[dict, pl.DataFrame]) -> None:
    _, df = catalog
    recent = pl.col("listed_at") > SNAPSHOT - timedelta(days=14)
    shares = df.group_by(recent.alias("recent")).agg(pl.col("is_counterfeit").is_not_null().mean())
    by = dict(zip(shares["recent"], shares["is_counterfeit"], strict=True))
    assert by[True] < 0.3 * by[False]


def test_activity_null_exactly_for_young_listings(catalog: tuple[dict, pl.DataFrame]) -> None:
    _, df = catalog
    young = df["listed_at"] > SNAPSHOT - timedelta(days=30)
    assert 0.05 < young.mean() < 0.4
    for col in ("units_sold_30d", "returns_30d", "complaints_30d"):
        assert (df[col].is_null() == young).all(), col
    old = df.filter(~young)
    assert (old["returns_30d"] <= old["units_sold_30d"]).all()
    rate = old.group_by(TRUTH).agg((pl.col("complaints_30d") > 0).mean().alias("r"))
    by = dict(zip(rate[TRUTH], rate["r"], strict=True))
    assert by[True] > 10 * by[False]


def test_fake_signals(catalog: tuple[dict, pl.DataFrame]) -> None:
    _, df = catalog
    words = "|".join(w.replace("+", r"\+") for w in COPY_WORDS)
    pattern = rf"(?i)(^|[^\w])({words})($|[^\w])"
    text = pl.concat_str([pl.col("title"), pl.col("description").fill_null("")], separator=" ")
    copy = df.group_by(TRUTH).agg(text.str.contains(pattern).mean().alias("c"))
    by = dict(zip(copy[TRUTH], copy["c"], strict=True))
    assert 0.1 < by[True] < 0.4  # a minority of fakes carries copy words
    assert by[False] < 0.01
    # declared brands that are not real brand names are typosquats, always on fakes
    names = [b.name for b in BRANDS]
    typo = df.filter(pl.col("brand").is_not_null() & ~pl.col("brand").is_in(names))
    assert typo.height > 0
    assert typo[TRUTH].all()
    # fakes are cheaper relative to the genuine median of their brand and category
    med = (df.filter(~FAKE & pl.col("brand").is_in(names))
           .group_by("brand", "category").agg(pl.col("price").median().alias("m")))
    ratio = df.join(med, on=["brand", "category"]).group_by(TRUTH).agg(
        (pl.col("price") / pl.col("m")).median().alias("r"))
    by = dict(zip(ratio[TRUTH], ratio["r"], strict=True))
    assert by[True] < 0.7 < by[False]


def test_rings_share_contacts_and_main_images(catalog: tuple[dict, pl.DataFrame]) -> None:
    summary, df = catalog
    assert summary["rings"] >= 4
    contacts = df.group_by("seller_contact_hash").agg(
        pl.col("seller_id").n_unique().alias("sellers"), FAKE.mean().alias("fake"))
    rings = contacts.filter(pl.col("sellers") >= 3)
    assert rings.height >= 2
    assert rings["fake"].mean() > 0.5
    # a main image shared by >= 3 accounts across >= 3 brands is a ring's private photo
    mains = df.with_columns(pl.col("image_hashes").list.first().alias("main")).group_by("main").agg(
        pl.col("seller_id").n_unique().alias("sellers"),
        pl.col("brand").drop_nulls().n_unique().alias("brands"),
        FAKE.sum().alias("fakes"), pl.len().alias("n"))
    shared = mains.filter((pl.col("sellers") >= 3) & (pl.col("brands") >= 3))
    assert shared.height > 0
    assert shared["fakes"].sum() / shared["n"].sum() > 0.5


def _newly_targeted_fake_share(df: pl.DataFrame) -> dict[bool, float]:
    cutoff = START_DT + timedelta(days=DAYS * 2 / 3)
    shares = (df.filter(pl.col("brand").is_in(NEWLY_TARGETED))
              .group_by((pl.col("listed_at") >= cutoff).alias("late")).agg(FAKE.mean()))
    return dict(zip(shares["late"], shares[TRUTH], strict=True))


def test_drift_newly_targeted_brands(catalog: tuple[dict, pl.DataFrame], tmp_path: Path) -> None:
    summary, df = catalog
    assert summary["newly_targeted_brands"] == list(NEWLY_TARGETED)
    assert summary["late_rings"] >= 1
    share = _newly_targeted_fake_share(df)
    assert share[False] < 0.002
    assert share[True] > 0.02
    out = tmp_path / "nodrift.parquet"
    no_drift = generate_catalog(out, 15_000, seed=11, drift=0.0)
    assert no_drift["late_rings"] == 0
    assert _newly_targeted_fake_share(pl.read_parquet(out))[True] == 0.0


def test_deterministic_per_seed(tmp_path: Path) -> None:
    paths = [tmp_path / f"{name}.parquet" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4), strict=True):
        generate_catalog(path, 5_000, seed=seed, chunk_rows=2_000)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    a, c = pl.read_parquet(paths[0]), pl.read_parquet(paths[2])
    assert a.equals(pl.read_parquet(paths[1]))
    assert not a.equals(c)
    assert not a["title"].equals(c["title"])


def test_csv_and_jsonl_round_trip(tmp_path: Path) -> None:
    kwargs = {"listings": 3_000, "seed": 5, "chunk_rows": 1_000}
    ref = pl.read_parquet(generate_catalog(tmp_path / "c.parquet", **kwargs)["path"])
    csv_path = tmp_path / "c.csv"
    generate_catalog(csv_path, **kwargs)
    assert csv_path.read_text().count("listing_id,") == 1  # one header row, chunks appended
    csv = pl.read_csv(csv_path, try_parse_dates=True)
    assert csv.height == ref.height
    assert csv.columns == ref.columns
    assert csv.schema["listed_at"] == pl.Datetime("us", "UTC")
    assert csv["listed_at"].equals(ref["listed_at"])
    assert csv["image_hashes"].str.split("|").equals(ref["image_hashes"])
    assert csv["listing_id"].equals(ref["listing_id"])

    jsonl_path = tmp_path / "c.jsonl"
    generate_catalog(jsonl_path, **kwargs)
    lines = jsonl_path.read_text().splitlines()
    assert len(lines) == ref.height
    js = pl.read_ndjson(jsonl_path)
    assert js.height == ref.height
    assert js["image_hashes"].equals(ref["image_hashes"])
    assert js["listed_at"].str.ends_with("Z").all()
    assert js["price"].equals(ref["price"])


def test_bad_extension_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unsupported output format '\.xlsx'"):
        generate_catalog(tmp_path / "catalog.xlsx", 100)
    assert not (tmp_path / "catalog.xlsx").exists()


def test_progress_bar_writes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_catalog(tmp_path / "p.parquet", 2_000, chunk_rows=1_000, progress=True)
    captured = capsys.readouterr()
    assert "2/2" in captured.err
    assert captured.out == ""
