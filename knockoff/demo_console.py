"""The end of `knockoff demo`: the scored batch in the officers' console, open to try.

Serves the platform API and the officers' pages on 127.0.0.1 from the demo folder's own SQLite
database, with one scoring worker; a demo platform submits the later batch over HTTP, and once
it is scored the URL and the demo accounts' logins are printed. Serves until Ctrl-C."""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

PARQUET = {"Content-Type": "application/vnd.apache.parquet"}


def _free_port(preferred: int = 8000) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accounts(engine: Engine) -> dict[str, str]:
    """A demo platform key and one officer and one supervisor with fresh passwords."""
    from serving import store

    logins = {}
    for name in ("officer", "supervisor"):
        logins[name] = secrets.token_urlsafe(9)
        store.add_user(engine, name, name, logins[name], "demo")
    logins["api_key"] = store.add_platform(engine, "demo", "demo")
    return logins


def _submit(url: str, key: str, batch: Path) -> None:
    with batch.open("rb") as body:
        answer = httpx.post(f"{url}/v1/batches", content=body.read(), timeout=600,
                            headers={"Authorization": f"Bearer {key}", **PARQUET})
    answer.raise_for_status()
    where = f"{url}/v1/batches/{answer.json()['batch_id']}"
    while (status := httpx.get(where, headers={"Authorization": f"Bearer {key}"}).json()
           )["status"] not in ("done", "failed"):
        time.sleep(0.5)
    if status["status"] == "failed":
        raise RuntimeError(f"the demo batch failed: {status['error']}")


def serve_console(folder: Path, batch: Path) -> None:
    """Score `batch` through the service and serve the officers' console until Ctrl-C."""
    import uvicorn

    from serving import store
    from serving.api import create_app
    from serving.jobs import ChampionWatch, ServiceSettings, Worker

    for old in folder.glob("knockoff.db*"):  # a fresh console (and passwords) every demo
        old.unlink()
    shutil.rmtree(folder / "service", ignore_errors=True)
    engine = store.connect(f"sqlite:///{folder / 'knockoff.db'}")
    settings = ServiceSettings(data_dir=folder / "service")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    champion, stop = ChampionWatch(), threading.Event()
    threading.Thread(target=Worker(engine, settings, champion=champion).run, args=(stop,),
                     daemon=True).start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings, champion),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    logins = _accounts(engine)
    _submit(url, logins.pop("api_key"), batch)
    print("\nThe officers' console is open: " + f"{url}/login", file=sys.stderr)
    for name, password in logins.items():
        print(f"  log in as {name!r} with password {password!r}", file=sys.stderr)
    print("Serving until Ctrl-C (make demo DEMO_SERVE=0 skips this).", file=sys.stderr,
          flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while thread.is_alive() and not done.wait(0.5):
        pass
    server.should_exit = True
    thread.join(10)
    stop.set()


def main() -> None:
    """`python -m knockoff.demo_console DIR`: what `make demo` runs after `knockoff demo`."""
    import json

    from knockoff.environment import quiet_environment

    quiet_environment()
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "batch.parquet").is_file():
        print(json.dumps({"error": "usage: python -m knockoff.demo_console DIR (a knockoff "
                                   "demo folder holding batch.parquet)"}))
        raise SystemExit(2)
    folder = Path(sys.argv[1])
    serve_console(folder, folder / "batch.parquet")
    print(json.dumps({"served": str(folder / "knockoff.db"), "stopped": True}))


if __name__ == "__main__":
    main()
