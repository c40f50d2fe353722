"""One trainer per run directory: an OS-level lock held for the run's life.

``RUN_DIR/train.lock`` is locked with ``fcntl.flock``; the kernel releases the lock when its
holder exits in any way (a clean end, an exception, SIGKILL, the OOM killer), so a lock left by
a crash is stale by construction and the next trainer takes it. The file names its holder (pid,
host, start time) so that a second trainer can say who holds it. Reading commands (evaluate,
plot) do not lock. With several processes only process 0 locks (the folder is shared). On a
network file system ``flock`` needs the file system's lock support (NFSv4 has it).

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "train.lock"


class LockHeld(RuntimeError):
    """Another trainer holds the run directory; the message is one line naming it."""


def holder(run_dir: Path) -> dict[str, Any]:
    """What the lock file says of its (last) holder; {} when it says nothing readable."""
    try:
        return dict(json.loads((Path(run_dir) / LOCK_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return {}


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock (creating both if needed).

    Raises ``LockHeld`` at once when another process holds it (no waiting), and ``OSError``
    when the directory cannot take the file (read-only, full: ``jax_reset.run.disk`` words it).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> RunLock:
        # A run refused after the lock (e.g. sizes that do not split over the processes, known
        # only once JAX has started) must leave nothing behind: remember whether we made it.
        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a process this one starts (the pool's workers are spawned) must not hold
        # the lock on after this one dies.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self._held_message()) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "unix_time": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing releases the lock
            raise
        self._fd = fd
        return self

    def _held_message(self) -> str:
        who = holder(self.run_dir)
        name = (f"pid {who.get('pid', '?')} on {who.get('host', '?')}, since "
                f"{who.get('since', '?')}") if who else "a process that has not said who it is"
        return (f"{self.run_dir} is in use by another trainer ({name}; lock {self.path}): stop "
                "it first, or train in another --run-dir")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if self._made_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                with contextlib.suppress(OSError):  # nothing else was written: as it was
                    self.path.unlink()
                    self.run_dir.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
