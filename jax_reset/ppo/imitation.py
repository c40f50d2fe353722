"""Imitation of the demo's actions: a behaviour-cloning term beside the PPO loss.

The curriculum only tells the agent *where* to start; it still has to find the demo's
manoeuvres by trial and error, and on Montezuma's Revenge that is most of the cost (the
curriculum's plateaus, ``docs/results.md``). With ``ppo.imitation_coef > 0`` every update also
fits the policy to the demo's own actions on windows of the demo that start where the
environments start: ``imitation_coef * mean(-log pi(demo action | demo observations))``, the
demo term of self-imitation learning that Go-Explore's robustification of this method added
(there with coefficient 0.1). Off (0) by default: the 2018 method has no such term.

A window is a training sequence of the demo, laid out like an environment's
(``DemoBatch``, S = burn_in_steps + rollout_steps agent steps, ``frame_skip`` frames apart):
the burn-in steps rebuild the recurrent state from zeros on the demo's observations (as the
warm-up does before a demo start) and the rollout steps are the ones imitated. Pure functions;
the host builds the windows (``jax_reset.training.demo_windows``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jax_reset.ppo.data import DATA_AXIS, place_global, place_sharded
from jax_reset.ppo.losses import ApplyFn, Params, _psum, categorical_log_prob, masked_mean

Carry = Any


@flax.struct.dataclass
class DemoBatch:
    """Windows of the demo for the imitation term, sharded like the environments (axis 1 of
    the per-step leaves, axis 0 of ``carry``).

    obs:           uint8 ``[S, M, *obs_shape]`` the stacked observation of an agent following
                   the demo at the step's frame (byte for byte the pool's).
    episode_start: bool ``[S, M]`` the window's first step inside the demo (the state resets
                   there to zeros; steps before it are padding before the game's start).
    action:        int32 ``[S, M]`` the demo's action at the step's first frame (an index into
                   the game's action set, as the policy's actions are).
    mask:          bool ``[S, M]`` the step is imitated: a rollout step (not burn-in) inside
                   the demo (its frame before the demo's end).
    carry:         the recurrent state entering step 0, leaves ``[M, core_size]`` (zeros).
    """

    obs: jax.Array
    episode_start: jax.Array
    action: jax.Array
    mask: jax.Array
    carry: Carry


def imitation_loss(
    params: Params, apply_fn: ApplyFn, demo: DemoBatch, axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The demo's actions' negative log-likelihood under the policy, over the masked steps.

    Args:
      params: network parameters.
      apply_fn: ``jax_reset.ppo.losses.ApplyFn``.
      demo: ``DemoBatch`` with leaves ``[S, m, ...]`` (a minibatch of windows).
      axis_name: data-parallel axis inside ``shard_map``, else None: the mean is then over the
        masked steps of every device (this device's share, as ``ppo_loss``'s terms).

    Returns:
      ``(loss, metrics)``: loss = mean over masked steps of -log pi(action | obs) with the
      policy's own logits (no entropy boost); metrics (summed over devices):
      ``imitation_loss`` and ``imitation_accuracy`` (the share of masked steps whose most
      likely action is the demo's).
    """
    never = jnp.zeros_like(demo.episode_start)
    _, logits, _ = apply_fn(params, demo.obs, demo.episode_start, never, demo.carry, None)
    nll = -categorical_log_prob(logits, demo.action)
    loss = masked_mean(nll, demo.mask, axis_name)
    stop = jax.lax.stop_gradient
    hit = (jnp.argmax(stop(logits), axis=-1) == demo.action).astype(jnp.float32)
    metrics = {"imitation_loss": loss, "imitation_accuracy": masked_mean(hit, demo.mask,
                                                                          axis_name)}
    return loss, jax.tree.map(lambda x: _psum(stop(x), axis_name), metrics)


#: How a ``DemoBatch`` is split over the mesh (a prefix of the pytree): windows along axis 1 of
#: the per-step leaves and axis 0 of the carry, as the environments of a ``TrainBatch``.
DEMO_SPEC = DemoBatch(obs=P(None, DATA_AXIS), episode_start=P(None, DATA_AXIS),
                      action=P(None, DATA_AXIS), mask=P(None, DATA_AXIS), carry=P(DATA_AXIS))


def _specs(demo: DemoBatch) -> DemoBatch:
    """``DEMO_SPEC`` down to every leaf (the carry's structure depends on the core)."""
    return DemoBatch(obs=DEMO_SPEC.obs, episode_start=DEMO_SPEC.episode_start,
                     action=DEMO_SPEC.action, mask=DEMO_SPEC.mask,
                     carry=jax.tree.map(lambda _: DEMO_SPEC.carry, demo.carry))


def shard_demo(demo: DemoBatch, mesh: Mesh) -> DemoBatch:
    """Place host or device windows on ``mesh``, split over its devices (one process)."""
    return place_sharded(demo, _specs(demo), mesh)


def global_demo(local: DemoBatch, mesh: Mesh, windows: int) -> DemoBatch:
    """The multi-process ``shard_demo``: each process passes its block of the job's
    ``windows`` windows (``windows / process_count``, in process order) and every process gets
    the same global ``DemoBatch``. Every process must call it."""
    return place_global(local, _specs(local), mesh, windows)
