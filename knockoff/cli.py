"""The `knockoff` command line: parsing, errors, signals and exit statuses around the subcommands
(commands.py: generate, features, train, tune, score, demo; service_commands.py: the service).

Every command ends stdout with one JSON object: its summary, or `{"error": "..."}` when it fails.
Exit status: 0 done, 2 a mistake in the input or the options (message on stderr, no traceback),
130 interrupted (Ctrl-C / SIGINT), 143 terminated (SIGTERM), 1 an internal error (traceback on
stderr). SIGTERM cleans up like Ctrl-C: partial outputs are removed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from knockoff.commands import UserError, add_commands, print_summary
from knockoff.environment import quiet_environment
from knockoff.service_commands import add_service_commands

__all__ = ["UserError", "build_parser", "main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class UsageError(Exception):
    """Options that do not parse; carries the (sub)command's name and usage line."""

    def __init__(self, message: str, prog: str, usage: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) like Ctrl-C."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (main reports it as JSON) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog, self.format_usage())


def _fail(prog: str, message: str, status: int) -> int:
    """The error on stderr for people, as the last stdout line for programs; the exit status."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    print_summary({"error": message})
    return status


def _version() -> str:
    try:
        return version("knockoff")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="knockoff",
                    description="Counterfeit-listing detection for e-commerce catalogs.",
                    epilog="`knockoff COMMAND --help` shows every option of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub)
    add_service_commands(sub)
    return parser


# ------------------------------------------------------------------ entry point


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run(args: argparse.Namespace) -> int:
    from features.catalog import CatalogError
    from features.state import StateError

    func: Callable[[argparse.Namespace], None] = args.func
    prog = f"knockoff {args.command}"
    try:
        func(args)
    except (UserError, CatalogError, StateError) as exc:
        return _fail(prog, str(exc), EXIT_USER_ERROR)
    except OSError as exc:  # a path that cannot be read or written: the user's to fix
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(prog, f"{where}{exc.strerror or exc}", EXIT_USER_ERROR)
    except Terminated:
        return _fail(prog, "terminated (SIGTERM)", EXIT_TERMINATED)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: the traceback for us, still one JSON line for the caller
        traceback.print_exc()
        return _fail(prog, f"internal error: {type(exc).__name__}: {exc}", 1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    quiet_environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc.usage, end="", file=sys.stderr)
        return _fail(exc.prog, str(exc), EXIT_USER_ERROR)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    with _sigterm_as_interrupt():
        return _run(args)
