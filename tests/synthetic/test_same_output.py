"""The generator's output is pinned: same arguments, same bytes as before the package split; ids
can be prefixed; a failed or interrupted run leaves no file behind."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import synthetic.generate
from features.catalog import read_catalog
from synthetic.generate import generate_catalog

# sha256 of the files `features/generate.py` wrote before it became the synthetic package
# (commit 11ac8d0; `knockoff generate --listings 3000 --seed 7 --out a.parquet` etc.). Parquet
# bytes also carry the writer's library version: after a pyarrow upgrade, check the CSV cases
# still pass and re-record the Parquet ones from the parent commit.
DIGESTS: list[tuple[str, dict[str, Any], str]] = [
    ("a.parquet", {"listings": 3000, "seed": 7},
     "785952f5ba00975f2915b4c0c60b643da7ecc0a9e51a3ff09151313e3501e139"),
    ("a.csv", {"listings": 3000, "seed": 7},
     "13c1a357769856a02369819549eab4be07a43f3223c056c119dc4c260d05aa24"),
    ("a.jsonl", {"listings": 3000, "seed": 7},
     "fca9c4ac19e3f135b8a34269e70278f803e226f3c8ac34cb5f0c77f0e3a821c9"),
    ("drift.parquet", {"listings": 3000, "seed": 7, "drift": 2.0, "start": date(2026, 4, 1)},
     "f0646bb33c33df75f7d17b3fe245ff06d5b96f88fe410ee92b1adb03e7bef41d"),
    ("seed8.parquet", {"listings": 3000, "seed": 8},
     "3fb02aea90a03e5b784063f372cd8e66d26104e30cca6d3ed7d25752a2779ba9"),
    ("nodrift.csv", {"listings": 2500, "seed": 3, "days": 40, "drift": 0.0},
     "cb3250a3e07022c6a8888f247f3b0e78e0d1808911859d577c4c96fdafc70ffa"),
    ("chunked.parquet", {"listings": 2500, "seed": 5, "chunk_rows": 1000,
                         "start": date(2026, 2, 1), "days": 60},
     "62ce941087eaf2e7a4648ac55a41e605f26bbe61ab41e7d853ec94c0eb2611b6"),
    ("chunked.jsonl", {"listings": 2500, "seed": 5, "chunk_rows": 1000,
                       "start": date(2026, 2, 1), "days": 60},
     "59bd0845df357817d256a2abc8ab7d3bc01b37386b85948adce23063bbe50a06"),
]


@pytest.mark.parametrize(("name", "kwargs", "digest"), DIGESTS, ids=[d[0] for d in DIGESTS])
def test_same_bytes_as_before_the_split(tmp_path: Path, name: str, kwargs: dict[str, Any],
                                        digest: str) -> None:
    out = tmp_path / name
    generate_catalog(out, **kwargs)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_id_prefix_changes_only_the_ids(tmp_path: Path) -> None:
    plain = generate_catalog(tmp_path / "plain.parquet", 2000, seed=4)
    prefixed = generate_catalog(tmp_path / "b.parquet", 2000, seed=4, id_prefix="b-2")
    assert prefixed["id_prefix"] == "b-2" and plain["id_prefix"] == ""
    a, b = pl.read_parquet(plain["path"]), pl.read_parquet(prefixed["path"])
    assert (b["listing_id"] == "b-2" + a["listing_id"]).all()
    assert (b["seller_id"] == "b-2" + a["seller_id"]).all()
    assert b.drop("listing_id", "seller_id").equals(a.drop("listing_id", "seller_id"))


@pytest.mark.parametrize(("prefixes", "duplicates"), [(("", ""), 1500), (("a", "b"), 0)])
def test_prefixed_catalogs_share_a_folder(tmp_path: Path, prefixes: tuple[str, str],
                                          duplicates: int) -> None:
    for name, seed, prefix in zip("ab", (1, 2), prefixes, strict=True):
        generate_catalog(tmp_path / f"{name}.parquet", 1500, seed=seed, id_prefix=prefix)
    catalog = read_catalog(tmp_path)
    rows = catalog.rows.collect()
    assert catalog.rejects.collect().height == duplicates  # the second file's ids repeat
    assert rows.height == catalog.rows_read - duplicates == 3000 - duplicates
    assert rows["listing_id"].n_unique() == rows.height
    if duplicates == 0:
        assert set(rows["seller_id"].str.slice(0, 1)) == {"a", "b"}


@pytest.mark.parametrize("prefix", ["-a", "a b", "a|b", "x" * 33, "é"])
def test_bad_id_prefix_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="id prefix"):
        generate_catalog(tmp_path / "c.parquet", 100, id_prefix=prefix)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.generate.listing_chunk
    calls: list[int] = []

    def interrupted_after_one_chunk(*args: Any) -> pl.DataFrame:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic.generate, "listing_chunk", interrupted_after_one_chunk)
    for name in ("c.parquet", "c.csv"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            generate_catalog(tmp_path / name, 3000, chunk_rows=1000)
        assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []
