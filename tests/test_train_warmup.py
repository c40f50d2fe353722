"""The trainer's stored demo observations equal the pool's restored frame stacks, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from jax_reset.config import load
from jax_reset.envs import AtariPool, DemoResetConfig
from jax_reset.envs.demo_history import DemoHistory

DEMO = "demos/PrivateEye.npz"  # the shortest demo: a full build takes about two seconds


@pytest.fixture(scope="module")
def env():
    return load("configs/smoke.toml", ["env.stack_num=4"]).env


def test_stacks_equal_the_pools_restores(env) -> None:
    full = DemoHistory(DEMO, env, lo=0)
    t = full.num_frames
    rng = np.random.default_rng(0)
    # Every region: before the first checkpoint (frame 100), just after it, where a stack
    # reaches back across it (101-199), and anywhere after.
    frames = np.concatenate([[0, 1, 3, 99, 100, 101, 104, 113, 150, 199, 200, t - 1, t],
                             rng.integers(101, 200, size=4), rng.integers(200, t + 1, size=8)])
    # start_noop_max=0: a start at frame 0 is the game's reset itself, the demo's frame 0.
    demo = DemoResetConfig(DEMO, start_noop_max=0)
    with AtariPool(None, len(frames), 2, config=env, demo=demo) as pool:
        restored = pool.restore(None, frames).obs
    mine = full.stacked(frames)
    for f, a, b in zip(frames, restored, mine, strict=True):
        assert np.array_equal(a, b), f"frame {f}"

    # Built from the end and extended backwards: the same frames.
    part = DemoHistory(DEMO, env, lo=t - 50)
    assert part.lo == t - 50 - DemoHistory.MARGIN
    with pytest.raises(ValueError, match="not built"):
        part.stacked(np.array([10]))
    part.ensure(3000)
    assert part.lo == 1000
    assert np.array_equal(part.frames[part.lo:], full.frames[part.lo:])
    assert not part.frames[:part.lo].any()

    obs, mask = full.history(np.array([8, 5000]), 4)
    assert obs.shape == (2, 4, *env.obs_shape)
    assert mask.tolist() == [[False, False, True, True], [True] * 4]
    assert np.array_equal(obs[1], full.stacked(np.array([4984, 4988, 4992, 4996])))
