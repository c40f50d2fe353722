"""The pool's worker processes seen from the parent: start, the pipe protocol, failure, shutdown.

Protocol (one duplex pipe per worker, raw bytes, no pickling on the step path): the parent
writes actions / starting points into shared memory and sends `opcode + int32 local ids`
(empty ids: all of the worker's envs); the worker writes the results into shared memory and
answers b"k" (+ payload for some commands), or b"E" + traceback and exits. Commands are served
in order, so the parent can queue several (the asynchronous send/recv).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

OP_STEP = ord("S")
OP_RESET = ord("R")
OP_BUILD_STATES = ord("B")
OP_LOAD_STATES = ord("L")
OP_RAM = ord("M")
OP_CLOSE = ord("X")


class PoolError(RuntimeError):
    """A worker died, raised, or did not answer; the pool is closed when this is raised."""


class Workers:
    """The worker processes of one pool and their pipes (worker w = index w).

    `send` / `reply` raise PoolError when a worker is gone, raised or timed out; the caller
    closes the pool then. Holds no reference to the pool, so `shutdown` can be its finalizer.
    """

    def __init__(self, timeout_s: float, poll_s: float) -> None:
        self.procs: list = []
        self.conns: list[Connection] = []
        self._timeout_s = timeout_s
        self._poll_s = poll_s

    def __len__(self) -> int:
        return len(self.procs)

    def start(self, ctx, target: Callable, spec: object, name: str) -> None:
        """Start one worker process `target(conn, spec)` (it answers b"k" once ready)."""
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=target, args=(child_conn, spec), daemon=True, name=name)
        proc.start()
        child_conn.close()  # so a dead worker reads as EOF here
        self.procs.append(proc)
        self.conns.append(parent_conn)

    def send(self, w: int, msg: bytes) -> None:
        try:
            self.conns[w].send_bytes(msg)
        except OSError as err:
            raise PoolError(f"worker {w} is gone ({err})") from None

    def reply(self, w: int) -> bytes:
        """The next reply of worker w (b"k" + payload)."""
        conn, proc = self.conns[w], self.procs[w]
        deadline = time.monotonic() + self._timeout_s
        while True:
            if conn.poll():
                break
            # Waiting on the process sentinel too: a dead worker wakes us at once.
            ready = wait([conn, proc.sentinel], timeout=self._poll_s)
            if conn in ready:
                break
            if proc.sentinel in ready or not proc.is_alive():
                if conn.poll():  # it may have reported its error just before exiting
                    break
                proc.join(0.1)
                raise PoolError(f"worker {w} (pid {proc.pid}) died with exit code {proc.exitcode}")
            if time.monotonic() > deadline:
                raise PoolError(f"worker {w} did not answer within {self._timeout_s:.0f} s")
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            proc.join(0.5)
            raise PoolError(
                f"worker {w} (pid {proc.pid}) died with exit code {proc.exitcode}"
            ) from None
        if msg[:1] == b"E":
            raise PoolError(f"worker {w} raised:\n{msg[1:].decode('utf-8', 'replace')}")
        return msg

    def shutdown(self, segments: list) -> None:
        """Stop the workers (politely, then SIGTERM, then SIGKILL) and unlink the shared memory
        `segments` (read when called: segments added later are freed too)."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send_bytes(bytes((OP_CLOSE,)))
        deadline = time.monotonic() + 1.0
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join(0.5)
        for conn in self.conns:
            conn.close()
        for seg in segments:
            # BufferError: numpy views still exist in this process; the mapping goes with them.
            with contextlib.suppress(BufferError):
                seg.close()
            with contextlib.suppress(FileNotFoundError):
                seg.unlink()
