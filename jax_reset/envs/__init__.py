"""A restorable batched Atari pool: EnvPool-compatible preprocessing over ale-py worker
processes, plus restores to demo states and the demo curriculum's per-frame episode rules.

    from jax_reset.envs import AtariPool, EnvConfig, DemoResetConfig
    with AtariPool("Pong", num_envs=16, num_workers=2) as pool:
        out = pool.reset()                         # PoolStep, out.obs uint8 [16, 12, 105, 80]
        out = pool.step(np.zeros(16, np.int32))    # actions: minimal-action-set indices

Demo mode: `AtariPool(None, n, w, demo=DemoResetConfig("demos/Pong.npz"))`, then
`set_starting_points`, `reset`/`step` (auto-resets restore the demo) or `restore(ids, frames)`.
"""

from jax_reset.envs.config import DemoResetConfig, EnvConfig, rom_id
from jax_reset.envs.pool import AtariPool, PoolError, PoolStep
from jax_reset.envs.rules import EndReason

__all__ = [
    "AtariPool",
    "DemoResetConfig",
    "EndReason",
    "EnvConfig",
    "PoolError",
    "PoolStep",
    "rom_id",
]
