"""A restorable batched Atari pool: EnvPool-compatible preprocessing over ale-py worker
processes, plus restores to demo states and the demo curriculum's per-frame episode rules.

    from jax_reset.envs import AtariPool, EnvConfig, DemoResetConfig
    with AtariPool("Pong", num_envs=16, num_workers=2) as pool:
        out = pool.reset()                         # PoolStep, out.obs uint8 [16, 12, 105, 80]
        out = pool.step(np.zeros(16, np.int32))    # actions: minimal-action-set indices

Demo mode: `AtariPool(None, n, w, demo=DemoResetConfig("demos/Pong.npz"))`, then
`set_starting_points`, `reset`/`step` (auto-resets restore the demo) or `restore(ids, frames)`.
`demo_observations(demo, config, frames)` gives the observations such restores return, without
a pool (the same code; the trainer's recurrent warm-up reads them).
"""

from jax_reset.envs.config import DemoResetConfig, EnvConfig, rom_id
from jax_reset.envs.contract import PoolStep
from jax_reset.envs.demo_obs import DemoRenderer, demo_observations
from jax_reset.envs.pool import AtariPool
from jax_reset.envs.procs import PoolError
from jax_reset.envs.rules import EndReason

__all__ = [
    "AtariPool",
    "DemoRenderer",
    "DemoResetConfig",
    "EndReason",
    "EnvConfig",
    "PoolError",
    "PoolStep",
    "demo_observations",
    "rom_id",
]
