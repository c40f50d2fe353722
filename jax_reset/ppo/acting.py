"""The policy step used while acting: one observation per environment in, an action out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jax_reset.networks import ActorCritic
from jax_reset.ppo.losses import categorical_log_prob

Carry = Any
Params = Any


@flax.struct.dataclass
class ActOutput:
    """What the acting function returns for a batch of B environments."""

    action: jax.Array  # [B] int32, sampled from the (possibly halved / doubled) logits
    logp: jax.Array  # [B] float32, log-probability of `action`: record it as Transition.logp
    value: jax.Array  # [B] float32: record it as Transition.value (or use as bootstrap)
    carry: Carry  # recurrent state after this step, leaves [B, core_size]: pass to the next call


def policy_step(
    network: ActorCritic,
    params: Params,
    obs: jax.Array,
    episode_start: jax.Array,
    entropy_boost: jax.Array,
    carry: Carry,
    rng: jax.Array,
    start_carry: Carry | None = None,
    evaluate: bool = False,
    env_ids: jax.Array | None = None,
) -> ActOutput:
    """One acting step (pure; jit it or use :func:`make_act_fn`).

    Args:
      obs: ``[B, *obs_shape]`` uint8, the current observations (channel-first as the pool emits).
      episode_start: ``[B]`` bool, obs is the first observation of an episode (reset first).
      entropy_boost: ``[B]`` bool, halve the logits (frame index below curriculum start + 100).
      carry: state returned by the previous call (``init_carry`` at the very start), entering
        this step *before* the reset; record it at step T - burn_in_steps for ``assemble_batch``.
      rng: PRNG key for sampling.
      start_carry: optional ``[B, core_size]`` state to reset to where episode_start (the demo
        warm-up state); None = zeros. Record it as ``Transition.start_carry``.
      evaluate: double the logits (evaluation temperature).
      env_ids: optional ``[B]`` int32, the environments' indices: each samples with its own key
        ``fold_in(rng, env_id)``, so an environment's action does not depend on which others
        are inferred with it (the actor infers in groups); None = one key for the batch.

    The network sees exactly what the learner will see for this step (same flags, same state
    convention), so the learner's first-epoch log-probabilities reproduce ``logp``.
    """
    add_t = lambda x: None if x is None else jax.tree.map(lambda a: a[None], x)  # noqa: E731
    new_carry, logits, value = network.apply(
        {"params": params},
        obs[None],
        episode_start[None],
        entropy_boost[None],
        carry,
        add_t(start_carry),
        evaluate,
    )
    logits, value = logits[0], value[0]
    if env_ids is None:
        action = jax.random.categorical(rng, logits)
    else:
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, env_ids)
        action = jax.vmap(jax.random.categorical)(keys, logits)
    action = action.astype(jnp.int32)
    return ActOutput(
        action=action,
        logp=categorical_log_prob(logits, action),
        value=value,
        carry=new_carry,
    )


def make_act_fn(network: ActorCritic, evaluate: bool = False) -> Callable[..., ActOutput]:
    """Jitted ``act(params, obs, episode_start, entropy_boost, carry, rng, start_carry=None,
    env_ids=None)``.

    See :func:`policy_step` for shapes. Compiles once per batch size (and once more if
    ``start_carry`` switches between None and an array). Nothing is donated: the trainer may
    keep a reference to ``carry`` (the tail state for ``assemble_batch``).
    """

    def act(params, obs, episode_start, entropy_boost, carry, rng, start_carry=None,
            env_ids=None):
        return policy_step(
            network, params, obs, episode_start, entropy_boost, carry, rng, start_carry, evaluate,
            env_ids,
        )

    return jax.jit(act)
