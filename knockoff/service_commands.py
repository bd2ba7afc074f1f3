"""The service's subcommands: `serve`, `worker`, `platforms add|list|revoke`,
`users add|list|disable`. Each ends stdout with one JSON object, like every command."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from knockoff.commands import add_command
from knockoff.label_commands import add_label_commands

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from serving.jobs import ChampionWatch, ServiceSettings

DEFAULT_NICE = 10  # serve's worker processes yield the CPU to its API


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, default=lambda v: v.isoformat() if isinstance(v, datetime)
                     else str(v)))


def _engine(args: argparse.Namespace) -> Engine:
    from serving import store

    return _account(store.connect, args.db)  # type: ignore[no-any-return]


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _account(func: Any, *args: Any) -> Any:
    """Run a store function; its refusals are the user's to fix (exit 2)."""
    from knockoff.cli import UserError
    from serving.store import StoreError

    try:
        return func(*args)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from serving.api import create_app
    from serving.jobs import ChampionWatch, sweep_orphans
    from serving.worker_pool import WorkerPool

    if args.workers < 0 or not 0 <= args.port <= 65535:
        raise _user_error("--workers must be >= 0 and --port within 0..65535")
    nice = _nice()
    _check_listen(args.host, args.port)
    engine = _engine(args)
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sweep_orphans(engine, settings)
    champion = ChampionWatch()
    workers: AbstractContextManager[object] = (
        _worker_threads(engine, settings, champion, args.workers)
        if os.environ.get("KNOCKOFF_WORKER_THREADS") == "1"
        else WorkerPool(args.workers, args.db, settings.data_dir, nice))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings, champion),
                                           host=args.host, port=args.port,
                                           log_level="warning", access_log=False))
    print(f"knockoff serve: http://{args.host}:{args.port} with {args.workers} worker(s), "
          f"data in {settings.data_dir}", file=sys.stderr, flush=True)
    with workers:  # stopped however the server stops (Ctrl-C and SIGTERM included)
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind (taken since the check above)
            if server.started:
                raise
            raise _user_error(f"cannot listen on {args.host}:{args.port}") from None
    _print({"served": f"http://{args.host}:{args.port}", "workers": args.workers,
            "stopped": True})


@contextmanager
def _worker_threads(engine: Engine, settings: ServiceSettings, champion: ChampionWatch,
                    count: int) -> Iterator[None]:
    """Workers as threads of serve (KNOCKOFF_WORKER_THREADS=1): the old way, kept as the
    reference bench/service.py measures the child processes against."""
    from serving.jobs import Worker

    stop = threading.Event()
    for i in range(count):
        threading.Thread(target=Worker(engine, settings, champion=champion).run, args=(stop,),
                         daemon=True, name=f"worker-{i}").start()
    try:
        yield
    finally:
        stop.set()


def _check_listen(host: str, port: int) -> None:
    """Refuse (exit 2) an address serve cannot listen on, e.g. a port another server holds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _user_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _settings(args: argparse.Namespace) -> ServiceSettings:
    from serving.jobs import ServiceSettings, SettingError

    try:
        return ServiceSettings.from_env(args.data)
    except SettingError as exc:
        raise _user_error(str(exc)) from None


def _nice() -> int:
    """KNOCKOFF_WORKER_NICE: how much lower the workers' CPU priority is, 0 (not lower) to 19."""
    value = os.environ.get("KNOCKOFF_WORKER_NICE", str(DEFAULT_NICE))
    if not value.isdigit() or int(value) > 19:
        raise _user_error(f"KNOCKOFF_WORKER_NICE must be an integer within 0..19, not {value!r}")
    return int(value)


def _user_error(message: str) -> Exception:
    from knockoff.cli import UserError

    return UserError(message)


def cmd_worker(args: argparse.Namespace) -> None:
    from serving.jobs import Worker, sweep_orphans
    from serving.worker_pool import follow_parent

    if args.parent is not None and not follow_parent(args.parent):
        raise _user_error(f"--parent {args.parent}: not (or no longer) this process's parent")
    engine = _engine(args)
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sweep_orphans(engine, settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(engine, settings)
    print(f"knockoff worker {worker.name}: polling for batches", file=sys.stderr, flush=True)
    worker.run(stop)
    _print({"worker": worker.name, "stopped": True})


def cmd_platforms(args: argparse.Namespace) -> None:
    from serving import store

    engine = _engine(args)
    if args.action == "add":
        key = _account(store.add_platform, engine, args.name, _actor())
        _print({"platform": args.name, "api_key": key})
    elif args.action == "revoke":
        _account(store.revoke_platform, engine, args.name, _actor())
        _print({"platform": args.name, "revoked": True})
    else:
        _print({"platforms": store.list_platforms(engine)})


def cmd_users(args: argparse.Namespace) -> None:
    from serving import store

    engine = _engine(args)
    if args.action == "add":
        password = sys.stdin.readline().rstrip("\r\n")
        _account(store.add_user, engine, args.name, args.role, password, _actor())
        _print({"user": args.name, "role": args.role})
    elif args.action == "disable":
        _account(store.disable_user, engine, args.name, _actor())
        _print({"user": args.name, "disabled": True})
    else:
        _print({"users": store.list_users(engine)})


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", help="database URL (default "
                        "$KNOCKOFF_DATABASE_URL, else sqlite:///var/knockoff.db)")


def _data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="uploads, scores and rejects (default "
                        "$KNOCKOFF_DATA_DIR, else var/)")


def _group(sub: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A command of several actions (`platforms add|list|revoke`), with its help's example."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def add_service_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the service's subcommands on the `knockoff` parser's subparsers."""
    p = add_command(sub, "serve", cmd_serve, "the platform API, the officers' pages and their "
                    "scoring worker processes", "knockoff serve --port 8000 --workers 2 --db "
                    "postgresql+psycopg://knockoff@db/knockoff")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, metavar="PORT", help="port (default 8000)")
    _db_option(p)
    _data_option(p)
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="scoring worker processes, at niceness $KNOCKOFF_WORKER_NICE (10) and "
                   "restarted when one exits (default 1; 0 = API only)")

    p = add_command(sub, "worker", cmd_worker, "a scoring worker alone (same database and data "
                    "folder as serve: more processes or machines)",
                    "knockoff worker --db postgresql+psycopg://knockoff@db/kb --data /srv/var")
    _db_option(p)
    _data_option(p)
    p.add_argument("--parent", type=int, metavar="PID",
                   help="exit when process PID exits, however it ends (serve passes its own)")

    p = _group(sub, "platforms", "platform accounts and their API keys",
               "knockoff platforms add acme --db sqlite:///var/knockoff.db")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "create a platform; prints its API key once"),
                         ("list", "list platforms"), ("revoke", "revoke a platform's keys")):
        q = actions.add_parser(action, help=text)
        if action != "list":
            q.add_argument("name", metavar="NAME")
        _db_option(q)
    p.set_defaults(func=cmd_platforms)

    p = _group(sub, "users", "officers', supervisors' and admins' accounts",
               "printf '%s\\n' \"$PASSWORD\" | knockoff users add ana --role officer")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("add", help="create a user; reads the password from stdin")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", required=True, choices=["officer", "supervisor", "admin"])
    _db_option(q)
    for action, text in (("list", "list users"), ("disable", "disable a user")):
        q = actions.add_parser(action, help=text)
        if action != "list":
            q.add_argument("name", metavar="NAME")
        _db_option(q)
    p.set_defaults(func=cmd_users)
    add_label_commands(sub)  # labels export, report: decisions back to training
