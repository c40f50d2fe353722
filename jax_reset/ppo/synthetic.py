"""Tiny configurations and random batches, for tests, benchmarks and smoke runs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from jax_reset.networks import NetworkConfig, init_carry
from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.data import TrainBatch, Transition
from jax_reset.ppo.imitation import DemoBatch

#: Small channel-first frames that still fit the reference's 8/4, 4/2, 3/1 kernels (-> 1x1).
TINY_OBS_SHAPE = (6, 42, 40)


def tiny_network_config(core: str = "lstm", **overrides) -> NetworkConfig:
    """The reference's geometry with 8/16/16 channels and 32 units: compiles in seconds on CPU."""
    kwargs = dict(conv_channels=(8, 16, 16), dense_size=32, core=core, core_size=32)
    kwargs.update(overrides)
    return NetworkConfig(**kwargs)


def tiny_ppo_config(**overrides) -> PPOConfig:
    """Short sequences (4 burn-in + 8 rollout steps), 2 epochs x 2 minibatches."""
    kwargs = dict(rollout_steps=8, burn_in_steps=4, epochs=2, minibatches=2)
    kwargs.update(overrides)
    return PPOConfig(**kwargs)


def random_transition(
    rng: np.random.Generator,
    steps: int,
    num_envs: int,
    obs_shape: Sequence[int],
    num_actions: int,
    p_end: float = 0.05,
    p_cut: float = 0.03,
    p_invalid: float = 0.1,
    start_carry: object | None = None,
) -> Transition:
    """Random but self-consistent steps ``[steps, num_envs]``: episode_start follows done/cut.

    ``start_carry``: a ``[B, H]`` carry pytree; when given, ``start_carry`` is filled with random
    states (as if warmed up from a demo) at every step.
    """
    shape = (steps, num_envs)
    done = rng.random(shape) < p_end
    cut = (rng.random(shape) < p_cut) & ~done
    ended = done | cut
    episode_start = np.zeros(shape, bool)
    episode_start[0] = rng.random(num_envs) < 0.5  # some sequences continue an episode
    episode_start[1:] = ended[:-1]
    start = None
    if start_carry is not None:
        start = jax.tree.map(
            lambda c: rng.normal(size=(steps, *c.shape)).astype(np.float32) * 0.5, start_carry
        )
    return Transition(
        obs=rng.integers(0, 256, (*shape, *obs_shape), dtype=np.uint8),
        episode_start=episode_start,
        entropy_boost=rng.random(shape) < 0.3,
        action=rng.integers(0, num_actions, shape).astype(np.int32),
        logp=np.log(rng.uniform(0.05, 1.0, shape)).astype(np.float32),
        value=rng.normal(size=shape).astype(np.float32),
        reward=rng.normal(size=shape).astype(np.float32),
        done=done,
        cut=cut,
        valid=rng.random(shape) >= p_invalid,
        start_carry=start,
    )


def random_batch(
    rng: np.random.Generator,
    network_config: NetworkConfig,
    ppo_config: PPOConfig,
    num_envs: int,
    obs_shape: Sequence[int],
    num_actions: int,
    with_start_carry: bool = False,
) -> TrainBatch:
    """A random ``TrainBatch`` of ``burn_in + rollout`` steps with a random entering state."""
    carry = jax.tree.map(
        lambda c: rng.normal(size=c.shape).astype(np.float32) * 0.5,
        init_carry(network_config, num_envs),
    )
    data = random_transition(
        rng,
        ppo_config.sequence_steps,
        num_envs,
        obs_shape,
        num_actions,
        start_carry=carry if with_start_carry else None,
    )
    return TrainBatch(
        data=data, carry=carry, bootstrap_value=rng.normal(size=num_envs).astype(np.float32)
    )


def random_demo_batch(
    rng: np.random.Generator,
    network_config: NetworkConfig,
    ppo_config: PPOConfig,
    windows: int,
    obs_shape: Sequence[int],
    num_actions: int,
) -> DemoBatch:
    """Random windows of a demo (``jax_reset.ppo.imitation``): ``burn_in + rollout`` steps,
    each window's state reset at a random step of its burn-in, the rollout steps imitated
    except a few at the end (past the demo's end)."""
    s, k = ppo_config.sequence_steps, ppo_config.burn_in_steps
    episode_start = np.zeros((s, windows), bool)
    episode_start[rng.integers(0, max(k, 1), windows), np.arange(windows)] = True
    mask = np.zeros((s, windows), bool)
    mask[k:] = True
    mask[s - 1, 0] = False  # window 0 runs past the demo's end
    return DemoBatch(
        obs=rng.integers(0, 256, (s, windows, *obs_shape), dtype=np.uint8),
        episode_start=episode_start,
        action=rng.integers(0, num_actions, (s, windows)).astype(np.int32),
        mask=mask,
        carry=jax.tree.map(lambda c: np.zeros(c.shape, np.float32),
                           init_carry(network_config, windows)),
    )
