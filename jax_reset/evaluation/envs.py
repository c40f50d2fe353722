"""The evaluation environments: the four protocols over EnvPool with the training
preprocessing, and what a policy must offer to play them (``evaluate`` and ``video`` use them).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from jax_reset.envs.config import EnvConfig
from jax_reset.evaluation.errors import EvalError
from jax_reset.evaluation.isolated import ChildEnvPool

PROTOCOLS = ("plain", "noop", "sticky", "epsilon")
STICKY_PROBABILITY = 0.25
NOOP_MAX = 30
EPSILON = 0.01


class BatchPolicy(Protocol):
    """Acts for a batch of environments and keeps their recurrent state between calls."""

    def reset(self, num_envs: int, seed: int) -> None: ...

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        """obs: uint8 [B, C, H, W]; episode_start: bool [B] -> actions int32 [B]."""
        ...


def protocol_env_config(env: EnvConfig, protocol: str) -> EnvConfig:
    """The training preprocessing, turned into a full-game evaluation environment."""
    if protocol not in PROTOCOLS:
        raise EvalError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return dataclasses.replace(
        env,
        reward_clip=False,  # scores are reported unclipped
        episodic_life=False,  # a full game, every life
        noop_max=NOOP_MAX if protocol == "noop" else 1,
        repeat_action_probability=STICKY_PROBABILITY if protocol == "sticky" else 0.0,
    )


def make_envpool(game: str, env: EnvConfig, num_envs: int, seed: int,
                 num_threads: int = 0) -> ChildEnvPool:
    """An EnvPool Atari env (gymnasium API) with the preprocessing of ``env``, in a child
    process: an emulator crash there is an ``EmulatorCrash``, not this process's end."""
    return ChildEnvPool(f"{game}-v5", dict(
        env_type="gymnasium", num_envs=num_envs, seed=seed,
        num_threads=num_threads or min(num_envs, 8), **env.envpool_kwargs(game)))


def play_mean_observation(game: str, env: EnvConfig, *, num_envs: int = 8,
                          agent_steps: int = 250, seed: int = 0) -> np.ndarray:
    """float32 [stack * C, H, W] in [0, 1]: the mean observation of uniformly random play from
    the game's start, per pixel (``num_envs`` x ``agent_steps`` frames, 2,000 by default as for
    the demo's mean; EnvPool with the training preprocessing and 1 to 30 no-op frames at each
    start), the newest frame of each observation, the same image in every stacked frame.

    The network's input offset with ``network.input_norm = "play_mean"``: the counterpart of
    the demo's mean observation (``jax_reset.envs.demo_obs.demo_mean_observation``) for a run
    that uses no demo (the no-demo baseline): the static background cancels all the same.
    """
    pool = make_envpool(game, protocol_env_config(env, "noop"), num_envs, seed)
    rng = np.random.default_rng(seed)
    channels = env.obs_shape[0] // env.stack_num
    try:
        obs, _ = pool.reset()
        total = np.zeros(obs.shape[-3:], np.float64)[-channels:]
        for _ in range(agent_steps):
            actions = rng.integers(0, pool.num_actions, num_envs).astype(np.int32)
            obs, *_ = pool.step(actions)
            total += obs[:, -channels:].sum(axis=0, dtype=np.float64)
    finally:
        pool.close()
    mean = total / (num_envs * agent_steps * 255.0)
    return np.tile(mean, (env.stack_num, 1, 1)).astype(np.float32)
