"""Several processes (hosts) on JAX's multi-controller runtime, and a local launcher for tests.

One process per host drives all of its local devices. ``initialize`` starts
``jax.distributed`` from, in order of precedence:

1. explicit values (``--coordinator``, ``--num-processes``, ``--process-id``);
2. the environment: ``JAX_RESET_COORDINATOR``, ``JAX_RESET_NUM_PROCESSES``,
   ``JAX_RESET_PROCESS_ID`` (what ``launch_local`` sets);
3. JAX's own cluster auto-detection (SLURM, Open MPI, Kubernetes, TPU pods), when
   ``--distributed`` is given without values;

and does nothing for a single process. On CPU (no GPU) the cross-process collectives go through
gloo. The heartbeat timeout makes the survivors of a dead process fail with an error instead of
waiting forever.

A process that leaves on an error must not wait at JAX's shutdown barrier for peers that will
never come (``shutdown_timeout_seconds``): ``exit_now`` prints, flushes and ``os._exit``s.

``jax_reset.parallel.process_group.ProcessGroup`` is what the trainer needs of the other processes
each update.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ENV_COORDINATOR = "JAX_RESET_COORDINATOR"
ENV_NUM_PROCESSES = "JAX_RESET_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_RESET_PROCESS_ID"


class DistributedError(RuntimeError):
    """The multi-process set-up is inconsistent, or a process of the job failed."""


@dataclass(frozen=True)
class ProcessSpec:
    """Where this process stands in the job; ``None`` fields are left to JAX's auto-detection."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto_detect: bool = False
    heartbeat_timeout_s: int = 30
    initialization_timeout_s: int = 120
    shutdown_timeout_s: int = 60

    @property
    def wanted(self) -> bool:
        return self.auto_detect or self.num_processes is not None


def spec_from(coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None, auto_detect: bool = False,
              environ: os._Environ | dict | None = None, **timeouts: int) -> ProcessSpec:
    """Merges explicit values over ``JAX_RESET_*`` variables. Raises ``DistributedError``."""
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_COORDINATOR)
    try:
        if num_processes is None and env.get(ENV_NUM_PROCESSES):
            num_processes = int(env[ENV_NUM_PROCESSES])
        if process_id is None and env.get(ENV_PROCESS_ID):
            process_id = int(env[ENV_PROCESS_ID])
    except ValueError as err:
        raise DistributedError(f"bad {ENV_NUM_PROCESSES}/{ENV_PROCESS_ID}: {err}") from None
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise DistributedError("a multi-process run needs the coordinator address, the number "
                               "of processes and this process's id together (or none of them, "
                               "for JAX's cluster auto-detection with --distributed)")
    if num_processes is not None and not 0 <= process_id < num_processes:  # type: ignore[operator]
        raise DistributedError(f"process id {process_id} is not in 0..{num_processes - 1}")
    return ProcessSpec(coordinator, num_processes, process_id, auto_detect, **timeouts)


def initialize(spec: ProcessSpec) -> None:
    """Starts ``jax.distributed`` for ``spec`` (before any other use of devices)."""
    if not spec.wanted:
        return
    import jax

    # CPU collectives across processes need an implementation; gloo ships with jaxlib. On GPU
    # hosts NCCL is used and this setting is ignored.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"heartbeat_timeout_seconds": spec.heartbeat_timeout_s,
              "initialization_timeout": spec.initialization_timeout_s,
              "shutdown_timeout_seconds": spec.shutdown_timeout_s}
    if spec.num_processes is not None:
        kwargs.update(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                      process_id=spec.process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as err:  # JAX raises RuntimeError/ValueError with long messages
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(f"jax.distributed.initialize failed: {first}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()


def launch_local(module: str, argv: Sequence[str], num_processes: int,
                 grace_s: float = 10.0, poll_s: float = 0.2,
                 stop_grace_s: float | None = None) -> int:
    """Runs ``python -m module argv`` as ``num_processes`` processes of one job on this host.

    Every line a process prints reaches this terminal prefixed with ``[pN]``. When one process
    exits with an error (or is killed), the others are stopped (SIGTERM, then SIGKILL after
    ``grace_s``) and its exit code is returned, so a dead process never leaves the job hanging.
    Ctrl-C or a SIGTERM to the launcher stops them all the same way, allowing them
    ``stop_grace_s`` (default ``grace_s``) to finish, e.g. to write a checkpoint; then 0 if
    every process exited cleanly, else 130.
    """
    if num_processes < 1:
        raise DistributedError(f"--local-processes must be at least 1, got {num_processes}")
    port = free_port()
    procs: list[subprocess.Popen] = []
    threads = []
    for pid in range(num_processes):
        env = dict(os.environ, **{ENV_COORDINATOR: f"127.0.0.1:{port}",
                                  ENV_NUM_PROCESSES: str(num_processes),
                                  ENV_PROCESS_ID: str(pid), "PYTHONUNBUFFERED": "1"})
        p = subprocess.Popen([sys.executable, "-m", module, *argv], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        t = threading.Thread(target=_forward, args=(p.stdout, f"[p{pid}] ", sys.stdout),
                             daemon=True)
        t.start()
        threads.append(t)
    code = 0
    grace = grace_s
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                print(f"error: process {i} {how}; stopping the other processes", file=sys.stderr)
                code = code if code > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        code = 130
        grace = grace_s if stop_grace_s is None else stop_grace_s
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _stop_all(procs, grace)
        for t in threads:
            t.join(timeout=2)
    if code == 130 and all(p.returncode == 0 for p in procs):
        return 0  # stopped as asked, cleanly
    return code


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_all(procs: list[subprocess.Popen], grace_s: float) -> None:
    # SIGTERM to each process itself, not its group: a trainer stops cleanly on it and closes
    # its own children (environment workers), which a group-wide signal would kill under it.
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(p.pid)
            p.wait()
        _kill_group(p.pid)  # whatever it left behind (each process leads its own session)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# What a collective or the coordination service says when a peer process has gone.
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "gloo", "heartbeat",
              "coordination service", "unavailable:", "deadline_exceeded", "barrier timed out")


def peer_failure(err: BaseException) -> str | None:
    """One line for an error that means another process of the job failed or was killed (a
    collective lost its peer); None for any other error."""
    text = str(err).strip()
    if not any(k in text.lower() for k in _PEER_LOST):
        return None
    first = text.splitlines()[0][:300] if text else type(err).__name__
    return ("lost contact with another process of the job (it failed or was killed; its own "
            f"error, if any, is printed above): {first}")


def exit_now(code: int, message: str | None = None) -> None:
    """Prints ``message`` on stderr, flushes, and leaves at once with ``code``.

    For a process of a multi-process job leaving on an error: a normal exit would wait at JAX's
    shutdown barrier for peers that may never arrive. Close what must be closed (environment
    workers, checkpoints) before calling it.
    """
    if message:
        print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
