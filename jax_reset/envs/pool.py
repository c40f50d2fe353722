"""The parent side of the Atari pool: worker processes, shared memory, the EnvPool-like API."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing as mp
import pickle
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

import numpy as np

from jax_reset.envs import shm as shm_lib
from jax_reset.envs.config import DemoResetConfig, EnvConfig, rom_id
from jax_reset.envs.worker import (
    OP_BUILD_STATES,
    OP_CLOSE,
    OP_LOAD_STATES,
    OP_RAM,
    OP_RESET,
    OP_STEP,
    WorkerSpec,
    worker_main,
)

_OUTPUT_FIELDS = (
    "obs",
    "reward",
    "raw_reward",
    "done",
    "cut",
    "game_over",
    "end_reason",
    "episode_start",
    "entropy_boost",
    "frame",
    "step_frames",
    "reset_frames",
    "lives",
    "score",
    "ep_start_frame",
    "ep_end_frame",
    "ep_score",
    "ep_as_good_as_demo",
    "ep_starting_point",
)


# Dense demo states of the last demo a pool of this process was made with: (path, source
# hash, T, stride) -> states. A second pool on the same demo then starts without a replay.
_STATE_CACHE: dict[tuple, list[bytes]] = {}


class PoolError(RuntimeError):
    """A worker died, raised, or did not answer; the pool is closed when this is raised."""


@dataclasses.dataclass(frozen=True)
class PoolStep:
    """The result of one agent step (or reset) of the environments `env_ids`; arrays are [B],
    copies owned by the caller, row b belongs to env `env_ids[b]`.

    After an episode end (`done | cut`), with autoreset "same_step" (the default) `obs`,
    `frame`, `score`, `lives` and `entropy_boost` already describe the first state of the next
    episode (`episode_start` is True) and the `ep_*` fields describe the episode that ended;
    with "next_step" they describe the terminal state and the following step resets.
    """

    env_ids: np.ndarray  # int32 [B]
    obs: np.ndarray  # uint8 [B, stack * C, H, W], oldest frame first
    reward: np.ndarray  # float32 [B]: per-frame sign-clipped sum over the skip (if reward_clip)
    raw_reward: np.ndarray  # float32 [B]: unclipped sum over the skip
    done: np.ndarray  # bool [B]: terminal end (game over, life loss, lag behind the demo)
    cut: np.ndarray  # bool [B]: non-terminal end (extra frames after the demo score, time limit)
    game_over: np.ndarray  # bool [B]: the game itself ended
    end_reason: np.ndarray  # uint8 [B]: EndReason, 0 when the episode goes on
    episode_start: np.ndarray  # bool [B]: obs is the first of an episode
    entropy_boost: np.ndarray  # bool [B]: frame < starting_point + 100 (demo mode)
    frame: np.ndarray  # int64 [B]: absolute frame index of obs (frames since the game's reset)
    # int32 [B]: emulator frames the agent's action ran in this step: frame_skip, fewer when
    # the episode ended inside the skip, 0 in a step that only reset (reset(), restore(), the
    # "next_step" autoreset). The exact count of frames of experience; restores not included.
    step_frames: np.ndarray
    # int32 [B]: emulator frames a reset in this step ran on top (demo restore replays, noop
    # and FIRE frames; not the frames ALE's reset_game() runs internally). Not experience.
    reset_frames: np.ndarray
    lives: np.ndarray  # int32 [B]
    score: np.ndarray  # float64 [B]: running unclipped score of the current episode
    ep_start_frame: np.ndarray  # int64 [B]: valid where done | cut
    ep_end_frame: np.ndarray  # int64 [B]: the frame index reached
    ep_score: np.ndarray  # float64 [B]
    ep_as_good_as_demo: np.ndarray  # bool [B]: ep_score >= the demo's final score
    ep_starting_point: np.ndarray  # int64 [B]: the env's curriculum starting point then

    @property
    def ended(self) -> np.ndarray:
        """bool [B]: an episode ended in this step (its record is in the ep_* fields)."""
        return self.done | self.cut


class AtariPool:
    """N Atari environments over W worker processes, with optional demo-state resets.

    Plain mode (`demo=None`): EnvPool's Atari env (see `EnvConfig`). Demo mode: every reset
    restores the demo at a start frame drawn from the env's starting point (or one given with
    `set_start_frames`), and the curriculum's per-frame episode rules end episodes.

    Actions are indices into the game's minimal action set, int [B]. The asynchronous pair
    `send(actions, env_ids)` / `recv()` lets part of the envs emulate while the caller computes
    actions for another part; `recv()` returns the results of the oldest unanswered `send`. An
    env may have at most one unanswered send.

    Always `close()` (or use `with`): it stops the workers and frees the shared memory. A worker
    that dies or raises makes the next call raise `PoolError` (within `poll_s`).
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
    ) -> None:
        """game: EnvPool-style name ("Pong", "MontezumaRevenge"); None to take the demo's.
        num_workers is capped at num_envs; envs are split into contiguous, near-equal slices.
        timeout_s: the longest a single command may take before the pool gives up on it.
        """
        if start_method == "fork":
            raise ValueError("fork is unsafe with a threaded parent (JAX): use spawn/forkserver")
        self.config = config = config or EnvConfig()
        self.demo_config = demo
        self.num_envs = int(num_envs)
        if self.num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.num_workers = max(1, min(int(num_workers), self.num_envs))
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._closed = False
        self._procs: list = []
        self._conns: list[Connection] = []
        self._shm = None
        self._states_shm = None
        self.demo = None
        if demo is not None:
            from jax_reset import demos

            self.demo = demos.load(demo.demo_path, rom_path=demo.rom_path)
            if game is not None and game != self.demo.game:
                raise ValueError(f"game {game!r} but the demo is of {self.demo.game!r}")
            game = self.demo.game
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
        self._shm = shm_lib.create(layout)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns, [self._shm])
        self._views = layout.views(self._shm.buf)
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
                    shm_name=self._shm.name,
                    layout=layout,
                    seed=int(seed),
                )
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=worker_main, args=(child_conn, spec), daemon=True, name=f"atari-{w}"
                )
                proc.start()
                child_conn.close()  # so a dead worker reads as EOF here
                self._procs.append(proc)
                self._conns.append(parent_conn)
            for w in range(self.num_workers):
                self._reply(w)
            self.num_actions = self._probe_num_actions()
            if self.demo is not None:
                self.demo_states_build_s = self._build_demo_states(demo.dense_stride)
        except BaseException:
            self.close()
            raise

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
            out = {name: v[name].copy() for name in _OUTPUT_FIELDS}
        else:
            out = {name: v[name][ids] for name in _OUTPUT_FIELDS}
        return PoolStep(env_ids=ids, **out)

    def _demo_frames(self, values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
        """int64 frame indices, checked to lie in the demo, [0, T]."""
        frames = np.asarray(values, np.int64)
        if frames.size and (frames.min() < 0 or frames.max() > self.demo_num_frames):
            raise ValueError(f"{what} must be in [0, {self.demo_num_frames}]")
        return frames

    def set_starting_points(
        self, env_ids: Sequence[int] | np.ndarray | None, starting_points: np.ndarray
    ) -> None:
        """Curriculum starting points sp (frames) used from the next reset of each env: the start
        frame is sp with probability p, else uniform in [sp, T); `entropy_boost` is on while
        frame < sp + 100. Takes effect at the next reset, including the automatic one."""
        ids = self._check_idle(env_ids)
        self._views["starting_point"][ids] = self._demo_frames(starting_points, "starting points")

    def set_start_frames(
        self, env_ids: Sequence[int] | np.ndarray | None, frames: np.ndarray
    ) -> None:
        """The start frame of the next episode of each env (one shot; afterwards starts are drawn
        from the starting point again). Used by the next reset, including the automatic one."""
        ids = self._check_idle(env_ids)
        self._views["next_start"][ids] = self._demo_frames(frames, "start frames")

    def restore(
        self,
        env_ids: Sequence[int] | np.ndarray | None,
        frames: np.ndarray,
        starting_points: np.ndarray | None = None,
    ) -> PoolStep:
        """Start a new episode of `env_ids` now at demo frames `frames` int [B] (the state after
        demo actions [0, frame)); returns their first observations, stacks filled as an agent
        following the demo would see them."""
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
        segments = [s for s in (self._shm, self._states_shm) if s is not None]
        _shutdown(self._procs, self._conns, segments)
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
            self._conns[w].send_bytes(msg)
        except OSError as err:
            self._fail(f"worker {w} is gone ({err})")

    def _reply(self, w: int) -> bytes:
        """The next reply of worker w; raises PoolError if it died, raised, or timed out."""
        conn, proc = self._conns[w], self._procs[w]
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
                self._fail(f"worker {w} (pid {proc.pid}) died with exit code {proc.exitcode}")
            if time.monotonic() > deadline:
                self._fail(f"worker {w} did not answer within {self._timeout_s:.0f} s")
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            proc.join(0.5)
            self._fail(f"worker {w} (pid {proc.pid}) died with exit code {proc.exitcode}")
        if msg[:1] == b"E":
            self._fail(f"worker {w} raised:\n{msg[1:].decode('utf-8', 'replace')}")
        return msg

    def _fail(self, message: str) -> None:
        self.close()
        raise PoolError(message)

    def _probe_num_actions(self) -> int:
        from jax_reset.envs.worker import make_ale

        return len(make_ale(self.rom_path, 0, 0.0).getMinimalActionSet())

    def _build_demo_states(self, stride: int) -> float:
        """Dense demo states, built once by the workers in parallel (each replays a contiguous
        chunk of the demo) and shared with all of them through one more segment. Returns the
        build time in seconds."""
        t0 = time.perf_counter()
        num_frames = self.demo_num_frames
        grid = np.arange(0, num_frames + 1, stride)
        key = (str(self.demo.path), self.demo.header.get("source_sha256"), num_frames, stride)
        states = _STATE_CACHE.get(key)
        if states is None:
            states = self._replay_states(grid, stride)
            _STATE_CACHE.clear()  # keep one demo's states: tens of MB for a long demo
            _STATE_CACHE[key] = states
        offsets = np.zeros(len(states) + 1, np.int64)
        offsets[1:] = np.cumsum([len(s) for s in states])
        from multiprocessing import shared_memory

        self._states_shm = shared_memory.SharedMemory(create=True, size=max(int(offsets[-1]), 1))
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _shutdown, self._procs, self._conns, [self._shm, self._states_shm]
        )
        self._states_shm.buf[: offsets[-1]] = b"".join(states)
        msg = bytes((OP_LOAD_STATES,)) + pickle.dumps((self._states_shm.name, stride, offsets))
        for w in range(self.num_workers):
            self._send(w, msg)
        for w in range(self.num_workers):
            self._reply(w)
        return time.perf_counter() - t0

    def _replay_states(self, grid: np.ndarray, stride: int) -> list[bytes]:
        """States at the frames of `grid`, each worker replaying one contiguous chunk."""
        cuts = np.linspace(0, len(grid), self.num_workers + 1).round().astype(np.int64)
        jobs = []
        for w in range(self.num_workers):
            if cuts[w] == cuts[w + 1]:
                continue
            lo = int(grid[cuts[w]])
            hi = int(grid[cuts[w + 1] - 1]) + 1
            self._send(w, bytes((OP_BUILD_STATES,)) + pickle.dumps((lo, hi, stride)))
            jobs.append(w)
        states: list[bytes] = []
        for w in jobs:
            states.extend(pickle.loads(self._reply(w)[1:]))
        if len(states) != len(grid):
            self._fail(f"built {len(states)} demo states, expected {len(grid)}")
        return states


def _shutdown(procs: list, conns: list[Connection], segments: list) -> None:
    """Stop workers (politely, then SIGTERM, then SIGKILL) and unlink shared memory."""
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.send_bytes(bytes((OP_CLOSE,)))
    deadline = time.monotonic() + 1.0
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(0.5)
        if proc.is_alive():
            proc.kill()
            proc.join(0.5)
    for conn in conns:
        conn.close()
    for seg in segments:
        # BufferError: numpy views still exist in this process; the mapping goes with them.
        with contextlib.suppress(BufferError):
            seg.close()
        with contextlib.suppress(FileNotFoundError):
            seg.unlink()
