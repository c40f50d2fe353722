"""Demo observations exactly as the pool emits them after a restore, outside the pool.

    from jax_reset import demos
    from jax_reset.envs import EnvConfig, demo_observations
    obs = demo_observations(demos.load("demos/Pong.npz"), EnvConfig(), [100, 5000])
    # uint8 [2, 12, 105, 80]: byte for byte pool.restore(ids, [100, 5000]).obs

The pieces here are the pool's own restore path, not a copy of it: the worker's restore is
`restore_stack`, that is `stack_frames` + `screens_needed` + `DemoReplay.screens` +
`frame_obs`, and `DemoRenderer` / `demo_observations` are made of the same pieces (one replay
in order for many frames instead of one per frame). Only the stored states a replay
starts from differ (the worker's dense states every `dense_stride` frames, the demo's own
checkpoints here), and both are the recorded game from the first checkpoint on.

Frames are emulator frames since the game's reset: "frame f" is the state after demo actions
[0, f), and "the screen of frame f" the screen drawn by the action that led there (frame 0: the
screen `reset_game()` leaves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from jax_reset.envs import preprocess
from jax_reset.envs.config import EnvConfig


def pooled(config: EnvConfig) -> bool:
    """Whether an observation slot is the max of two screens (max_pool with a skip > 1)."""
    return config.max_pool and config.frame_skip > 1


def stack_frames(frames: np.ndarray | Sequence[int] | int, config: EnvConfig) -> np.ndarray:
    """int64 [..., stack]: the frames whose slots make up the observation at `frames` [...],
    oldest first: frame - skip * (stack - 1 - j), clamped at 0 (the stack right after the
    game's reset repeats frame 0)."""
    frames = np.asarray(frames, np.int64)
    offsets = config.frame_skip * np.arange(config.stack_num - 1, -1, -1, dtype=np.int64)
    return np.maximum(frames[..., None] - offsets, 0)


def screens_needed(slot_frames: Iterable[int], config: EnvConfig) -> list[int]:
    """Sorted distinct screens the observation slots of `slot_frames` are made of: each frame,
    and with max pooling the frame before it."""
    needed = set()
    pool = pooled(config)
    for t in slot_frames:
        t = int(t)
        needed.add(t)
        if pool and t > 0:
            needed.add(t - 1)
    return sorted(needed)


def frame_obs(screen_before: np.ndarray | None, screen: np.ndarray, frame: int,
              config: EnvConfig, dst: np.ndarray, scratch: np.ndarray) -> None:
    """Write the observation slot of `frame` into dst uint8 [C, H, W]: its screen, max-pooled
    with the screen before (`screen_before`, unused at frame 0 or without pooling), resized.

    Screens: uint8 [210, 160, 3] RGB or [210, 160] gray; scratch: see `make_scratch`.
    """
    src = screen
    if pooled(config) and frame > 0:
        if screen_before is None:
            raise ValueError(f"the observation of frame {frame} needs the screen of {frame - 1}")
        src = np.maximum(screen_before, screen)
    preprocess.resize_chw(src, dst, scratch, config.inter_area_resize)


def make_scratch(config: EnvConfig) -> np.ndarray:
    """The resize scratch buffer `preprocess.resize_chw` needs: uint8 [H, W, C] or [H, W]."""
    shape = (config.img_height, config.img_width)
    return np.zeros(shape if config.gray_scale else (*shape, 3), np.uint8)


class DemoReplay:
    """Moves an ALE along a demo's recorded game, from the nearest stored state.

    `state_frames` int64 [K], ascending, `state_frames[0] == 0`: the frames with a stored state;
    frame 0 is the game's reset (`reset_game()`, which also draws frame 0's screen), `state(k)`
    the `ale_py.ALEState` at `state_frames[k]` for k >= 1. Stored states before the first
    checkpoint are today's replay from the reset, which drifts from the recorded game: whenever a
    replay reaches the first checkpoint from below, the checkpoint is restored, so every state
    (and every screen after it) from there on is the recorded game's. The screen of the first
    checkpoint frame itself is today's replay's: a state carries no screen.

    `emulated` counts the emulator frames run by `screens` (restores are not frames).

    Caveat, before the first checkpoint only: `reset_game()` draws on the emulator's random
    stream, and PrivateEye's replay from a reset differs on some resets (about 1 in 8 measured),
    so those frames depend on how many resets the emulator has done (its seed and history).
    """

    def __init__(self, actions: np.ndarray, action_set: Sequence[Any], state_frames: np.ndarray,
                 state: Callable[[int], Any], first_checkpoint: int, first_state: Any) -> None:
        """actions: uint8/int [T] minimal-action-set indices; action_set: the ALE actions."""
        state_frames = np.asarray(state_frames, np.int64)
        if not len(state_frames) or state_frames[0] != 0:
            raise ValueError("state_frames must start at frame 0 (the game's reset)")
        self.actions = np.asarray(actions, np.int64).tolist()  # list: faster per-frame indexing
        self.action_set = list(action_set)
        self.state_frames = state_frames
        self.state = state
        self.first_checkpoint = int(first_checkpoint)
        self.first_state = first_state
        self.emulated = 0

    @classmethod
    def from_dense_states(cls, demo: Any, action_set: Sequence[Any], stride: int, count: int,
                          state: Callable[[int], Any]) -> DemoReplay:
        """The pool's replay: `count` states every `stride` frames (`worker.build_state_chunk`,
        state(k) at frame k * stride) of `demo` (`demos.Demo`)."""
        import ale_py

        return cls(demo.actions, action_set, stride * np.arange(count), state,
                   int(demo.checkpoint_frames[0]), ale_py.ALEState(demo.checkpoint_state(0)))

    @classmethod
    def from_checkpoints(cls, demo: Any, action_set: Sequence[Any]) -> DemoReplay:
        """A replay from the demo's own checkpoints (`demos.Demo`)."""
        import ale_py

        states: dict[int, Any] = {}

        def state(k: int) -> Any:
            if k not in states:
                states[k] = ale_py.ALEState(demo.checkpoint_state(k - 1))
            return states[k]

        frames = np.concatenate([[0], np.asarray(demo.checkpoint_frames, np.int64)])
        return cls(demo.actions, action_set, frames, state, int(demo.checkpoint_frames[0]),
                   state(1))

    def screens(self, ale: Any, needed: Iterable[int], grab: Callable[[], np.ndarray],
                ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, screen of frame t) for the sorted distinct frames `needed`, leaving `ale`
        at the last one. Each screen is reached from the latest stored state strictly before it
        (restoring a state does not restore the screen), or by going on from the previous one
        when that is no farther. `grab()` returns a new screen array."""
        pos = -1  # frame the emulator is at; -1: nowhere yet
        actions, action_set, act = self.actions, self.action_set, ale.act
        first = self.first_checkpoint
        for t in needed:
            t = int(t)
            if t <= pos:
                raise ValueError(f"needed frames must be sorted and distinct ({t} after {pos})")
            if t == 0:
                ale.reset_game()
                pos = 0
            else:
                k = int(np.searchsorted(self.state_frames, t - 1, side="right")) - 1
                base = int(self.state_frames[k])
                if base > pos:
                    if base == 0:
                        ale.reset_game()
                    else:
                        ale.restoreState(self.state(k))
                    pos = base
                while pos < t:
                    act(action_set[actions[pos]])
                    pos += 1
                    self.emulated += 1
                    if pos == first:  # from below: back onto the recorded game
                        ale.restoreState(self.first_state)
            yield t, grab()


def restore_stack(ale: Any, replay: DemoReplay, frame: int, config: EnvConfig,
                  row: np.ndarray, scratch: np.ndarray, grab: Callable[[], np.ndarray]) -> int:
    """The pool's restore (the worker calls this): put `ale` at demo frame `frame` and write
    the frame stack an agent following the demo would hold there into row uint8
    [stack * C, H, W]. Returns the emulator frames run: at most the spacing of the replay's
    states + skip * (stack - 1) + 1."""
    targets = stack_frames(frame, config).tolist()
    before = replay.emulated
    screens = dict(replay.screens(ale, screens_needed(targets, config), grab))
    c = config.channels
    for j, t in enumerate(targets):
        frame_obs(screens.get(t - 1), screens[t], t, config, row[j * c : (j + 1) * c], scratch)
    return replay.emulated - before


class DemoRenderer:
    """Observation slots of demo frames, replayed once in order (for long ranges of frames).

    Holds its own emulator with the demo's ROM; not thread-safe.
    """

    def __init__(self, demo: Any, config: EnvConfig, rom_path: str | None = None) -> None:
        """demo: a `demos.Demo`; rom_path: the user's ROM (Gravitar), else the demo's own."""
        self.demo = demo
        self.config = config
        self.ale = demo.make_ale(rom_path)
        self.replay = DemoReplay.from_checkpoints(demo, self.ale.getMinimalActionSet())
        self.grab = self.ale.getScreenGrayscale if config.gray_scale else self.ale.getScreenRGB
        self.scratch = make_scratch(config)

    def slots(self, frames: np.ndarray | Sequence[int], out: np.ndarray | None = None,
              ) -> np.ndarray:
        """uint8 [N, C, H, W]: the observation slot of each of the sorted distinct `frames` [N]
        (in [0, T]), written into `out` if given. One replay: about T / 10,000 seconds for a
        range of T frames."""
        cfg = self.config
        frames = np.asarray(frames, np.int64).reshape(-1)
        if len(frames) and (np.any(np.diff(frames) <= 0) or frames[0] < 0
                            or frames[-1] > self.demo.num_frames):
            raise ValueError(f"frames must be sorted, distinct, in [0, {self.demo.num_frames}]")
        shape = (len(frames), cfg.channels, cfg.img_height, cfg.img_width)
        if out is None:
            out = np.empty(shape, np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {shape}, not {out.dtype} {out.shape}")
        wanted = frames.tolist()
        j = 0
        before: tuple[int, np.ndarray] | None = None
        for t, screen in self.replay.screens(self.ale, screens_needed(wanted, cfg), self.grab):
            if j < len(wanted) and t == wanted[j]:
                prev = before[1] if before is not None and before[0] == t - 1 else None
                frame_obs(prev, screen, t, cfg, out[j], self.scratch)
                j += 1
            before = (t, screen)
        return out

    def observations(self, frames: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 [B, stack * C, H, W]: the pool's observations right after restores at demo
        `frames` [B] (any order, repeats allowed)."""
        frames = np.asarray(frames, np.int64).reshape(-1)
        if len(frames) and (frames.min() < 0 or frames.max() > self.demo.num_frames):
            raise ValueError(f"frames must be in [0, {self.demo.num_frames}]")
        idx = stack_frames(frames, self.config)  # [B, stack]
        distinct = np.unique(idx)
        slots = self.slots(distinct)  # [N, C, H, W]
        obs = slots[np.searchsorted(distinct, idx)]  # [B, stack, C, H, W]
        return obs.reshape(len(frames), -1, *obs.shape[3:])


def demo_observations(demo: Any, config: EnvConfig, frames: np.ndarray | Sequence[int],
                      rom_path: str | None = None) -> np.ndarray:
    """uint8 [B, stack * C, H, W]: what `AtariPool.restore(ids, frames)` returns as `obs` for a
    pool with `config` on `demo` (a `demos.Demo`), for demo frames `frames` [B] in [0, T] (frame
    0: the game's reset itself, as with `DemoResetConfig.start_noop_max = 0`)."""
    return DemoRenderer(demo, config, rom_path).observations(frames)


def demo_mean_observation(demo: Any, config: EnvConfig, rom_path: str | None = None,
                          max_frames: int = 2000) -> np.ndarray:
    """float32 [stack * C, H, W] in [0, 1]: the demo's mean observation, per pixel.

    The mean of the observation slots of up to ``max_frames`` demo frames spread evenly over the
    whole demo (one replay, about T / 10,000 seconds), the same image in every stacked frame.
    It is the network's input offset with ``network.input_norm = "demo_mean"``: subtracted from
    every frame, it leaves mostly the moving objects (``jax_reset.networks.model.Torso``).
    """
    t = demo.num_frames
    frames = np.unique(np.linspace(0, t, min(max_frames, t + 1)).round().astype(np.int64))
    slots = DemoRenderer(demo, config, rom_path).slots(frames)  # [N, C, H, W]
    mean = slots.mean(axis=0, dtype=np.float64) / 255.0
    return np.tile(mean, (config.stack_num, 1, 1)).astype(np.float32)
