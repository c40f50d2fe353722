"""Recurrent-state warm-up from stored demo observations, instead of emulator steps.

The reference played up to 128 demo steps through the environment before each episode so that
the policy's recurrent state was warm at the start point. Here the trainer restores the emulator
directly at the start point and computes that state by scanning the network over the demo's
stored observations: one batched torso pass plus a ``scan`` of the core, on the accelerator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jax_reset.networks import ActorCritic

Carry = Any
Params = Any


def warm_up(network: ActorCritic, params: Params, obs: jax.Array, mask: jax.Array) -> Carry:
    """Recurrent state after the valid observations of each row (pure).

    Args:
      obs: ``[B, L, *obs_shape]`` uint8, L <= 128 demo observations per environment, in order,
        in the same layout and preprocessing as the pool's observations.
      mask: ``[B, L]`` bool, which steps are real (variable lengths, left or right padded).

    Returns:
      carry, leaves ``[B, core_size]``: the state starts at zero at the first valid step and
      each valid step advances it; invalid steps leave it unchanged (all-invalid rows: zeros).
      Pass it as ``start_carry`` to the acting function at the episode's first step (and record
      it in ``Transition.start_carry``): it is the state *entering* the episode's first step.
      ``()`` for the feed-forward network.
    """
    return network.apply({"params": params}, obs, mask, method=ActorCritic.warm_up)


def make_warmup_fn(network: ActorCritic) -> Callable[[Params, jax.Array, jax.Array], Carry]:
    """Jitted ``warmup(params, obs [B, L, ...], mask [B, L]) -> carry`` (one compile per shape)."""
    return jax.jit(lambda params, obs, mask: warm_up(network, params, obs, mask))
