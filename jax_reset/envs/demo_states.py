"""Dense demo states for the pool's restores: built once by the workers in parallel (each
replays a contiguous chunk of the demo), shared with all of them through one more segment.

Parent side: `request_dense_states` (returns at once) then `share_dense_states`. Worker side:
`WorkerDemo` (the worker's demo: a chunk's replay with `build_state_chunk`, the shared
`DemoStates`, and the restores made of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import time
from multiprocessing import shared_memory

import numpy as np

from jax_reset import demos
from jax_reset.envs import demo_obs, shm
from jax_reset.envs.config import DemoResetConfig
from jax_reset.envs.procs import OP_BUILD_STATES, OP_LOAD_STATES, PoolError, Workers
from jax_reset.envs.rules import draw_start_frame

# Dense demo states of the last demos pools of this process were made with: (path, source
# hash, T, stride) -> states. A second pool on the same demos then starts without a replay.
_STATE_CACHE: dict[tuple, list[bytes]] = {}
_CACHE_DEMOS = 4  # demos kept: tens of MB each for a long demo


@dataclasses.dataclass
class StatesRequest:
    """Dense states asked of the workers (``request_dense_states``), shared by
    ``share_dense_states``: the workers replay while the parent does other work."""

    index: int  # the pool's demo number
    stride: int
    key: tuple  # into _STATE_CACHE
    num_states: int
    jobs: list[int]  # the workers replaying a chunk, in chunk order
    cached: list[bytes] | None  # the states from this process's cache (then no jobs)
    t0: float  # when it was asked


def request_dense_states(workers: Workers, demo, stride: int, index: int = 0) -> StatesRequest:
    """Asks for the states every `stride` frames of `demo`, the pool's demo number `index`: each
    worker replays one contiguous chunk (nothing when this process's cache holds them). Returns
    at once; the workers answer after what they were sent before (their start)."""
    t0 = time.perf_counter()
    num_frames = int(demo.num_frames)
    grid = np.arange(0, num_frames + 1, stride)
    key = (str(demo.path), demo.header.get("source_sha256"), num_frames, stride)
    jobs: list[int] = []
    cached = _STATE_CACHE.get(key)
    if cached is None:
        cuts = np.linspace(0, len(grid), len(workers) + 1).round().astype(np.int64)
        for w in range(len(workers)):
            if cuts[w] == cuts[w + 1]:
                continue
            lo = int(grid[cuts[w]])
            hi = int(grid[cuts[w + 1] - 1]) + 1
            workers.send(w, bytes((OP_BUILD_STATES,)) + pickle.dumps((index, lo, hi, stride)))
            jobs.append(w)
    return StatesRequest(index, stride, key, len(grid), jobs, cached, t0)


def share_dense_states(workers: Workers, requests: list[StatesRequest],
                       segments: list) -> float:
    """The requested states of each demo (gathered from the workers, or this process's cache),
    each copied into a new segment (appended to `segments`, the pool's list to free) and loaded
    by every worker. Returns the seconds since the first request.

    Every demo's chunks are gathered before any is loaded: a worker answers in the order it was
    asked, and it was asked for all of them first."""
    gathered = [_gather(workers, request) for request in requests]
    for request, states in zip(requests, gathered, strict=True):
        offsets = np.zeros(len(states) + 1, np.int64)
        offsets[1:] = np.cumsum([len(s) for s in states])
        seg = shared_memory.SharedMemory(create=True, size=max(int(offsets[-1]), 1))
        segments.append(seg)
        seg.buf[: offsets[-1]] = b"".join(states)
        msg = bytes((OP_LOAD_STATES,)) + pickle.dumps((request.index, seg.name, request.stride,
                                                       offsets))
        for w in range(len(workers)):
            workers.send(w, msg)
        for w in range(len(workers)):
            workers.reply(w)
    return time.perf_counter() - min((r.t0 for r in requests), default=time.perf_counter())


def _gather(workers: Workers, request: StatesRequest) -> list[bytes]:
    """One demo's requested states: the cached ones, or the workers' replies (always read when
    it asked them, so that the next reply on each pipe is the next request's)."""
    if request.cached is not None:
        return request.cached
    states: list[bytes] = []
    for w in request.jobs:
        states.extend(pickle.loads(workers.reply(w)[1:]))
    if len(states) != request.num_states:
        raise PoolError(f"built {len(states)} demo states, expected {request.num_states}")
    while len(_STATE_CACHE) >= _CACHE_DEMOS:
        del _STATE_CACHE[next(iter(_STATE_CACHE))]  # the oldest
    _STATE_CACHE[request.key] = states
    return states


def build_state_chunk(ale, demo, action_set, lo: int, hi: int, stride: int) -> list[bytes]:
    """Serialized states at frames lo, lo + stride, ... (< hi) by replaying demo actions.

    lo is a multiple of stride. The replay starts from the demo's own restore (its latest
    checkpoint <= lo, or the game's reset before the first checkpoint) and re-starts from the
    first checkpoint when it gets there: a replay from today's reset drifts from the recorded
    game, a replay from the first checkpoint on is exact (`demos.verify`).
    """
    demo.restore(ale, lo)
    out = [ale.cloneState().serialize()]
    actions = demo.actions
    first_checkpoint = int(demo.checkpoint_frames[0]) if len(demo.checkpoint_frames) else -1
    for frame in range(lo, hi - 1):
        ale.act(action_set[int(actions[frame])])
        if frame + 1 == first_checkpoint:
            demo.restore(ale, first_checkpoint)
        if (frame + 1) % stride == 0:
            out.append(ale.cloneState().serialize())
    return out


class DemoStates:
    """Emulator states of a demo every `stride` frames: frame k * stride is states[k].

    Frame 0 is the game's reset (restored with `reset_game()`, which also leaves its screen in
    the frame buffer; `restoreState` does not restore the screen).
    """

    def __init__(self, stride: int, blob: memoryview, offsets: np.ndarray) -> None:
        self.stride = stride
        self._blob = blob
        self._offsets = offsets  # int64 [K + 1] byte offsets into blob
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def state(self, k: int):
        import ale_py

        st = self._cache.get(k)
        if st is None:
            st = ale_py.ALEState(bytes(self._blob[self._offsets[k] : self._offsets[k + 1]]))
            self._cache[k] = st
        return st


class WorkerDemo:
    """A worker's demo: the recorded game, its dense states once loaded, and the restores
    made of them (the demo restore path of `Worker`)."""

    def __init__(self, config: DemoResetConfig, action_set: list, noop,
                 path: str | None = None) -> None:
        """`path`: one of `config.paths` (default: the first)."""
        self.config = config
        self.demo = demos.load(path or config.paths[0], rom_path=config.rom_path)
        self.returns = np.asarray(self.demo.returns, np.float64)  # R[f], [T]
        self.num_frames = int(self.demo.num_frames)
        self.final_score = float(self.returns[-1])
        # ALE actions of the demo's frames, NOOP past its end (action -1 plays them).
        self._frame_actions = [action_set[int(a)] for a in self.demo.actions] + [noop]
        self._action_set = action_set
        self._states: DemoStates | None = None
        self._shm: shared_memory.SharedMemory | None = None
        self.replay: demo_obs.DemoReplay | None = None  # restores, once the states are loaded

    def action(self, frame: int):
        """The ALE action the demo took at `frame` (from the state after `frame` frames)."""
        return self._frame_actions[min(frame, self.num_frames)]

    def build_chunk(self, ale, lo: int, hi: int, stride: int) -> list[bytes]:
        return build_state_chunk(ale, self.demo, self._action_set, lo, hi, stride)

    def load_states(self, name: str, stride: int, offsets: np.ndarray) -> None:
        """Attach the parent's segment of dense states (`share_dense_states`)."""
        self._shm = shm.attach(name)
        self._states = DemoStates(stride, self._shm.buf, offsets)
        self.replay = demo_obs.DemoReplay.from_dense_states(
            self.demo, self._action_set, stride, len(self._states), self._states.state)

    def start_frame(self, rng: np.random.Generator, starting_point: int, forced: int) -> int:
        """The start frame of an episode: `forced` if >= 0, else drawn from the starting point."""
        if forced >= 0:
            return min(forced, self.num_frames)
        return draw_start_frame(rng, starting_point, self.num_frames,
                                self.config.p_start_at_starting_point)

    def close(self) -> None:
        self._states = None
        self.replay = None
        if self._shm is not None:
            # BufferError: a view is still alive; the mapping goes with the process.
            with contextlib.suppress(BufferError):
                self._shm.close()
