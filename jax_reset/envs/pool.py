"""The parent side of the Atari pool: worker processes, shared memory, the EnvPool-like API."""

from __future__ import annotations

import collections
import multiprocessing as mp
import weakref
from collections.abc import Sequence

import numpy as np

from jax_reset import demos
from jax_reset.envs import shm as shm_lib
from jax_reset.envs.config import DemoResetConfig, EnvConfig, rom_id
from jax_reset.envs.contract import OUTPUT_FIELDS, PoolStep
from jax_reset.envs.demo_states import request_dense_states, share_dense_states
from jax_reset.envs.procs import OP_RAM, OP_RESET, OP_STEP, PoolError, Workers
from jax_reset.envs.worker import WorkerSpec, make_ale, worker_main

_OUTPUT_NAMES = tuple(OUTPUT_FIELDS)


class AtariPool:
    """N Atari environments over W worker processes, with optional demo-state resets.

    Plain mode (`demo=None`): EnvPool's Atari env (see `EnvConfig`). Demo mode: every reset
    restores the demo at a start frame drawn from the env's starting point (or one given with
    `set_start_frames`), and the curriculum's per-frame episode rules end episodes. With several
    demos of one game (`DemoResetConfig.demo_paths`), `env_demos` says which one each env
    restores from; every worker holds them all.

    Actions are indices into the game's minimal action set, int [B]. The asynchronous pair
    `send(actions, env_ids)` / `recv()` lets part of the envs emulate while the caller computes
    actions for another part; `recv()` returns the results of the oldest unanswered `send`. An
    env may have at most one unanswered send.

    Always `close()` (or use `with`): it stops the workers and frees the shared memory. A worker
    that dies or raises makes the next call raise `PoolError` (within `poll_s`), and so does one
    that hangs (no heartbeat for `heartbeat_s`: stopped, or stuck holding its GIL).
    """

    def __init__(
        self,
        game: str | None,
        num_envs: int,
        num_workers: int = 2,
        *,
        config: EnvConfig | None = None,
        demo: DemoResetConfig | None = None,
        seed: int = 0,
        start_method: str = "spawn",
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
        heartbeat_s: float = 5.0,
        env_demos: Sequence[int] | np.ndarray | None = None,
        wait: bool = True,
    ) -> None:
        """game: EnvPool-style name ("Pong", "MontezumaRevenge"); None to take the demo's.
        num_workers is capped at num_envs; envs are split into contiguous, near-equal slices.
        timeout_s: the longest a single command may take before the pool gives up on it.
        heartbeat_s: how long a worker's heartbeat may stand still while the pool waits on it.
        env_demos: int [num_envs], each env's index into `demo.paths` (None: all the first).
        wait: False returns once the workers are started and asked for the demos' dense
          states; the rest of the start (their answers: seconds of process start-up and demo
          replay) completes in the first call that needs the workers, or in `wait_ready()`,
          so that the caller can build and compile its network meanwhile. A worker's failure
          to start then raises there.
        """
        if start_method == "fork":
            raise ValueError("fork is unsafe with a threaded parent (JAX): use spawn/forkserver")
        self.config = config = config or EnvConfig()
        self.demo_config = demo
        self.num_envs = int(num_envs)
        if self.num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.num_workers = max(1, min(int(num_workers), self.num_envs))
        self._closed = False
        self._started = False  # every worker ready and holding the demos' states (wait_ready)
        self._states_requests: list = []
        self.demo_states_build_s = 0.0  # seconds from the request to every worker holding them
        self._workers = Workers(timeout_s, poll_s, heartbeat_s)
        self._segments: list = []  # shared memory to free at close: the pool's, demo states
        self.demo = None
        self.demos: list = []
        self.env_demo = np.zeros(self.num_envs, np.int64)  # env -> index into self.demos
        if demo is not None:
            self.demos = [demos.load(p, rom_path=demo.rom_path) for p in demo.paths]
            self.demo = self.demos[0]
            if game is not None and game != self.demo.game:
                raise ValueError(f"game {game!r} but the demo is of {self.demo.game!r}")
            game = self.demo.game
            for d, p in zip(self.demos, demo.paths, strict=True):
                if d.game != game or d.rom_id != self.demo.rom_id:
                    raise ValueError(f"demos of different games in one run: {p} is of "
                                     f"{d.game}, {demo.paths[0]} of {game}")
            if env_demos is not None:
                self.env_demo = np.asarray(env_demos, np.int64).reshape(-1)
                if (self.env_demo.shape != (self.num_envs,) or self.env_demo.min() < 0
                        or self.env_demo.max() >= len(self.demos)):
                    raise ValueError(f"env_demos must hold {self.num_envs} indices in "
                                     f"[0, {len(self.demos)})")
        elif env_demos is not None:
            raise ValueError("env_demos needs a pool made with a demo")
        if game is None:
            raise ValueError("game is required without a demo")
        self.game = game
        self.rom_id = self.demo.rom_id if self.demo is not None else rom_id(game)
        if self.demo is not None:
            self.rom_path = str(self.demo.rom_file())  # the ROM its states were recorded with
        else:
            import ale_py

            self.rom_path = str(ale_py.roms.get_rom_path(self.rom_id))

        layout = shm_lib.Layout.build(shm_lib.pool_fields(self.num_envs, config.obs_shape))
        seg = shm_lib.create(layout)
        self._segments.append(seg)
        # The finalizer holds the workers and the segment list, not the pool: a pool dropped
        # without close() still stops its workers and frees its memory.
        self._finalizer = weakref.finalize(self, self._workers.shutdown, self._segments)
        self._views = layout.views(seg.buf)
        self._views["next_start"][:] = -1
        bounds = np.linspace(0, self.num_envs, self.num_workers + 1).round().astype(np.int64)
        self._bounds = bounds
        self._owner = np.repeat(np.arange(self.num_workers), np.diff(bounds))  # env -> worker
        self._pending: collections.deque[tuple[np.ndarray, list[int]]] = collections.deque()
        self._busy = np.zeros(self.num_envs, bool)  # env has an unanswered send
        ctx = mp.get_context(start_method)
        try:
            for w in range(self.num_workers):
                spec = WorkerSpec(
                    index=w,
                    env_lo=int(bounds[w]),
                    env_hi=int(bounds[w + 1]),
                    game=game,
                    rom_path=self.rom_path,
                    config=config,
                    demo=demo,
                    shm_name=seg.name,
                    layout=layout,
                    seed=int(seed),
                    env_demo=tuple(self.env_demo[bounds[w]:bounds[w + 1]].tolist()),
                )
                self._workers.start(ctx, worker_main, spec, name=f"atari-{w}")
            # Read here while the workers start (they answer "ready" first, then the states).
            self.num_actions = len(make_ale(self.rom_path, 0, 0.0).getMinimalActionSet())
            self._states_requests = [
                request_dense_states(self._workers, d, demo.dense_stride, index)
                for index, d in enumerate(self.demos)]
        except BaseException:
            self.close()
            raise
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Completes the start (`wait=False`): every worker ready, the demos' dense states
        shared. Idempotent; the pool's calls do it themselves. Raises PoolError (and closes the
        pool) when a worker failed to start."""
        if self._started:
            return
        if self._closed:
            raise PoolError("the pool is closed")
        try:
            for w in range(self.num_workers):
                self._reply(w)
            if self._states_requests:
                self.demo_states_build_s = share_dense_states(
                    self._workers, self._states_requests, self._segments)
        except BaseException:
            self.close()
            raise
        self._started = True
        self._states_requests = []  # (their states stay in this process's cache, not here)

    # ------------------------------------------------------------------ properties

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return self.config.obs_shape

    @property
    def demo_num_frames(self) -> int:
        """T, the demo's length in frames (demo mode only)."""
        if self.demo is None:
            raise ValueError("no demo")
        return int(self.demo.num_frames)

    @property
    def demos_num_frames(self) -> tuple[int, ...]:
        """Each demo's length T in frames, in `demo.paths` order (demo mode only)."""
        if self.demo is None:
            raise ValueError("no demo")
        return tuple(int(d.num_frames) for d in self.demos)

    # ------------------------------------------------------------------ the API

    def reset(self, env_ids: Sequence[int] | np.ndarray | None = None) -> PoolStep:
        """Reset envs (all by default) and return their first observations (reward 0).

        Demo mode: each restores the demo at its `set_start_frames` frame if one is pending,
        else at a frame drawn from its starting point (see `set_starting_points`).
        """
        ids = self._check_ids(env_ids)
        self._dispatch(OP_RESET, ids)
        return self.recv()

    def step(
        self, actions: np.ndarray, env_ids: Sequence[int] | np.ndarray | None = None
    ) -> PoolStep:
        """One agent step of envs `env_ids` (all by default): send then recv."""
        self.send(actions, env_ids)
        return self.recv()

    def send(self, actions: np.ndarray, env_ids: Sequence[int] | np.ndarray | None = None) -> None:
        """Start one agent step of `env_ids` (all by default) with `actions` int [B].

        Demo mode: action -1 plays the demo's own frame actions for that step (NOOP past the
        demo's end), e.g. to watch the demo through the normal step path.
        """
        ids = self._check_ids(env_ids)
        actions = np.asarray(actions)
        if actions.shape != ids.shape:
            raise ValueError(f"actions shape {actions.shape} != env_ids shape {ids.shape}")
        lowest = -1 if self.demo is not None else 0
        if actions.size and (actions.min() < lowest or actions.max() >= self.num_actions):
            raise ValueError(f"actions must be in [{lowest}, {self.num_actions})")
        self._views["action"][ids] = actions
        self._dispatch(OP_STEP, ids)

    def recv(self) -> PoolStep:
        """Wait for the oldest unanswered send (or reset) and return its results."""
        if not self._pending:
            raise RuntimeError("recv() without a pending send()")
        ids, workers = self._pending.popleft()
        for w in workers:
            self._reply(w)
        self._busy[ids] = False
        v = self._views
        if len(ids) == self.num_envs:
            out = {name: v[name].copy() for name in _OUTPUT_NAMES}
        else:
            out = {name: v[name][ids] for name in _OUTPUT_NAMES}
        return PoolStep(env_ids=ids, **out)

    def _demo_frames(self, values: Sequence[int] | np.ndarray, what: str,
                     ids: np.ndarray) -> np.ndarray:
        """int64 frame indices of envs `ids`, checked to lie in each env's demo, [0, T]."""
        frames = np.asarray(values, np.int64)
        limit = np.asarray(self.demos_num_frames, np.int64)[self.env_demo[ids]]
        if frames.size and (frames.min() < 0 or (frames > limit).any()):
            raise ValueError(f"{what} must be in [0, {int(limit.max())}]"
                             + (" (each env's own demo's length)" if len(self.demos) > 1
                                else ""))
        return frames

    def set_starting_points(
        self, env_ids: Sequence[int] | np.ndarray | None, starting_points: np.ndarray
    ) -> None:
        """Curriculum starting points sp (frames) used from the next reset of each env: the start
        frame is sp with probability p, else uniform in [sp, T); takes effect at the next reset,
        including the automatic one. `entropy_boost` follows the new sp from the next step on
        (a step is boosted while its first frame is < sp + 100), as in the reference."""
        ids = self._check_idle(env_ids)
        self._views["starting_point"][ids] = self._demo_frames(starting_points, "starting points",
                                                              ids)

    def set_start_frames(
        self, env_ids: Sequence[int] | np.ndarray | None, frames: np.ndarray
    ) -> None:
        """The start frame of the next episode of each env (one shot; afterwards starts are drawn
        from the starting point again). Used by the next reset, including the automatic one."""
        ids = self._check_idle(env_ids)
        self._views["next_start"][ids] = self._demo_frames(frames, "start frames", ids)

    def restore(
        self,
        env_ids: Sequence[int] | np.ndarray | None,
        frames: np.ndarray,
        starting_points: np.ndarray | None = None,
    ) -> PoolStep:
        """Start a new episode of `env_ids` now at demo frames `frames` int [B] (the state after
        demo actions [0, frame)); returns their first observations, stacks filled as an agent
        following the demo would see them. Frame 0 is the game's start: the reset followed by
        the drawn reset frames of `DemoResetConfig.start_noop_max` (the reset alone with 0)."""
        if self.demo is None:
            raise ValueError("restore() needs a pool made with a demo")
        ids = self._check_idle(env_ids)
        if starting_points is not None:
            self.set_starting_points(ids, starting_points)
        self.set_start_frames(ids, frames)
        return self.reset(ids)

    def ram(self, env_ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """uint8 [B, 128]: the emulators' RAM of `env_ids` (all by default), for tests and
        debugging (one pipe round trip per worker: not for the step path)."""
        ids = self._check_ids(env_ids)
        if self._pending:  # its reply would come first on the same pipe
            raise RuntimeError("ram() with a send() unanswered: recv() first")
        owners = self._owner[ids]
        out = np.zeros((len(ids), 128), np.uint8)
        for w in np.unique(owners).tolist():
            local = (ids[owners == w] - self._bounds[w]).astype(np.int32)
            self._send(w, bytes((OP_RAM,)) + local.tobytes())
            ram = np.frombuffer(self._reply(w), np.uint8, offset=1)
            out[owners == w] = ram.reshape(len(local), 128)
        return out

    def close(self) -> None:
        """Stop every worker and free the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._views = {}
        self._pending.clear()
        self._workers.shutdown(self._segments)
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer.detach()

    def __enter__(self) -> AtariPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_ids(self, env_ids) -> np.ndarray:
        if self._closed:
            raise PoolError("the pool is closed")
        self.wait_ready()
        if env_ids is None:
            ids = np.arange(self.num_envs, dtype=np.int32)
        else:
            ids = np.asarray(env_ids, dtype=np.int32).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
                raise ValueError(f"env ids must be in [0, {self.num_envs})")
            if len(np.unique(ids)) != len(ids):
                raise ValueError("env ids must be distinct")
        if self._busy[ids].any():
            raise RuntimeError("an env in env_ids has an unanswered send(); recv() first")
        return ids

    def _check_idle(self, env_ids) -> np.ndarray:
        if self.demo is None:
            raise ValueError("starting points and start frames need a pool made with a demo")
        return self._check_ids(env_ids)

    def _dispatch(self, op: int, ids: np.ndarray) -> None:
        owners = self._owner[ids]
        workers = np.unique(owners).tolist() if len(ids) != self.num_envs else None
        if workers is None:
            workers = list(range(self.num_workers))
            for w in workers:
                self._send(w, bytes((op,)))
        else:
            for w in workers:
                local = (ids[owners == w] - self._bounds[w]).astype(np.int32)
                self._send(w, bytes((op,)) + local.tobytes())
        self._busy[ids] = True
        self._pending.append((ids, workers))

    def _send(self, w: int, msg: bytes) -> None:
        try:
            self._workers.send(w, msg)
        except PoolError:
            self.close()
            raise

    def _reply(self, w: int) -> bytes:
        """The next reply of worker w; raises PoolError (and closes the pool) if it died,
        raised, or timed out."""
        try:
            return self._workers.reply(w)
        except PoolError:
            self.close()
            raise
