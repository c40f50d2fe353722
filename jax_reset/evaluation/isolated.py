"""EnvPool in a child process, so that an emulator crash costs one evaluation, not the run.

ALE's emulator can die of a segmentation fault in native code: in Montezuma's Revenge this
project met it twice in a day (a trainer's evaluation at update 2,950 and a 30-game
``evaluate``; ALE's issue 11, open since 2013, describes it, and its fix is not released). A
crash inside EnvPool's threads takes the whole process down with no Python error: the trainer
lost its run since the last checkpoint, ``evaluate`` lost every protocol already played. So
every evaluation environment (``jax_reset.evaluation.envs.make_envpool``) lives in a spawned
child that imports EnvPool and no JAX, behind ``ChildEnvPool``, which has the part of
EnvPool's gymnasium API the evaluation uses (``reset``, ``step``, ``close``). A child that dies
is an ``EmulatorCrash``: a one-line error naming the signal, after which the caller decides
(``evaluate`` goes on with its next protocol, the trainer with training).

No array goes through the pipe and nothing is pickled: the child announces its observations'
shape and dtype once (a JSON header) when EnvPool is made, the parent then creates one
shared-memory segment for them, the rewards (float64) and the two end flags (uint8) and names it
to the child (``OP_ATTACH``); a step sends the actions (int32 bytes) and gets back b"k" once the
results are in the segment (a 100 KB observation batch through the pipe made each step ~20%
slower on a busy 2-core CPU). The pool's process plumbing (``jax_reset.envs.procs``:
start with Ctrl-C blocked, heartbeat, death noticed at once, polite then forced shutdown) is
shared with the training pool's workers.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import signal
import traceback
from typing import Any

import numpy as np

from jax_reset.envs import shm
from jax_reset.envs.procs import (
    OP_CLOSE,
    OP_RESET,
    OP_STEP,
    PoolError,
    Workers,
    begin_child,
)
from jax_reset.evaluation.errors import EmulatorCrash, EvalError

OP_ATTACH = ord("A")  # + the name of the results' shared-memory segment

# A reply may wait for EnvPool's start (seconds) or a step of many slow games; a child that
# stops beating for this long while the parent waits is reported as hung. Generous: an
# evaluation has no deadline of its own, and a loaded 2-core machine can stall a child.
REPLY_TIMEOUT_S = 600.0
HEARTBEAT_S = 60.0


def serve(conn: Any, spec: dict[str, Any], beat: Any) -> None:
    """The child: one EnvPool (``spec``: ``task_id`` and ``envpool.make``'s keyword
    arguments), serving OP_RESET / OP_STEP until OP_CLOSE or the parent's end of the pipe."""
    begin_child(beat)  # Ctrl-C is the parent's to handle
    env = None
    try:
        import envpool  # only here: the parent never loads EnvPool's native code

        env = envpool.make(spec["task_id"], **spec["kwargs"])
        obs_space = env.observation_space
        header = {"obs_shape": list(obs_space.shape), "obs_dtype": np.dtype(obs_space.dtype).str,
                  "num_actions": int(env.action_space.n)}
        conn.send_bytes(b"k" + json.dumps(header).encode())
        out: dict[str, np.ndarray] = {}
        while True:
            try:
                msg = conn.recv_bytes()
            except EOFError:  # the parent is gone
                return
            op = msg[0]
            if op == OP_STEP:
                obs, reward, terminated, truncated, _ = env.step(np.frombuffer(msg[1:], np.int32))
                out["obs"][:], out["reward"][:] = obs, reward
                out["terminated"][:], out["truncated"][:] = terminated, truncated
            elif op == OP_RESET:
                out["obs"][:], _ = env.reset()
            elif op == OP_ATTACH:
                segment = shm.attach(msg[1:].decode())
                out = _layout(header, spec["kwargs"]["num_envs"]).views(segment.buf)
            elif op == OP_CLOSE:
                return
            else:
                raise ValueError(f"unknown opcode {op}")
            conn.send_bytes(b"k")
    except Exception:
        with contextlib.suppress(OSError):
            conn.send_bytes(b"E" + traceback.format_exc().encode())
    finally:
        if env is not None:
            env.close()


def _layout(header: dict[str, Any], num_envs: int) -> shm.Layout:
    """The shared segment's arrays, from the child's header."""
    return shm.Layout.build({
        "obs": (header["obs_dtype"], (num_envs, *header["obs_shape"])),
        "reward": ("<f8", (num_envs,)), "terminated": ("u1", (num_envs,)),
        "truncated": ("u1", (num_envs,))})


class ChildEnvPool:
    """An EnvPool ``envpool.make(task_id, **kwargs)`` in a child process (see the module's
    docstring). ``reset() -> (obs, {})``, ``step(actions) -> (obs, reward, terminated,
    truncated, {})`` with EnvPool's batch shapes; ``num_actions``; ``close()`` (idempotent).
    Raises ``EmulatorCrash`` when the child dies, ``EvalError`` when EnvPool raised in it."""

    def __init__(self, task_id: str, kwargs: dict[str, Any]) -> None:
        self.task_id = task_id
        self.num_envs = int(kwargs["num_envs"])
        self._workers = Workers(REPLY_TIMEOUT_S, poll_s=0.5, heartbeat_s=HEARTBEAT_S)
        self._closed = False
        self._workers.start(mp.get_context("spawn"), serve,
                            {"task_id": task_id, "kwargs": kwargs}, name=f"envpool-{task_id}")
        self._segment = None
        try:
            header = json.loads(self._reply()[1:])
        except EmulatorCrash as err:
            if err.signal is not None:
                raise
            # Exited before EnvPool was made: most often the spawn start itself, which imports
            # the caller's main module again (a script run from stdin cannot be; one without a
            # main guard runs its top level again in the child).
            raise EvalError(f"{err} before EnvPool started: a script that plays games must "
                            f"be a file with its top level under `if __name__ == "
                            f"\"__main__\":` (the child is spawned and imports it)") from None
        self.num_actions: int = header["num_actions"]
        layout = _layout(header, self.num_envs)
        self._segment = shm.create(layout)
        self._out = layout.views(self._segment.buf)
        self._call(bytes((OP_ATTACH,)) + self._segment.name.encode())

    def reset(self) -> tuple[np.ndarray, dict]:
        """(obs [num_envs, *obs_shape], {}): a copy, the segment is rewritten each step."""
        self._call(bytes((OP_RESET,)))
        return self._out["obs"].copy(), {}

    def step(self, actions: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """(obs, reward float64, terminated bool, truncated bool, {}), each [num_envs]-first
        and a copy."""
        self._call(bytes((OP_STEP,)) + np.asarray(actions, np.int32).tobytes())
        out = self._out
        return (out["obs"].copy(), out["reward"].copy(), out["terminated"].astype(bool),
                out["truncated"].astype(bool), {})

    def close(self) -> None:
        """Stops the child (politely, then by force) and frees the shared segment."""
        if not self._closed:
            self._closed = True
            self._out = {}
            self._workers.shutdown([self._segment] if self._segment is not None else [])

    def __enter__(self) -> ChildEnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, msg: bytes) -> None:
        """Sends a command and waits for the child's b"k" (its results are in the segment)."""
        try:
            self._workers.send(0, msg)
        except PoolError as err:
            raise self._failure(err) from None
        self._reply()

    def _reply(self) -> bytes:
        try:
            return self._workers.reply(0)
        except PoolError as err:
            raise self._failure(err) from None

    def _failure(self, err: PoolError) -> EvalError:
        """The error to raise for a child that died, raised or hung; the child is stopped."""
        proc = self._workers.procs[0]
        proc.join(0.5)
        code = proc.exitcode
        self.close()
        text = str(err)
        if text.startswith("worker 0 raised:"):  # EnvPool's own exception, in the child
            lines = [line for line in text.splitlines() if line.strip()]
            return EvalError(f"EnvPool ({self.task_id}) failed: {lines[-1].strip()}")
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            return EmulatorCrash(f"the emulator process ({self.task_id}, pid {proc.pid}) was "
                                 f"{how}", signal=-code)
        if code is not None:
            return EmulatorCrash(f"the emulator process ({self.task_id}, pid {proc.pid}) "
                                 f"exited with code {code}")
        return EmulatorCrash(f"the emulator process ({self.task_id}): {text}")
