"""The demo's observations before each episode's start, for the learner's recurrent warm-up.

An episode that starts from demo frame s costs no environment step beyond its own: the pool
restores the emulator at s, and the recurrent state entering s is the learner's scanned warm-up
over the demo's observations of the ``train.warmup_steps`` agent steps before s, held here in
memory and made by the pool's own restore code (``demo_obs``), so byte-identical to the pool's
frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jax_reset import demos
from jax_reset.envs.config import EnvConfig
from jax_reset.envs.demo_obs import DemoRenderer, stack_frames


class DemoHistory:
    """The demo's frames as the pool's preprocessing shows them, built on demand, in memory.

    ``frames[f]`` is the preprocessed screen after ``f`` demo actions (max-pooled with the
    screen before it, as the pool does), uint8 [C, H, W]; the stacked observation of an agent
    following the demo at frame f is ``frames[f - skip * (stack - 1 - j)]`` for j < stack
    (clamped at 0): byte for byte what the pool's restore puts in the frame stack, made by the
    pool's own restore code (``demo_obs.DemoRenderer``; tested).
    Only frames from ``lo`` to the demo's end are built: ``ensure`` extends them backwards as
    the curriculum moves, restoring the demo's checkpoints (exact, like the pool's dense
    states) and replaying, a few milliseconds per hundred frames. The array is allocated at
    full size but untouched pages cost no memory: T x C x H x W bytes once the curriculum has
    reached the game's start (Pong at 105x80 RGB: 0.6 GB; at the CPU size: 30-70 MB).
    """

    MARGIN = 2000  # frames built beyond what is asked, so that extensions are rare

    def __init__(self, demo_path: str | Path, env: EnvConfig, rom_path: str | None = None,
                 lo: int = 0) -> None:
        self.demo = demos.load(demo_path, rom_path=rom_path, check=False)
        self._renderer = DemoRenderer(self.demo, env, rom_path)
        self.env = env
        self.skip, self.stack = env.frame_skip, env.stack_num
        self.num_frames = t = self.demo.num_frames
        self.frames = np.zeros((t + 1, env.channels, env.img_height, env.img_width), np.uint8)
        self.lo = t + 1  # frames[lo:] are built
        self.build_s = 0.0
        self.ensure(lo)

    def ensure(self, lo: int) -> None:
        """Builds the frames from ``lo`` (at least) on, if they are not yet."""
        lo = max(int(lo), 0)
        if lo >= self.lo:
            return
        t0 = time.perf_counter()
        lo = max(lo - self.MARGIN, 0)
        self._build(lo, self.lo)
        self.lo = lo
        self.build_s += time.perf_counter() - t0

    def _build(self, a: int, b: int) -> None:
        """frames[a:b], in one replay from the latest checkpoint before them."""
        self._renderer.slots(np.arange(a, b), out=self.frames[a:b])

    def stacked(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B, stack * C, H, W]: the observations at demo frames ``frames`` int [B]."""
        frames = np.asarray(frames, np.int64)
        idx = np.minimum(stack_frames(frames, self.env), self.num_frames)  # [B, stack]
        if idx.size and idx.min() < self.lo:
            raise ValueError(f"demo frame {idx.min()} is not built (from {self.lo} on)")
        obs = self.frames[idx]  # [B, stack, C, H, W]
        return obs.reshape(len(frames), -1, *obs.shape[3:])

    def needed_from(self, starting_point: int, length: int) -> int:
        """The first frame a warm-up of ``length`` steps before ``starting_point`` reads."""
        return starting_point - self.skip * (length + self.stack - 1)

    def history(self, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(obs uint8 [B, L, stack * C, H, W], mask bool [B, L]): the ``length`` agent steps
        before each start frame, oldest first (frames s - skip * L ... s - skip); steps before
        the game's start are masked out."""
        starts = np.asarray(starts, np.int64)
        steps = self.skip * np.arange(length, 0, -1)
        frames = starts[:, None] - steps[None, :]  # [B, L]
        mask = frames >= 0
        obs = self.stacked(np.maximum(frames, 0).reshape(-1))
        return obs.reshape(len(starts), length, *obs.shape[1:]), mask
