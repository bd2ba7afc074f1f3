"""Bad input, nothing lost: a table of bad inputs through `score`, `features` and `train`.

For each kind: the exit status; no traceback; one error message naming the file; and either
every input row scored (or featured) or rejected, or, on a whole-batch error, the input
untouched and no output (nor temporary file) left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from features import table
from features.contract import CatalogError
from features.outputs import publishing, rejects_path
from knockoff.cli import main
from synthetic.generate import generate_catalog
from tests.conftest import listings
from tests.features.test_catalog import many, write

N = 20  # rows of every generated input
ROOT = Path(__file__).resolve().parents[1]


# --- building bad inputs ---

def frame(n: int = N) -> pl.DataFrame:
    return many(n)


def csv_lines(path: Path, edit: Callable[[list[str]], None]) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl_rows(path: Path, rows: dict[int, dict[str, object]]) -> Path:
    """A JSON Lines file of `frame()` with some rows' values replaced (any JSON kind)."""
    records = frame().with_columns(
        pl.col("listed_at", "seller_registered_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_dicts()
    for i, changes in rows.items():
        records[i].update(changes)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def parquet_with(path: Path, **columns: pl.Series | pl.Expr) -> Path:
    frame().with_columns(**columns).write_parquet(path)
    return path


def corrupt_column(path: Path, column: str) -> Path:
    """Overwrite bytes in the middle of one column's compressed pages."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


def folder(tmp: Path, *extra: Callable[[Path], object]) -> Path:
    """A folder with two good Parquet parts, then whatever `extra` adds."""
    batch = tmp / "batch"
    batch.mkdir()
    write(frame(10), batch / "part-0.parquet")
    write(frame(N).tail(10), batch / "part-1.parquet")
    for add in extra:
        add(batch)
    return batch


def replace(line: int, old: str, new: str) -> Callable[[list[str]], None]:
    """Edit one line of a text file (line 0 is a CSV's header)."""
    def edit(lines: list[str]) -> None:
        assert old in lines[line]
        lines[line] = lines[line].replace(old, new, 1)
    return edit


def set_line(line: int, text: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        lines[line] = text
    return edit


def header_only(lines: list[str]) -> None:
    del lines[1:]


def titles(*values: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        for i, value in enumerate(values, start=1):
            replace(i, ",Leather bag,", f",{value},")(lines)
    return edit


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def renamed(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    rejected: int | None  # rows rejected; None: the whole batch is refused (exit 2)
    names: str = ""  # what the error must name (default: the input path)


def c(name: str, build: Callable[[Path], Path], rejected: int | None, names: str = "") -> Case:
    return Case(name, build, rejected, names)


BATCH_ERRORS = [
    c("missing column, parquet", lambda t: write(frame().drop("price"), t / "c.parquet"), None),
    c("missing column, csv", lambda t: write(frame().drop("title"), t / "c.csv"), None),
    c("missing column, jsonl", lambda t: write(frame().drop("currency"), t / "c.jsonl"), None),
    c("empty file", lambda t: empty(t / "c.csv"), None),
    c("header only", lambda t: csv_lines(write(frame(), t / "c.csv"), header_only), None),
    c("zero-row parquet", lambda t: write(frame().head(0), t / "c.parquet"), None),
    c("truncated parquet", lambda t: _truncate(write(frame(), t / "c.parquet")), None),
    c("truncated jsonl", lambda t: _truncate(write(frame(), t / "c.jsonl")), None),
    c("csv named .parquet", lambda t: renamed(write(frame(), t / "c.csv"), "c.parquet"), None),
    c("non-UTF-8 csv", lambda t: _latin1(write(frame(), t / "c.csv")), None),
    c("non-UTF-8 jsonl", lambda t: _latin1(write(frame(), t / "c.jsonl")), None),
    c("unknown extension", lambda t: renamed(write(frame(), t / "c.csv"), "c.xlsx"), None),
    c("no such file", lambda t: t / "missing.parquet", None),
    c("broken jsonl line", lambda t: csv_lines(write(frame(), t / "c.jsonl"),
                                               set_line(12, "{not json")), None, "line 13"),
    c("jsonl line not an object", lambda t: csv_lines(write(frame(), t / "c.jsonl"),
                                                      set_line(4, "[1, 2]")), None, "line 5"),
    c("unterminated csv quote", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        15, ",Leather bag,", ',"Leather bag,')), None),
    c("duplicate csv header", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        0, "list_price", "price")), None, "'price' appears twice"),
    c("boolean price", lambda t: parquet_with(t / "c.parquet", price=pl.lit(True)), None,
      "price"),
    c("boolean title", lambda t: parquet_with(t / "c.parquet", title=pl.lit(False)), None,
      "title"),
    c("integer image hashes", lambda t: parquet_with(
        t / "c.parquet", image_hashes=pl.lit([1, 2], pl.List(pl.Int64))), None, "image_hashes"),
    c("struct image hashes", lambda t: parquet_with(
        t / "c.parquet", image_hashes=pl.struct(a=pl.lit("x"))), None, "image_hashes"),
    c("epoch integer listed_at", lambda t: parquet_with(
        t / "c.parquet", listed_at=pl.lit(1_772_000_000)), None, "listed_at"),
    c("corrupt parquet page", lambda t: corrupt_column(write(frame(2000), t / "c.parquet"),
                                                       "description"), None),
    c("subfolder in folder", lambda t: folder(t, lambda b: (b / "more").mkdir()), None, "more"),
    c("dangling link in folder", lambda t: folder(
        t, lambda b: (b / "gone.parquet").symlink_to(b / "nowhere.parquet")), None, "gone"),
    c("looping link in folder", lambda t: folder(
        t, lambda b: (b / "loop.parquet").symlink_to(b / "loop.parquet")), None, "loop"),
    c("zero-row file in folder", lambda t: folder(
        t, lambda b: write(frame().head(0), b / "part-2.parquet")), None, "part-2"),
    c("folder mixing formats", lambda t: folder(
        t, lambda b: write(frame(), b / "part-9.csv")), None),
    c("stray file in folder", lambda t: folder(
        t, lambda b: (b / "README.txt").write_text("hi")), None, "README.txt"),
    c("empty folder", lambda t: folder(t, *[lambda b, n=n: (b / n).unlink()
                                             for n in ("part-0.parquet", "part-1.parquet")]),
      None),
]

ROW_ERRORS = [
    c("bad prices", lambda t: write(listings(
        {}, {"price": 0.0}, {"price": -3.0}, {"price": float("nan")}, {"price": float("inf")},
        {"price": None}, {}), t / "c.parquet"), 5),
    c("bad timestamp text", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        2, "2026-03-01T12:00:00Z", "yesterday")), 1),
    c("duplicate listing_id", lambda t: write(
        frame().with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("L0"))
                             .otherwise("listing_id").alias("listing_id")), t / "c.parquet"), 1),
    c("other currency", lambda t: write(listings({}, {"currency": "USD"}), t / "c.jsonl"), 1),
    c("empty and invisible titles", lambda t: csv_lines(
        write(frame(), t / "c.csv"), titles('""', "   ", "\u200b\u200d", "\u0007")), 4),
    c("ragged csv row", lambda t: csv_lines(write(frame(), t / "c.csv"), lambda ls: ls.append(
        ls.pop(3) + ",surplus")), 1),
    c("short csv row", lambda t: csv_lines(write(frame(), t / "c.csv"), set_line(6, "L5,S6")),
      1),
    c("jsonl hashes as text among arrays", lambda t: jsonl_rows(t / "c.jsonl", {
        0: {"image_hashes": ["00000000000000aa"]}, 1: {"image_hashes": "00000000000000aa"}}), 1),
    c("jsonl object as title", lambda t: jsonl_rows(t / "c.jsonl", {3: {"title": {"a": 1}}}), 1),
    c("jsonl array as seller_id", lambda t: jsonl_rows(t / "c.jsonl", {3: {"seller_id": [1]}}),
      1),
    c("jsonl boolean and list prices", lambda t: jsonl_rows(
        t / "c.jsonl", {1: {"price": True}, 2: {"price": [5]}}), 2),
    c("jsonl fractional count", lambda t: jsonl_rows(
        t / "c.jsonl", {1: {"units_sold_30d": 1.5}, 2: {"units_sold_30d": 2.0}}), 1),
    c("parquet fractional count", lambda t: parquet_with(t / "c.parquet", units_sold_30d=pl.Series(
        [1.5, 2.0, float("nan")] + [None] * (N - 3))), 1),
    c("parquet integer 2 as boolean", lambda t: parquet_with(
        t / "c.parquet", seller_verified=pl.Series([2, 1, 0] + [None] * (N - 3))), 1),
    c("far-future listed_at", lambda t: write(listings(
        {}, {"listed_at": datetime(9999, 1, 1, tzinfo=UTC)}), t / "c.parquet"), 1),
    c("negative counts and rating", lambda t: write(listings(
        {}, {"returns_30d": -1}, {"seller_rating": 7.0}), t / "c.parquet"), 2),
    c("text in a number column", lambda t: csv_lines(write(frame(), t / "c.csv"), replace(
        9, ",100.0,", ",abc,")), 1),
    c("NaN in optional numbers", lambda t: _nan_numbers(t / "c.parquet"), 0),
    c("unknown extra columns", lambda t: write(frame().with_columns(pl.lit(1).alias("shelf")),
                                               t / "c.parquet"), 0),
    c("ignored . and _ files in folder", lambda t: folder(
        t, lambda b: (b / "_SUCCESS").write_bytes(b""), lambda b: (b / ".x").write_text("x")),
      0),
    c("optional columns absent in one file", lambda t: folder(
        t, lambda b: write(frame(N + 5).tail(5).select(
            "listing_id", "seller_id", "title", "category", "price", "currency", "listed_at"),
            b / "part-2.parquet")), 0),
]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _latin1(path: Path) -> Path:
    text = path.read_text(encoding="utf-8").replace("Leather", "Léather", 1)
    path.write_bytes(text.encode("latin-1"))
    return path


def _nan_numbers(path: Path) -> Path:
    """Missing optional numbers written as NaN (as pandas holds them), not as nulls."""
    nan = float("nan")
    frame().with_columns(
        pl.Series("list_price", [nan] * (N - 2) + [150.0, 160.0]),
        pl.Series("units_sold_30d", [nan] * N),
    ).write_parquet(path)
    return path


# --- running them ---

def fingerprint(path: Path) -> dict[str, str]:
    """Every file under a path and its content hash (links as their target)."""
    files = [path] if not path.is_dir() else sorted(path.rglob("*"))
    return {str(p): (os.readlink(p) if p.is_symlink() else
                     hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in files if p.is_symlink() or p.exists()}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def check_refused(case: Case, status: int, err: str, source: Path, before: dict[str, str],
                  out_dir: Path) -> None:
    assert status == 2, (case.name, err)
    assert "Traceback" not in err and "panicked" not in err, err
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert len(errors) == 1, err
    assert str(source) in errors[0] or source.name in errors[0], errors[0]
    assert case.names in errors[0], errors[0]
    assert fingerprint(source) == before
    assert list(out_dir.iterdir()) == [], "nothing published, no temporary file left"


def rows_in(path: Path) -> int:
    return pl.read_parquet(path).height


def input_rows(case: Case, source: Path) -> int:
    files = sorted(p for p in source.iterdir() if not p.name.startswith((".", "_"))) \
        if source.is_dir() else [source]
    return sum(pl.read_parquet(f).height if f.suffix == ".parquet" else
               len(f.read_text(encoding="utf-8").splitlines()) - (f.suffix == ".csv")
               for f in files)


@pytest.fixture(scope="module")
def bundle(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`knockoff train` once per module, on a catalog with a few bad rows of several kinds."""
    folder_ = tmp_path_factory.mktemp("train")
    path = folder_ / "catalog.parquet"
    generate_catalog(path, 8_000, seed=5, days=120)
    good = pl.read_parquet(path)
    bad = good.head(6).with_columns(
        pl.Series("price", [0.0, -1.0, float("nan"), None, 5.0, 5.0]),
        pl.Series("listing_id", [f"bad{i}" for i in range(4)] + good["listing_id"][:2].to_list()),
    )
    pl.concat([good, bad]).write_parquet(path)
    config = folder_ / "train.toml"
    config.write_text("num_boost_round = 30\nearly_stopping_rounds = 10\nthreads = 1\n"
                      "valid_days = 40\n")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["train", "--catalog", str(path), "--config", str(config)])
    assert status == 0
    return Path(json.loads(stdout.getvalue().strip().splitlines()[-1])["bundle"])


@pytest.mark.parametrize("case", BATCH_ERRORS, ids=lambda k: k.name)
def test_whole_batch_errors_refuse_every_command(case: Case, tmp_path: Path, bundle: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = case.build(tmp_path)
    before = fingerprint(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    commands = {
        "score": ["score", str(source), "--out", str(out_dir / "s.parquet"),
                  "--model", str(bundle), "--threads", "1"],
        "features": ["features", str(source), "--out", str(out_dir / "f.parquet")],
        "train": ["train", "--catalog", str(source)],
    }
    for argv in commands.values():
        status, _, err = run(argv, capsys)
        check_refused(case, status, err, source, before, out_dir)


@pytest.mark.parametrize("case", ROW_ERRORS, ids=lambda k: k.name)
def test_bad_rows_are_rejected_and_every_row_accounted_for(
    case: Case, tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = case.build(tmp_path)
    n = input_rows(case, source)
    scores, features = tmp_path / "out" / "s.parquet", tmp_path / "out" / "f.parquet"
    for argv, out in (
        (["score", str(source), "--out", str(scores), "--model", str(bundle), "--threads", "1"],
         scores),
        (["features", str(source), "--out", str(features)], features),
    ):
        status, stdout, err = run(argv, capsys)
        assert status == 0, err
        assert "Traceback" not in err and ": error:" not in err, err
        summary = json.loads(stdout.strip().splitlines()[-1])
        rejects = pl.read_parquet(rejects_path(out))
        assert rows_in(out) + rejects.height == n
        assert rejects.height == case.rejected == summary["rejected"], rejects["reason"]
        assert rejects["reason"].null_count() == 0
        assert out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
        if case.name == "optional columns absent in one file" and argv[0] == "score":
            assert "seller_contact_hash" in err  # the warning, though other files have it
    if case.name == "NaN in optional numbers":
        assert summary["nan_as_missing"] == {"list_price": N - 2, "units_sold_30d": N}


def test_row_reasons_name_the_rule(tmp_path: Path) -> None:
    from features.catalog import read_catalog

    cases = {k.name: k for k in ROW_ERRORS}
    expected = {
        "ragged csv row": "row has more fields than the header",
        "jsonl hashes as text among arrays": "image_hashes is not a valid list of strings",
        "jsonl object as title": "title is not a valid string",
        "parquet fractional count": "units_sold_30d is not a valid whole number",
        "parquet integer 2 as boolean": "seller_verified is not a valid boolean",
        "far-future listed_at": "listed_at is more than a day after the batch was read",
        "empty and invisible titles": "title empty",
    }
    for name, reason in expected.items():
        folder_ = tmp_path / name.replace(" ", "_")
        folder_.mkdir()
        got = read_catalog(cases[name].build(folder_)).rejects.collect()["reason"]
        assert got.len() > 0 and all(r == reason for r in got), (name, got.to_list())


def test_jsonl_arrays_keep_their_type_when_some_rows_are_text(tmp_path: Path) -> None:
    from features.catalog import read_catalog

    rows = read_catalog(ROW_ERRORS[7].build(tmp_path)).rows.collect()
    assert rows.schema["image_hashes"] == pl.List(pl.String)
    assert rows["image_hashes"][0].to_list() == ["00000000000000aa"]


def test_out_may_not_be_an_input(tmp_path: Path, bundle: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = write(frame(), tmp_path / "c.parquet")
    batch = folder(tmp_path)
    for src, out in ((source, source), (batch, batch / "scores.parquet"),
                     (write(frame(), tmp_path / "x.rejects.parquet"), tmp_path / "x.parquet")):
        before = fingerprint(src)
        for argv in (["score", str(src), "--out", str(out), "--model", str(bundle)],
                     ["features", str(src), "--out", str(out)]):
            status, _, err = run(argv, capsys)
            assert status == 2 and "--out" in err and "Traceback" not in err, err
            assert fingerprint(src) == before


def test_a_folder_at_the_rejects_path_publishes_nothing(tmp_path: Path, bundle: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = write(frame(), tmp_path / "c.parquet")
    out = tmp_path / "out" / "s.parquet"
    rejects_path(out).mkdir(parents=True)
    status, _, err = run(["score", str(source), "--out", str(out), "--model", str(bundle)],
                         capsys)
    assert status == 2 and str(rejects_path(out)) in err and "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == [rejects_path(out).name]


def test_corrupt_saved_state_is_a_clear_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    source = write(frame(), tmp_path / "c.parquet")
    state = tmp_path / "state"
    assert run(["features", str(source), "--out", str(tmp_path / "f.parquet"), "--state",
                str(state)], capsys)[0] == 0
    for damage in ('{"version": 1', '{"version": 1}', "[]"):
        (state / "state.json").write_text(damage)
        status, _, err = run(["features", str(source), "--out", str(tmp_path / "g.parquet"),
                              "--state", str(state)], capsys)
        assert status == 2 and str(state) in err and "Traceback" not in err, err
        assert not (tmp_path / "g.parquet").exists()


def test_interrupted_run_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    source = write(frame(), tmp_path / "c.parquet")
    out = tmp_path / "out" / "f.parquet"
    written: list[Path] = []

    def write_then_interrupt(frame_: pl.LazyFrame, path: Path, fmt: str) -> None:
        written.append(path)
        path.write_bytes(b"partial")
        if len(written) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(table, "write_frame", write_then_interrupt)
    status, _, _ = run(["features", str(source), "--out", str(out)], capsys)
    assert status == 130 and len(written) == 2 and all(".partial" in p.name for p in written)
    assert list(out.parent.iterdir()) == []


def test_concurrent_writers_use_their_own_temporary_files(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    with publishing(out) as (first,), publishing(out) as (second,):
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("first run")
        second.write_text("second run")
    assert out.read_text() == "first run"  # the outer run finished last, with its own rows
    assert list(tmp_path.iterdir()) == [out]


def test_a_failed_write_names_the_output_not_its_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    with pytest.raises(CatalogError) as err, publishing(rejects_path(out), out) as (_, temp):
        raise OSError(28, "No space left on device", str(temp))
    assert str(err.value) == f"{out}: cannot be written (No space left on device)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", [BATCH_ERRORS[15], BATCH_ERRORS[20], ROW_ERRORS[5]],
                         ids=lambda k: k.name)
def test_real_process_exit_status_and_no_traceback(case: Case, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    env = {**os.environ, "POLARS_MAX_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "knockoff", "features", str(source), "--out",
         str(tmp_path / "out" / "f.parquet")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == (2 if case.rejected is None else 0), done.stderr
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr
    json.loads(done.stdout.strip().splitlines()[-1])  # the last line is one JSON object
