"""`knockoff serve`'s scoring workers as child processes.

Each worker is `nice -n N python -m knockoff worker --parent PID` on serve's database and data
folder: its own interpreter, so no scoring code holds the API's GIL, at a lower CPU priority
(every thread of it: niced before Python starts), so the API's requests win the CPU. The pool
restarts a worker that exits while serve runs (saying so on stderr), and stops them all with
SIGTERM, then SIGKILL after a grace period. A child asks the kernel to kill it when serve dies,
even by kill -9 (Linux `PR_SET_PDEATHSIG`), so no orphan keeps a lease. The children's stdout
and stderr both go to serve's stderr: serve's stdout stays one JSON line.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

STOP_GRACE_SECONDS = 10.0  # after SIGTERM, then SIGKILL (a batch cut off is scored again)
CHECK_SECONDS = 0.5  # how often the pool looks at its children
RESTART_DELAY_MAX = 60.0  # a worker that keeps dying is restarted at most this often
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class _Slot:
    """One worker's place in the pool: its current process and when to (re)start it."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    due: float = 0.0  # monotonic time of the next start
    delay: float = 0.5  # doubled on each quick death: the first restart waits 1 s


class WorkerPool:
    """`with WorkerPool(2, db, data_dir):` two worker processes while the block runs.

    One supervising thread starts, watches and stops the children. It lives as long as they
    do: `PR_SET_PDEATHSIG` fires when the thread that started a child ends."""

    def __init__(self, count: int, db: str | None, data_dir: Path, nice: int) -> None:
        self.command = ["nice", "-n", str(nice), sys.executable, "-m", "knockoff", "worker",
                        "--data", str(data_dir), "--parent", str(os.getpid()),
                        *(["--db", db] if db else [])]
        self.slots = [_Slot(i) for i in range(count)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool",
                                        daemon=True)

    def __enter__(self) -> WorkerPool:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _supervise(self) -> None:
        try:
            while True:
                for slot in self.slots:
                    self._tend(slot)
                if self._stop.wait(CHECK_SECONDS):
                    return
        finally:
            _terminate([slot.proc for slot in self.slots if slot.proc is not None])

    def _tend(self, slot: _Slot) -> None:
        """Start the slot's worker when due; notice and schedule the restart of a dead one."""
        if slot.proc is not None:
            status = slot.proc.poll()
            if status is None:
                return
            lived = time.monotonic() - slot.started
            slot.delay = 1.0 if lived >= RESTART_DELAY_MAX else min(2 * slot.delay,
                                                                    RESTART_DELAY_MAX)
            slot.due = time.monotonic() + slot.delay
            print(f"knockoff serve: worker {slot.index} (pid {slot.proc.pid}) exited with "
                  f"status {status} after {lived:.0f} s; restarting it in {slot.delay:g} s",
                  file=sys.stderr, flush=True)
            slot.proc = None
        if time.monotonic() >= slot.due:
            # its own process group: a terminal's Ctrl-C reaches serve, which stops the pool
            slot.proc = subprocess.Popen(self.command, stdout=sys.stderr.fileno(),
                                         process_group=0)
            slot.started = time.monotonic()


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each running child, wait up to the grace period, SIGKILL what is left."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def follow_parent(parent: int) -> bool:
    """In a worker started by serve: be killed when process `parent` dies, however it dies.
    False when `parent` is not (or no longer) this process's parent: the child must exit."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no parent-death signal: look every second
        threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
    return os.getppid() == parent  # checked after the request: no window where it is lost


def _exit_without(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
