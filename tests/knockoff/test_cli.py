"""The command line: version, help, option errors as JSON, refused suffix/format contradictions,
`generate --id-prefix`, and interrupts (SIGINT 130, SIGTERM 143) that leave no partial file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import synthetic.generate
from features.catalog import read_catalog
from knockoff.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR, main

KNOCKOFF = Path(sys.executable).with_name("knockoff")  # the installed console script


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out == f"knockoff {version('knockoff')}\n"


HELP = {
    "generate": ("write a synthetic labelled catalog", ["--listings N", "--seed S", "--out PATH",
                                                        "--start DATE", "--days D", "--drift X",
                                                        "--id-prefix P"]),
    "features": ("validate a catalog and write its feature table",
                 ["INPUT", "--out PATH", "--state DIR", "--format {parquet,csv}"]),
    "train": ("train, evaluate, track in MLflow", ["--catalog PATH", "--valid-from DATE",
                                                   "--config TOML", "--holdout PATH"]),
    "tune": ("Optuna search", ["--catalog PATH", "--trials N", "--out PATH"]),
    "score": ("score a catalog batch", ["INPUT", "--out PATH", "--model REF", "--chunk-rows N",
                                        "--threads N", "--format {parquet,csv}"]),
    "demo": ("the whole loop on synthetic data", ["--out DIR", "--listings N", "--batch N"]),
    "drift": ("population stability (PSI)", ["INPUT", "--model REF", "--threshold PSI",
                                              "--log", "--threads N"]),
}


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_has_summary_example_and_named_metavars(command: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    summary, metavars = HELP[command]
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    description = out.split("\n\n")[1]
    assert description.startswith(summary) and "\n" not in description.strip()
    assert re.search(rf"\nexample:\n  knockoff {command} \S", out)
    for metavar in metavars:
        assert metavar in out, metavar
    top = run(capsys, "--help")[1]  # the command list shows the same summary
    assert re.search(rf"\n    {command} +{re.escape(summary)}", top)


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: COMMAND"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["generate"], "the following arguments are required: --out"),
    (["generate", "--listings", "0", "--out", "x.parquet"], "--listings: must be at least 1"),
    (["generate", "--start", "first of May", "--out", "x.parquet"], "not an ISO date"),
    (["score", "in.parquet", "--out", "s.parquet", "--chunk-rows", "many"],
     "--chunk-rows: not a whole number: 'many'"),
    (["tune", "--catalog", "c.parquet", "--trials", "-1"], "--trials: must be at least 1"),
    (["features", "in.parquet", "--out", "f.parquet", "--format", "xlsx"], "invalid choice"),
])
def test_option_errors_exit_2_with_json_and_usage(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert status == EXIT_USER_ERROR
    assert message in last_json(out)["error"]
    assert err.startswith("usage: knockoff") and "error: " in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["score", "features"])
@pytest.mark.parametrize(("out", "fmt"), [("x.parquet", "csv"), ("x.csv", "parquet"),
                                          ("x.pq", "csv")])
def test_suffix_that_contradicts_format_is_refused(command: str, out: str, fmt: str,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / out
    status, stdout, err = run(capsys, command, str(tmp_path / "in.parquet"), "--out", str(target),
                              "--format", fmt)
    assert status == EXIT_USER_ERROR
    assert f"--format is {fmt}" in last_json(stdout)["error"]
    assert f"knockoff {command}: error:" in err
    assert list(tmp_path.iterdir()) == []


def test_generate_then_features_with_agreeing_format(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    catalog, table = tmp_path / "c.parquet", tmp_path / "f.CSV"
    status, out, _ = run(capsys, "generate", "--listings", "2000", "--seed", "3", "--days", "60",
                         "--out", str(catalog))
    summary = last_json(out)
    assert status == 0 and summary["path"] == str(catalog)
    assert (summary["listings"], summary["seed"], summary["id_prefix"]) == (2000, 3, "")
    status, out, _ = run(capsys, "features", str(catalog), "--out", str(table), "--format", "csv")
    assert status == 0, out
    assert pl.read_csv(table).height == last_json(out)["features"] == 2000


def test_id_prefix_keeps_catalogs_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, seed in (("a", "1"), ("b", "2")):
        status, out, _ = run(capsys, "generate", "--listings", "1500", "--seed", seed,
                             "--id-prefix", name, "--out", str(tmp_path / f"{name}.jsonl"))
        assert status == 0 and last_json(out)["id_prefix"] == name
    catalog = read_catalog(tmp_path)
    rows = catalog.rows.collect()
    assert rows.height == 3000 and catalog.rejects.collect().height == 0
    assert rows.filter(pl.col("listing_id").str.starts_with("aL")).height == 1500
    assert set(rows["seller_id"].str.head(2)) == {"aS", "bS"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--id-prefix", "a b"], "id prefix must be"),
    (["--days", "10"], "days must be >= 31"),
    (["--drift", "-1"], "drift must be >= 0"),
])
def test_generate_refuses_bad_values(argv: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "generate", "--listings", "100", *argv,
                           "--out", str(tmp_path / "c.parquet"))
    assert status == EXIT_USER_ERROR
    assert message in last_json(out)["error"]
    assert err.startswith("knockoff generate: error:") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_and_unknown_outputs_exit_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    status, out, _ = run(capsys, "generate", "--listings", "100",
                         "--out", str(blocker / "c.parquet"))
    assert status == EXIT_USER_ERROR and str(blocker) in last_json(out)["error"]
    status, out, _ = run(capsys, "generate", "--listings", "100", "--out", str(tmp_path / "c.xlsx"))
    assert status == EXIT_USER_ERROR
    assert "unsupported output format '.xlsx'" in last_json(out)["error"]
    status, out, _ = run(capsys, "features", str(tmp_path / "missing.parquet"),
                         "--out", str(tmp_path / "f.parquet"))
    assert status == EXIT_USER_ERROR and "missing.parquet" in last_json(out)["error"]


def _raiser(exc: BaseException) -> Any:
    def generate_catalog(*args: Any, **kwargs: Any) -> dict[str, object]:
        raise exc
    return generate_catalog


def _send_sigterm(*args: Any, **kwargs: Any) -> dict[str, object]:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler interrupts this
    raise AssertionError("SIGTERM did not interrupt the command")


@pytest.mark.parametrize(("fake", "status", "message"), [
    (_raiser(KeyboardInterrupt()), EXIT_INTERRUPTED, "interrupted"),
    (_send_sigterm, EXIT_TERMINATED, "terminated (SIGTERM)"),
    (_raiser(RuntimeError("boom")), 1, "internal error: RuntimeError: boom"),
])
def test_interrupts_and_bugs_still_end_with_json(fake: Any, status: int, message: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(synthetic.generate, "generate_catalog", fake)
    before = signal.getsignal(signal.SIGTERM)
    assert run(capsys, "generate", "--out", "never.parquet")[:2] == (status, json.dumps(
        {"error": message}) + "\n")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is only there during a run


def _console(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    # a child of a shell without job control may start with SIGINT ignored: give it the default
    return subprocess.Popen([str(KNOCKOFF), *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_console_script_generates(tmp_path: Path) -> None:
    proc = _console("generate", "--listings", "500", "--seed", "2", "--out", "c.csv", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert last_json(out)["path"] == "c.csv"
    assert pl.read_csv(tmp_path / "c.csv").height == 500


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, EXIT_TERMINATED),
                                                (signal.SIGINT, EXIT_INTERRUPTED)])
def test_signal_mid_run_removes_the_partial_file(signum: int, status: int, tmp_path: Path) -> None:
    proc = _console("generate", "--listings", "4000000", "--out", "big.parquet", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big.parquet.*.tmp")):  # the first chunk is being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert last_json(out) == {"error": "terminated (SIGTERM)" if status == EXIT_TERMINATED
                              else "interrupted"}
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["report"], ["labels", "export", "--out", "labels.parquet"]])
def test_a_database_that_cannot_be_opened_exits_2_without_a_traceback(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv, "--db", "bogus://nowhere")
    assert status == EXIT_USER_ERROR and "Traceback" not in err
    assert last_json(out)["error"].startswith("cannot open the database bogus://nowhere")
    assert not (tmp_path / "labels.parquet").exists()


def test_serve_on_a_taken_port_and_bad_settings_exit_2(tmp_path: Path) -> None:
    """Mistakes in how the service is started are the user's to fix: exit 2, a JSON error,
    no traceback (uvicorn alone would exit 3 saying nothing on stdout)."""
    import socket
    import subprocess

    db, data = f"sqlite:///{tmp_path / 'k.db'}", str(tmp_path / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        serve = subprocess.run([str(KNOCKOFF), "serve", "--port", port, "--workers", "0",
                                "--db", db, "--data", data],
                               capture_output=True, text=True, timeout=120)
    assert serve.returncode == EXIT_USER_ERROR and "Traceback" not in serve.stderr
    assert last_json(serve.stdout)["error"].startswith(f"cannot listen on 127.0.0.1:{port}")
    worker = subprocess.run([str(KNOCKOFF), "worker", "--db", db, "--data", data],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KNOCKOFF_UPLOAD_LIMIT": "4GB"})
    assert worker.returncode == EXIT_USER_ERROR and "Traceback" not in worker.stderr
    assert last_json(worker.stdout)["error"] == (
        "KNOCKOFF_UPLOAD_LIMIT must be an integer, at least 1; got '4GB'")
