"""The worker process: owns a contiguous slice of the pool's environments (one ALE each), serves
the parent's commands (`procs` has the protocol) and writes results into shared memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import traceback
from multiprocessing.connection import Connection

import numpy as np

from jax_reset.demos.roms import make_ale as make_quiet_ale
from jax_reset.envs import demo_obs, preprocess, shm
from jax_reset.envs.config import DemoResetConfig, EnvConfig
from jax_reset.envs.demo_states import WorkerDemo
from jax_reset.envs.procs import (
    OP_BUILD_STATES,
    OP_CLOSE,
    OP_LOAD_STATES,
    OP_RAM,
    OP_RESET,
    OP_STEP,
    begin_child,
)
from jax_reset.envs.rules import (
    IS_CUT,
    IS_DONE,
    EndReason,
    draw_extra_frames,
    entropy_boost,
    frame_rules,
    start_score,
)

_GAME_OVER = int(EndReason.GAME_OVER)
_LIFE_LOSS = int(EndReason.LIFE_LOSS)
_TIME_LIMIT = int(EndReason.TIME_LIMIT)
# The extra-frames budget of an episode that plays on after the demo's final score
# (`DemoResetConfig.run_on_from_start`): more frames than any time limit allows.
_RUN_ON = 1 << 62


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, pickled once at start."""

    index: int
    env_lo: int  # global ids [env_lo, env_hi) belong to this worker
    env_hi: int
    game: str
    rom_path: str
    config: EnvConfig
    demo: DemoResetConfig | None
    shm_name: str
    layout: shm.Layout
    seed: int
    # The index into demo.paths of each of this worker's environments (empty: all demo 0).
    env_demo: tuple[int, ...] = ()


def make_ale(rom_path: str, seed: int, repeat_action_probability: float):
    """An ale-py emulator with EnvPool's settings (frame_skip 1, given stickiness and seed)."""
    return make_quiet_ale(rom_path, seed=seed, repeat_action_probability=repeat_action_probability)


class _EnvState:
    """Per-environment bookkeeping that is not in shared memory."""

    __slots__ = ("ale", "elapsed", "extra", "frame", "lives", "needs_reset", "run_on", "score",
                 "sp", "start_frame")

    def __init__(self, ale) -> None:
        self.ale = ale
        # Agent steps since the game's reset (EnvPool's time limit). Starts "expired" so that
        # the first reset is a full reset_game() even with episodic life, as in EnvPool.
        self.elapsed = 1 << 62
        self.extra = 0  # frames left after reaching the demo's final score
        self.frame = 0  # absolute frame index (frames since the game's reset)
        self.lives = 0
        self.needs_reset = True
        self.run_on = False  # plays on after the demo's final score (`_RUN_ON`)
        self.score = 0.0  # episode's running (unclipped) score
        self.sp = 0  # curriculum starting point of the current episode
        self.start_frame = 0


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        import ale_py

        self.spec = spec
        cfg = self.cfg = spec.config
        self._shm = shm.attach(spec.shm_name)
        views = spec.layout.views(self._shm.buf)
        lo, hi = spec.env_lo, spec.env_hi
        self.v = {name: arr[lo:hi] for name, arr in views.items()}  # local rows only
        self.obs_rows = list(self.v["obs"])  # [stack * C, H, W] views, one per env
        self.obs_addresses = [row.ctypes.data for row in self.obs_rows]
        self.rng = np.random.default_rng([spec.seed, spec.index, 0x5EED])
        self.envs = [
            _EnvState(make_ale(spec.rom_path, spec.seed + lo + i, cfg.repeat_action_probability))
            for i in range(hi - lo)
        ]
        self.action_set = list(self.envs[0].ale.getMinimalActionSet())
        self.noop = ale_py.Action.NOOP
        self.fire = ale_py.Action.FIRE
        self.fire_reset = cfg.uses_fire_reset(spec.game) and self.fire in self.action_set
        shape = preprocess.raw_screen_shape(cfg.gray_scale)
        self.bufs = [np.zeros(shape, np.uint8) for _ in range(2)]
        self.scratch = demo_obs.make_scratch(cfg)
        self.grab = "getScreenGrayscale" if cfg.gray_scale else "getScreenRGB"
        # Demo mode: every demo of the run (each worker replays a chunk of each when the
        # pool builds their dense states), and per environment its own demo and that demo's
        # per-frame end rules.
        self.demo: WorkerDemo | None = None  # the first demo; None: plain mode
        self.demos: list[WorkerDemo] = []
        self.env_demos: list[WorkerDemo] = []
        self.env_rules: list = [None] * (hi - lo)
        self.boost_frames = 0
        if spec.demo is not None:
            self.demos = [WorkerDemo(spec.demo, self.action_set, self.noop, path)
                          for path in spec.demo.paths]
            self.demo = self.demos[0]
            rules = [frame_rules(d.returns, spec.demo.allowed_lag_frames) for d in self.demos]
            index = list(spec.env_demo) or [0] * (hi - lo)
            self.env_demos = [self.demos[k] for k in index]
            self.env_rules = [rules[k] for k in index]
            self.boost_frames = spec.demo.entropy_boost_frames

    # ------------------------------------------------------------------ commands

    def serve(self, conn: Connection) -> None:
        while True:
            msg = conn.recv_bytes()
            op = msg[0]
            if op == OP_STEP:
                self.step(self._ids(msg))
            elif op == OP_RESET:
                self.reset(self._ids(msg))
            elif op == OP_BUILD_STATES:
                index, lo, hi, stride = pickle.loads(msg[1:])
                chunk = self.demos[index].build_chunk(self.envs[0].ale, lo, hi, stride)
                conn.send_bytes(b"k" + pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
                continue
            elif op == OP_LOAD_STATES:
                index, *args = pickle.loads(msg[1:])
                self.demos[index].load_states(*args)
            elif op == OP_RAM:
                # Tests and debugging: the RAM of the given envs, 128 bytes each, in order.
                ram = b"".join(self.envs[i].ale.getRAM().tobytes() for i in self._ids(msg))
                conn.send_bytes(b"k" + ram)
                continue
            elif op == OP_CLOSE:
                conn.send_bytes(b"k")
                return
            else:
                raise ValueError(f"unknown command opcode {op!r}")
            conn.send_bytes(b"k")

    def _ids(self, msg: bytes) -> range | np.ndarray:
        if len(msg) == 1:
            return range(len(self.envs))
        return np.frombuffer(msg, np.int32, offset=1).tolist()

    def close(self) -> None:
        self.v = {}
        self.obs_rows = []
        for demo in self.demos:
            demo.close()
        # BufferError: a view is still alive; the mapping goes with the process.
        with contextlib.suppress(BufferError):
            self._shm.close()

    # ------------------------------------------------------------------ step

    def step(self, ids) -> None:
        actions = self.v["action"]
        envs, action_set = self.envs, self.action_set
        for i in ids:
            e = envs[i]
            if e.needs_reset:  # autoreset "next_step": this step only resets (EnvPool)
                self._reset_cleared(i)
            else:
                a = actions[i]
                self._step_one(i, e, action_set[a] if a >= 0 else None)

    def _step_one(self, i: int, e: _EnvState, act) -> None:
        v = self.v
        cfg = self.cfg
        ale = e.ale
        skip = cfg.frame_skip
        bufs = self.bufs
        grab = getattr(ale, self.grab)
        rules = self.env_rules[i]
        raw = 0.0
        clipped = 0.0
        reason = 0
        frame = e.frame
        score = e.score
        lives_before = e.lives
        extra = e.extra
        # Per frame, ORed over the skip (rules.entropy_boost): the flag of the step's first
        # frame, frame + 1, with the env's current starting point.
        boost = rules is not None and entropy_boost(
            frame + 1, int(v["starting_point"][i]), self.boost_frames
        )
        k = 0
        for k in range(skip):
            # act None: the demo's own action of this frame (NOOP past its end).
            r = ale.act(act if act is not None else self._demo_action(i, frame))
            frame += 1
            if r:
                raw += r
                score += r
                clipped += 1.0 if r > 0 else -1.0
            if k >= skip - 2:
                grab(bufs[k - skip + 2])
            if ale.game_over():
                reason = _GAME_OVER
                break
            if rules is not None:
                lives = ale.lives()
                reason, extra = rules(frame, score, lives, lives_before, extra)
                lives_before = lives
                if reason:
                    break
        nframes = k + 1
        e.frame = frame
        e.score = score
        e.extra = extra
        e.elapsed += 1
        if rules is not None:
            e.lives = lives_before
        else:
            lives = ale.lives()
            if cfg.episodic_life and reason == 0 and 0 < lives < e.lives:
                reason = _LIFE_LOSS
            e.lives = lives
        if reason == 0 and e.elapsed >= cfg.max_episode_steps:
            reason = _TIME_LIMIT
        v["reward"][i] = clipped if cfg.reward_clip else raw
        v["raw_reward"][i] = raw
        v["step_frames"][i] = nframes
        if reason:
            self._end_episode(i, e, reason)
            if cfg.autoreset == "same_step":
                self._reset_one(i)  # overwrites obs, frame, score: the new episode's first
                return
            e.needs_reset = True
        else:
            self._write_end(i, 0)
        v["reset_frames"][i] = 0
        v["episode_start"][i] = False
        # The observation: max of the last two frames if the whole skip ran, else the last.
        if nframes == skip:
            if cfg.max_pool and skip > 1:
                src = preprocess.max_pool(bufs[0], bufs[1], bufs[0])
            else:
                src = bufs[1]
        elif k == skip - 2:
            src = bufs[0]
        else:  # EnvPool returns the previous observation here; this is the true last frame
            grab(bufs[1])
            src = bufs[1]
        self._push(i, src, push_all=False)
        self._write_status(i, e, boost)

    def _demo_action(self, i: int, frame: int):
        if self.demo is None:
            raise ValueError("action -1 (play the demo's actions) needs a demo")
        return self.env_demos[i].action(frame)

    def _write_end(self, i: int, reason: int) -> None:
        """Row i's end columns for an int EndReason (0: the episode goes on)."""
        v = self.v
        v["done"][i] = IS_DONE[reason]
        v["cut"][i] = IS_CUT[reason]
        v["game_over"][i] = reason == _GAME_OVER
        v["end_reason"][i] = reason

    def _end_episode(self, i: int, e: _EnvState, reason: int) -> None:
        v = self.v
        self._write_end(i, reason)
        v["ep_start_frame"][i] = e.start_frame
        v["ep_end_frame"][i] = e.frame
        v["ep_score"][i] = e.score
        # An episode that plays on (`_RUN_ON`) tied the demo if it ever reached its final score
        # (the budget started counting down then), as it would have been when cut there.
        v["ep_as_good_as_demo"][i] = self.demo is not None and (
            e.score >= self.env_demos[i].final_score or (e.run_on and e.extra < _RUN_ON))
        v["ep_starting_point"][i] = e.sp

    def _write_status(self, i: int, e: _EnvState, boost: bool) -> None:
        v = self.v
        v["frame"][i] = e.frame
        v["score"][i] = e.score
        v["lives"][i] = e.lives
        v["entropy_boost"][i] = boost

    def _push(self, i: int, screen: np.ndarray, push_all: bool) -> None:
        cfg = self.cfg
        row = self.obs_rows[i]
        slot = preprocess.shift_stack(row, cfg.channels, self.obs_addresses[i])
        preprocess.resize_chw(screen, slot, self.scratch, cfg.inter_area_resize)
        if push_all:
            preprocess.fill_stack(row, cfg.channels)

    # ------------------------------------------------------------------ reset

    def reset(self, ids) -> None:
        for i in ids:
            self._reset_cleared(i)

    def _reset_cleared(self, i: int) -> None:
        """A reset as an output row: reward 0, no episode end."""
        v = self.v
        self._reset_one(i)
        v["reward"][i] = 0.0
        v["raw_reward"][i] = 0.0
        v["step_frames"][i] = 0  # no action was taken
        self._write_end(i, 0)

    def _reset_one(self, i: int) -> None:
        e = self.envs[i]
        reset = self._reset_demo if self.demo is not None else self._reset_plain
        self.v["reset_frames"][i] = reset(i, e)
        e.needs_reset = False
        e.elapsed = 0 if self.demo is not None else e.elapsed
        self.v["episode_start"][i] = True
        # An episode's first obs was produced by no agent step: flagged by its start frame.
        boost = self.env_rules[i] is not None and entropy_boost(e.frame, e.sp,
                                                                 self.boost_frames)
        self._write_status(i, e, boost)

    def _reset_plain(self, i: int, e: _EnvState, noop_max: int | None = None,
                     new_game: bool = False) -> int:
        """EnvPool's Reset(): reset_game (unless episodic life continues the game), NOOP frames,
        an optional FIRE frame; the stack is filled with the single last screen. Returns the
        frames run by `act` (not the ones `reset_game()` emulates inside ALE). noop_max: U{1..}
        frames in all, `cfg.noop_max` by default; new_game: reset the game whatever episodic
        life says (both for a demo episode from the game's start)."""
        cfg = self.cfg
        ale = e.ale
        noop_max = cfg.noop_max if noop_max is None else noop_max
        noops = int(self.rng.integers(1, noop_max + 1)) - int(self.fire_reset)
        push_all = False
        frames = 0
        if (new_game or not cfg.episodic_life or ale.game_over()
                or e.elapsed >= cfg.max_episode_steps):
            ale.reset_game()
            e.elapsed = 0
            e.frame = 0
            push_all = True
        for _ in range(noops):
            ale.act(self.noop)
            e.frame += 1
            frames += 1
            if ale.game_over():
                ale.reset_game()
                e.frame = 0
                push_all = True
        if self.fire_reset:
            ale.act(self.fire)
            e.frame += 1
            frames += 1
        getattr(ale, self.grab)(self.bufs[1])
        self._push(i, self.bufs[1], push_all=push_all)
        e.lives = ale.lives()
        e.score = 0.0
        e.start_frame = e.frame
        e.sp = 0
        return frames

    def _reset_demo(self, i: int, e: _EnvState) -> int:
        """A restore at the forced start frame, or one drawn from the starting point; returns
        the emulator frames run."""
        v = self.v
        e.sp = int(v["starting_point"][i])
        start = self.env_demos[i].start_frame(self.rng, e.sp, int(v["next_start"][i]))
        v["next_start"][i] = -1
        demo = self.spec.demo
        if start == 0 and demo.start_noop_max > 0:
            # The game's start as a plain reset begins it (`DemoResetConfig.start_noop_max`).
            # The start frame stays 0, the demo frame it starts from, for the curriculum;
            # `e.frame` counts the reset's frames, for the rules.
            frames = self._reset_plain(i, e, demo.start_noop_max, new_game=True)
            e.sp, e.start_frame = int(v["starting_point"][i]), 0
        else:
            frames = self.restore_demo_frame(i, e, start)
        e.extra = draw_extra_frames(self.rng, demo.extra_frames_log_max)
        e.run_on = start == 0 and demo.run_on_from_start
        if e.run_on:
            e.extra = _RUN_ON  # never counts down to 0: no cut after the demo's final score
        return frames

    def restore_demo_frame(self, i: int, e: _EnvState, frame: int) -> int:
        """Put env i at the state after demo actions [0, frame), with the frame stack an agent
        following the demo would hold there: observation slots of frames frame - skip * j.
        Returns the emulator frames run.

        Cost: one `restoreState` (or `reset_game()` near the start) plus at most
        stride + skip * (stack - 1) + 1 emulated frames, and one more `restoreState` when the
        replay crosses the first checkpoint (`demo_obs.restore_stack`).
        """
        demo = self.env_demos[i]
        replay = demo.replay
        if replay is None:
            raise RuntimeError("demo states are not loaded")
        ale = e.ale
        frames = demo_obs.restore_stack(ale, replay, frame, self.cfg, self.obs_rows[i],
                                        self.scratch, getattr(ale, self.grab))
        e.frame = frame
        e.start_frame = frame
        e.score = start_score(demo.returns, frame)
        e.lives = ale.lives()
        return frames


def worker_main(conn: Connection, spec: WorkerSpec, beat=None) -> None:
    """Process entry point. Ctrl-C is the parent's business: it closes the pool
    (``procs.begin_child``)."""
    begin_child(beat)
    worker = None
    try:
        worker = Worker(spec)
        conn.send_bytes(b"k")
        worker.serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: exit quietly
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send_bytes(b"E" + traceback.format_exc().encode("utf-8", "replace"))
    finally:
        if worker is not None:
            worker.close()
        conn.close()
