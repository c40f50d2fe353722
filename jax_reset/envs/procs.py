"""The pool's worker processes seen from the parent: start, the pipe protocol, failure, shutdown.

Protocol (one duplex pipe per worker, raw bytes, no pickling on the step path): the parent
writes actions / starting points into shared memory and sends `opcode + int32 local ids`
(empty ids: all of the worker's envs); the worker writes the results into shared memory and
answers b"k" (+ payload for some commands), or b"E" + traceback and exits. Commands are served
in order, so the parent can queue several (the asynchronous send/recv).

Liveness: each worker's heartbeat thread bumps a shared counter every ``BEAT_S``; a worker whose
counter stands still for ``heartbeat_s`` while the parent waits on it (stopped with SIGSTOP, or
stuck in a call that holds the GIL) is reported in seconds. A timeout on a command's duration
could not do that: building the demo's state bank takes 4-12 s and the parent's compile 13-60 s
on 2 cores, so ``timeout_s`` stays a last resort for a worker that beats but never answers.

Ctrl-C is the parent's: workers start with SIGINT blocked (inherited through spawn's exec, so
not even the interpreter's start-up sees it) and ignore it once running.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

OP_STEP = ord("S")
OP_RESET = ord("R")
OP_BUILD_STATES = ord("B")
OP_LOAD_STATES = ord("L")
OP_RAM = ord("M")
OP_CLOSE = ord("X")

BEAT_S = 0.5  # a worker's heartbeat period


class PoolError(RuntimeError):
    """A worker died, raised, or did not answer; the pool is closed when this is raised."""


class Workers:
    """The worker processes of one pool and their pipes (worker w = index w).

    `send` / `reply` raise PoolError when a worker is gone, raised or timed out; the caller
    closes the pool then. Holds no reference to the pool, so `shutdown` can be its finalizer.
    """

    def __init__(self, timeout_s: float, poll_s: float, heartbeat_s: float = 5.0) -> None:
        self.procs: list = []
        self.conns: list[Connection] = []
        self.beats: list = []  # per worker, a shared uint64 its heartbeat thread increments
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s

    def __len__(self) -> int:
        return len(self.procs)

    def start(self, ctx, target: Callable, spec: object, name: str) -> None:
        """Start one worker process `target(conn, spec, beat)` (it answers b"k" once ready and
        increments `beat.value` every `BEAT_S`, see `start_heartbeat`)."""
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        beat = ctx.RawValue(ctypes.c_uint64, 0)
        proc = ctx.Process(target=target, args=(child_conn, spec, beat), daemon=True, name=name)
        # Blocked, not ignored: a Ctrl-C during the start waits here for the parent's handler
        # instead of being lost; the child inherits the mask and ignores SIGINT itself.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child_conn.close()  # so a dead worker reads as EOF here
        self.procs.append(proc)
        self.conns.append(parent_conn)
        self.beats.append(beat)

    def send(self, w: int, msg: bytes) -> None:
        try:
            self.conns[w].send_bytes(msg)
        except OSError as err:
            # A broken pipe is usually a worker that died: say so, as reply() would.
            proc = self.procs[w]
            proc.join(timeout=0.5)
            if proc.exitcode is not None:
                raise PoolError(f"worker {w} (pid {proc.pid}) died with exit code "
                                f"{proc.exitcode}") from None
            raise PoolError(f"worker {w} is gone ({err})") from None

    def reply(self, w: int) -> bytes:
        """The next reply of worker w (b"k" + payload)."""
        conn, proc, beat = self.conns[w], self.procs[w], self.beats[w]
        deadline = time.monotonic() + self._timeout_s
        last_beat, beat_at = beat.value, time.monotonic()
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
            now = time.monotonic()
            if beat.value != last_beat:
                last_beat, beat_at = beat.value, now
            elif last_beat and now - beat_at > self._heartbeat_s:
                # (Before its first beat a worker is still importing: only the timeout applies.)
                raise PoolError(f"worker {w} (pid {proc.pid}) hangs: no heartbeat for "
                                f"{now - beat_at:.1f} s ({process_state(proc.pid)})")
            if now > deadline:
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


def process_state(pid: int) -> str:
    """The kernel's word on a process, e.g. "state T (stopped)", from /proc/<pid>/stat."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 (one read, closed by GC)
    except OSError:
        return "state unknown"
    code = stat.rsplit(")", 1)[1].split()[0]  # the name may hold spaces and parentheses
    names = {"R": "running", "S": "sleeping", "D": "disk sleep", "T": "stopped",
             "t": "tracing stop", "Z": "zombie"}
    return f"state {code} ({names.get(code, 'other')})"


def begin_child(beat) -> None:
    """In a process started by ``Workers.start``, first: Ctrl-C is the parent's business. The
    parent started it with SIGINT blocked; ignoring it first discards one that arrived
    meanwhile, then it is unblocked. Then the heartbeat (``start_heartbeat``), if ``beat``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if beat is not None:
        start_heartbeat(beat)


def start_heartbeat(beat) -> None:
    """In a worker: a daemon thread that increments ``beat.value`` every ``BEAT_S``.

    ale-py holds the GIL while it emulates, but for a frame (microseconds) at a time, so the
    thread gets its turn between frames; it costs one wake-up per ``BEAT_S``."""
    import threading

    def run() -> None:
        while True:
            beat.value += 1
            time.sleep(BEAT_S)

    threading.Thread(target=run, name="heartbeat", daemon=True).start()
