"""Bad input, nothing lost: a table of bad inputs through `score`, `features` and `train`.

For each kind: the exit status; no traceback; one error message naming the file; and either
every input row scored (or featured) or rejected, or, on a whole-batch error, the input
untouched and no output (nor temporary file) left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from features import table
from features.contract import CatalogError
from features.outputs import publishing, rejects_path
from knockoff.cli import main
from synthetic.generate import generate_catalog
from tests.bad_inputs import (
    BATCH_ERRORS,
    ROW_ERRORS,
    Case,
    N,
    by_name,
    fingerprint,
    folder,
    frame,
    input_rows,
)
from tests.features.test_catalog import write

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def bundle(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`knockoff train` once per module, on a catalog with a few bad rows of several kinds."""
    folder_ = tmp_path_factory.mktemp("train")
    path = folder_ / "catalog.parquet"
    generate_catalog(path, 5_000, seed=5, days=120)
    good = pl.read_parquet(path)
    bad = good.head(6).with_columns(
        pl.Series("price", [0.0, -1.0, float("nan"), None, 5.0, 5.0]),
        pl.Series("listing_id", [f"bad{i}" for i in range(4)] + good["listing_id"][:2].to_list()),
    )
    pl.concat([good, bad]).write_parquet(path)
    config = folder_ / "train.toml"
    config.write_text("num_boost_round = 20\nearly_stopping_rounds = 5\nthreads = 1\n"
                      "valid_days = 40\n")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["train", "--catalog", str(path), "--config", str(config)])
    summary = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert status == 0
    assert summary["rows"] == good.height + bad.height and summary["rows_rejected"] == 6
    return Path(summary["bundle"])


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
        if case.name == "NaN in optional numbers":  # kept as missing, counted per column
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

    rows = read_catalog(by_name("jsonl hashes as text among arrays").build(tmp_path)).rows.collect()
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


@pytest.mark.parametrize("case", [by_name("unterminated csv quote"), by_name("struct image hashes"),
                                   by_name("ragged csv row")],
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
