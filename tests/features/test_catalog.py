"""Contract validation on good and bad files, in all three formats."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from features.catalog import CatalogError, read_catalog
from features.outputs import rejects_path
from knockoff.cli import main
from tests.conftest import listings

FORMATS = ("parquet", "csv", "jsonl")


def good_frame() -> pl.DataFrame:
    return listings(
        {"image_hashes": ["00000000000000aa", "00000000000000bb"], "list_price": 150.0},
        {"brand": None, "is_counterfeit": True, "units_sold_30d": 4, "complaints_30d": 1},
        {"title": "Sac à main — réplica ★", "seller_id": "S1", "seller_verified": False},
    )


def write(frame: pl.DataFrame, path: Path) -> Path:
    """Write a contract frame the way a platform would in each format."""
    fmt = path.suffix.lstrip(".")
    if fmt == "parquet":
        frame.write_parquet(path)
    elif fmt == "csv":
        frame.with_columns(
            pl.col("image_hashes").list.join("|"),
            pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ).write_csv(path)
    else:
        frame.with_columns(
            pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        ).write_ndjson(path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_file_reads_identically_in_every_format(tmp_path: Path, fmt: str) -> None:
    frame = good_frame()
    catalog = read_catalog(write(frame, tmp_path / f"c.{fmt}"))
    rows = catalog.rows.collect()
    assert catalog.rejects.collect().height == 0
    assert rows.schema == frame.schema
    assert rows.equals(frame)


def test_folder_of_files_is_one_batch(tmp_path: Path) -> None:
    frame = good_frame()
    (tmp_path / "batch").mkdir()
    write(frame.head(2), tmp_path / "batch" / "part-0.csv")
    write(frame.tail(1), tmp_path / "batch" / "part-1.csv")
    assert read_catalog(tmp_path / "batch").rows.collect().equals(frame)


def test_folder_mixing_formats_is_refused(tmp_path: Path) -> None:
    write(good_frame(), tmp_path / "a.csv")
    write(good_frame(), tmp_path / "b.parquet")
    with pytest.raises(CatalogError, match="mixes formats"):
        read_catalog(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_column_names_file_and_column(tmp_path: Path, fmt: str) -> None:
    path = write(good_frame().drop("price"), tmp_path / f"c.{fmt}")
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    assert str(path) in str(err.value) and "price" in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_rows_go_to_rejects_with_reasons(tmp_path: Path, fmt: str) -> None:
    frame = listings(
        {},
        {"price": -5.0},
        {"title": ""},
        {"listing_id": "L1"},  # duplicate of row 1
        {"currency": "USD"},
        {},
        {},
    )
    path = write(frame, tmp_path / f"c.{fmt}")
    if fmt == "parquet":  # a parquet file cannot hold a bad timestamp; text formats can
        bad_ts_row = None
    else:
        bad_ts_row = 6
        text = path.read_text(encoding="utf-8").splitlines()
        line = bad_ts_row if fmt == "csv" else bad_ts_row - 1  # csv has a header line
        text[line] = text[line].replace("2026-03-01T12:00:00Z", "yesterday", 1)
        path.write_text("\n".join(text) + "\n", encoding="utf-8")
    catalog = read_catalog(path, currency="EUR")
    rows = catalog.rows.collect()
    rejects = catalog.rejects.sort("row_number").collect()
    reasons = dict(zip(rejects["row_number"], rejects["reason"], strict=True))
    assert reasons[2] == "price must be > 0"
    assert reasons[3] == "title empty"
    assert reasons[4] == "duplicate listing_id (first at row 1)"
    assert "currency is not the model's EUR" in reasons[5]
    if bad_ts_row is not None:
        assert reasons[bad_ts_row] == "listed_at is not an ISO-8601 timestamp"
    assert rows.height + rejects.height == frame.height
    assert set(rows["listing_id"]).isdisjoint(
        set(rejects.filter(pl.col("reason").str.starts_with("duplicate").not_())["listing_id"])
    )
    assert rejects["file"].unique().to_list() == [str(path)]


def test_parquet_with_wrongly_typed_values_rejects_rows(tmp_path: Path) -> None:
    frame = good_frame().with_columns(pl.Series("price", ["100", "abc", "3"]))
    catalog = read_catalog(write(frame, tmp_path / "c.parquet"))
    rejects = catalog.rejects.collect()
    assert rejects["reason"].to_list() == ["price is not a number"]
    assert catalog.rows.collect()["price"].to_list() == [100.0, 3.0]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"")
    with pytest.raises(CatalogError, match=r"c\.csv: file is empty"):
        read_catalog(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = write(good_frame(), tmp_path / "c.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"c\.parquet: not a readable parquet file"):
        read_catalog(path)


def test_csv_that_is_not_utf8(tmp_path: Path) -> None:
    path = write(good_frame(), tmp_path / "c.csv")
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1", errors="replace"))
    with pytest.raises(CatalogError, match="not UTF-8"):
        read_catalog(path)


def test_file_that_is_not_its_declared_format(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    write(good_frame(), tmp_path / "c.csv").rename(path)
    with pytest.raises(CatalogError, match="not a readable parquet file"):
        read_catalog(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(CatalogError, match="unknown format"):
        read_catalog(path)


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    frame = good_frame().select("listing_id", "seller_id", "title", "category", "price",
                                "currency", "listed_at")
    catalog = read_catalog(write(frame, tmp_path / "c.parquet"))
    rows = catalog.rows.collect()
    assert rows.height == 3 and rows["brand"].null_count() == 3
    assert "seller_contact_hash" in catalog.absent_columns


def test_extra_columns_are_named_and_ignored(tmp_path: Path) -> None:
    frame = good_frame().with_columns(pl.lit("x").alias("warehouse"))
    catalog = read_catalog(write(frame, tmp_path / "c.parquet"))
    assert catalog.extra_columns == ("warehouse",)
    assert "warehouse" not in catalog.rows.collect_schema().names()


# --- the command line: exit status 2, one message, no traceback; every row accounted for ---

def test_cli_whole_batch_error_exits_2_without_traceback(tmp_path: Path, capsys) -> None:
    path = write(good_frame().drop("title"), tmp_path / "c.jsonl")
    assert main(["features", str(path), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err
    assert "title" in err and str(path) in err and "Traceback" not in err


def test_cli_features_accounts_for_every_row(tmp_path: Path, capsys) -> None:
    frame = listings({}, {"price": 0.0}, {}, {"title": "   "})
    path = write(frame, tmp_path / "c.csv")
    out = tmp_path / "f.parquet"
    assert main(["features", str(path), "--out", str(out)]) == 0
    features = pl.read_parquet(out)
    rejects = pl.read_parquet(rejects_path(out))
    assert features.height == 2 and rejects.height == 2
    assert sorted(rejects["reason"]) == ["price must be > 0", "title empty"]
    assert '"rejected": 2' in capsys.readouterr().out.strip().splitlines()[-1]


def test_rejects_file_is_written_even_when_empty(tmp_path: Path) -> None:
    path = write(good_frame(), tmp_path / "c.parquet")
    out = tmp_path / "f.csv"
    assert main(["features", str(path), "--out", str(out)]) == 0
    assert rejects_path(out).exists()
    assert pl.read_csv(rejects_path(out)).height == 0


def many(n: int) -> pl.DataFrame:
    return listings(*[{} for _ in range(n)]).with_columns(
        pl.format("L{}", pl.int_range(pl.len())).alias("listing_id")
    )


def test_broken_line_deep_in_a_jsonl_file_names_the_file(tmp_path: Path, capsys) -> None:
    path = write(many(1500), tmp_path / "c.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1400] = "{this is not json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["features", str(path), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_unterminated_quote_in_a_csv_folder_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    write(many(50), tmp_path / "batch" / "a.csv")
    bad = write(many(50).with_columns(pl.format("M{}", pl.int_range(pl.len()))
                                      .alias("listing_id")), tmp_path / "batch" / "b.csv")
    bad.write_text(bad.read_text(encoding="utf-8") + 'M99,S1,"never closed\n', encoding="utf-8")
    with pytest.raises(CatalogError, match=r"b\.csv"):
        read_catalog(tmp_path / "batch")


def test_jsonl_column_that_appears_late_is_read(tmp_path: Path) -> None:
    frame = many(1500).with_columns(
        pl.when(pl.int_range(pl.len()) >= 1200).then(pl.lit("late text")).alias("description")
    )
    path = tmp_path / "c.jsonl"
    rows = frame.with_columns(pl.col("listed_at", "seller_registered_at")
                              .dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    import json
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    got = read_catalog(path).rows.collect()
    assert got["description"].drop_nulls().len() == 300


def test_nan_and_infinite_prices_are_rejected_nan_optional_numbers_are_missing(
    tmp_path: Path,
) -> None:
    frame = listings({"price": float("nan")}, {"price": float("inf")}, {"list_price": float("nan")},
                     {"list_price": float("inf")}, {"seller_rating": float("nan")}, {})
    catalog = read_catalog(write(frame, tmp_path / "c.parquet"))
    rejects = catalog.rejects.collect()
    assert rejects["row_number"].to_list() == [1, 2, 4]
    assert all("finite" in r for r in rejects["reason"])
    rows = catalog.rows.collect()
    assert rows["listing_id"].to_list() == ["L3", "L5", "L6"]
    assert rows["list_price"].null_count() == 3 and rows["seller_rating"].null_count() == 1
    assert catalog.nan_as_missing == {"list_price": 1, "seller_rating": 1}


def test_header_only_csv_is_an_empty_batch(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(",".join(good_frame().columns) + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no listings"):
        read_catalog(path)


def test_duplicates_across_files_name_the_first_file(tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    write(many(3), tmp_path / "batch" / "a.parquet")
    write(many(2).with_columns(pl.lit(1.0).alias("price"), pl.lit("extra").alias("note")),
          tmp_path / "batch" / "b.parquet")
    catalog = read_catalog(tmp_path / "batch")
    reasons = catalog.rejects.collect()["reason"].to_list()
    assert reasons == ["duplicate listing_id (first at row 1 of a.parquet)",
                       "duplicate listing_id (first at row 2 of a.parquet)"]
    assert catalog.rows.collect().height == 3


def test_stored_types_that_carry_the_meaning_are_converted(tmp_path: Path) -> None:
    frame = good_frame()
    stored = frame.with_columns(
        pl.col("listing_id").cast(pl.Binary), pl.col("category").cast(pl.Categorical),
        pl.col("currency").cast(pl.Enum(["EUR"])), pl.col("price").cast(pl.Decimal(10, 2)),
        pl.col("image_count").cast(pl.UInt8), pl.col("units_sold_30d").cast(pl.Float32),
        pl.col("listed_at").dt.replace_time_zone(None),
        pl.col("seller_verified").cast(pl.Int8),
    )
    catalog = read_catalog(write(stored, tmp_path / "c.parquet"))
    assert catalog.rejects.collect().height == 0
    assert catalog.rows.collect().equals(frame)


@pytest.mark.parametrize(("column", "value"), [("price", True), ("title", 1.5),
                                               ("listed_at", 1_772_000_000),
                                               ("image_hashes", [1, 2])])
def test_stored_types_that_cannot_carry_the_meaning_refuse_the_batch(
    tmp_path: Path, column: str, value: object
) -> None:
    path = write(good_frame().with_columns(pl.lit(value).alias(column)), tmp_path / "c.parquet")
    with pytest.raises(CatalogError, match=rf"c\.parquet: column {column} is stored as"):
        read_catalog(path)
