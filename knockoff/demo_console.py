"""The service side of `knockoff demo`: a platform submits the later batch over HTTP, and the
officers' console stays open to try.

`DemoService` serves the platform API and the officers' pages on a free 127.0.0.1 port from the
demo folder's own SQLite database (fresh every run), with one scoring worker, a demo platform
key and one officer and one supervisor with fresh passwords. `python -m knockoff.demo_console
DIR` reopens the console of an earlier demo folder (its batch scored again into a fresh
database)."""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

PARQUET = {"Content-Type": "application/vnd.apache.parquet"}


def _free_port(preferred: int = 8000) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoService:
    """`with DemoService(folder) as service:` the service running in this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.api_key = ""
        self.logins: dict[str, str] = {}
        self._stop = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DemoService:
        import uvicorn

        from serving import store
        from serving.api import create_app
        from serving.jobs import ChampionWatch, ServiceSettings, Worker

        for old in self.folder.glob("knockoff.db*"):  # a fresh console (and passwords) each run
            old.unlink()
        shutil.rmtree(self.folder / "service", ignore_errors=True)
        engine = store.connect(f"sqlite:///{self.folder / 'knockoff.db'}")
        settings = ServiceSettings(data_dir=self.folder / "service")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        champion = ChampionWatch()
        threading.Thread(target=Worker(engine, settings, champion=champion).run,
                         args=(self._stop,), daemon=True).start()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(engine, settings, champion), host="127.0.0.1", port=port,
            log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the demo service could not start on {self.url}")
            time.sleep(0.1)
        for name in ("officer", "supervisor"):
            self.logins[name] = secrets.token_urlsafe(9)
            store.add_user(engine, name, name, self.logins[name], "demo")
        self.api_key = store.add_platform(engine, "demo", "demo")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._stop.set()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def submit(self, batch: Path) -> dict[str, Any]:
        """POST the batch as a platform would (streamed), wait until it is scored; its status."""
        with batch.open("rb") as body:
            answer = httpx.post(f"{self.url}/v1/batches", content=body, timeout=600,
                                headers={**self._auth, **PARQUET})
        if answer.status_code != 202:
            raise RuntimeError(f"the service refused the demo batch: {answer.text}")
        where = f"{self.url}/v1/batches/{answer.json()['batch_id']}"
        while (status := httpx.get(where, headers=self._auth, timeout=60).json()
               )["status"] not in ("done", "failed"):
            time.sleep(0.5)
        if status["status"] == "failed":
            raise RuntimeError(f"the demo batch failed: {status['error']}")
        return status

    def download(self, batch_id: str, what: str, dest: Path) -> Path:
        """The batch's `scores` or `rejects` (Parquet) as the platform gets them."""
        with httpx.stream("GET", f"{self.url}/v1/batches/{batch_id}/{what}",
                          headers=self._auth, timeout=600) as answer:
            answer.raise_for_status()
            with dest.open("wb") as out:
                for chunk in answer.iter_bytes():
                    out.write(chunk)
        return dest

    def serve_until_interrupted(self) -> None:
        """Print the console's URL and logins, then serve until Ctrl-C (or SIGTERM)."""
        print("\nThe officers' console is open: " + f"{self.url}/login", file=sys.stderr)
        for name, password in self.logins.items():
            print(f"  log in as {name!r} with password {password!r}", file=sys.stderr)
        print("Serving until Ctrl-C (make demo DEMO_SERVE=0 skips this).", file=sys.stderr,
              flush=True)
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        while self._thread is not None and self._thread.is_alive() and not done.wait(0.5):
            pass


def main() -> None:
    """`python -m knockoff.demo_console DIR`: reopen the console of a `knockoff demo` folder."""
    import json

    from knockoff.environment import quiet_environment

    quiet_environment()
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "batch.parquet").is_file():
        print(json.dumps({"error": "usage: python -m knockoff.demo_console DIR (a knockoff "
                                   "demo folder holding batch.parquet)"}))
        raise SystemExit(2)
    folder = Path(sys.argv[1])
    with DemoService(folder) as service:
        service.submit(folder / "batch.parquet")
        service.serve_until_interrupted()
    print(json.dumps({"served": str(folder / "knockoff.db"), "stopped": True}))


if __name__ == "__main__":
    main()
