"""The PPO loss of the reference: clipped ratio, clipped value, entropy; means over valid steps.

Pure functions. ``axis_name`` names the data-parallel mesh axis when called inside
``shard_map``; every mean is then over the valid steps of *all* devices: the numerator is this
device's sum and the denominator the global count (a ``psum`` of counts, which do not depend on
the parameters), so summing the devices' gradients (``psum``) gives exactly the gradient of the
global mean, whatever the number of devices. Outside ``shard_map`` pass ``axis_name=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jax_reset.networks.model import INPUT_MEAN
from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.data import TrainBatch

Params = Any
# apply(params, obs, episode_start, entropy_boost, carry, start_carry) -> (carry, logits, value)
ApplyFn = Callable[..., tuple[Any, jax.Array, jax.Array]]


def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def masked_mean(x: jax.Array, mask: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Mean of ``x`` over the True entries of ``mask`` (same shape), across devices.

    Returns this device's sum over the global count (see the module docstring); 0 when no entry
    is valid anywhere. Inside ``shard_map`` the value is per-device; ``psum`` it for the mean.
    """
    mask = mask.astype(jnp.float32)
    count = _psum(mask.sum(), axis_name)
    return (x * mask).sum() / jnp.maximum(count, 1.0)


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """``[..., A]`` logits and ``[...]`` int actions -> ``[...]`` log-probabilities."""
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_all, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """``[..., A]`` logits -> ``[...]`` entropy in nats."""
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -(jnp.exp(logp_all) * logp_all).sum(-1)


def l2_penalty(params: Params) -> jax.Array:
    """0.5 * sum of squares of every trained parameter (the reference's L2; scaled by l2_coef).

    The torso's constant input offset (``network.input_norm``) is not trained and not counted.
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return 0.5 * sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for path, p in leaves
                     if getattr(path[-1], "key", None) != INPUT_MEAN)


def l2_gradient(grads: Params, params: Params, l2_coef: float) -> Params:
    """``grads`` plus the gradient of ``l2_coef * l2_penalty(params)``: ``l2_coef * p`` on every
    trained parameter, nothing on the torso's constant input offset (whose gradient stays 0,
    so Adam leaves it where it was set)."""
    def add(path: Any, g: jax.Array, p: jax.Array) -> jax.Array:
        return g if getattr(path[-1], "key", None) == INPUT_MEAN else g + l2_coef * p

    return jax.tree_util.tree_map_with_path(add, grads, params)


def sequence_forward(
    apply_fn: ApplyFn, params: Params, batch: TrainBatch, burn_in_steps: int
) -> tuple[jax.Array, jax.Array]:
    """Run the network over whole sequences and drop the burn-in.

    The recurrent state is rebuilt from ``batch.carry`` through the burn-in steps under
    ``params`` (one ``scan`` over all S steps: the burn-in's outputs are simply discarded;
    gradients flow through the state they produce, as in the reference's single graph).

    Args:
      batch: ``TrainBatch`` with data leaves ``[S, b, ...]``.

    Returns:
      ``(logits [T, b, A], value [T, b])`` for the T = S - burn_in_steps rollout steps.
    """
    d = batch.data
    _, logits, value = apply_fn(
        params, d.obs, d.episode_start, d.entropy_boost, batch.carry, d.start_carry
    )
    return logits[burn_in_steps:], value[burn_in_steps:]


def ppo_loss(
    params: Params,
    apply_fn: ApplyFn,
    batch: TrainBatch,
    advantage: jax.Array,
    target: jax.Array,
    config: PPOConfig,
    axis_name: str | None = None,
    ent_coef: jax.Array | float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The PPO objective on one minibatch, without the L2 term (added by the update).

    Args:
      params: network parameters.
      apply_fn: see ``ApplyFn``.
      batch: minibatch, data leaves ``[S, b, ...]`` with S = burn_in_steps + rollout_steps.
      advantage: ``[T, b]`` normalised advantages of the rollout steps (0 at cut steps).
      target: ``[T, b]`` value targets (GAE advantage + behaviour value, not normalised).
      config: clip, vf_coef, burn_in_steps are read (and ent_coef when ``ent_coef`` is None).
      axis_name: data-parallel axis inside ``shard_map``, else None.
      ent_coef: the entropy coefficient as a runtime value (a float32 scalar array: changing
        it does not recompile a jitted caller); None: ``config.ent_coef``, compiled in.

    Returns:
      ``(loss, metrics)``: loss = pg - ent_coef * entropy + vf_coef * vf, each a mean over the
      valid rollout steps (this device's share of the global mean when ``axis_name`` is set);
      metrics (already summed over devices): policy_loss, value_loss, entropy, approx_kl
      (0.5 * mean (logp - old)^2), kl (mean old - logp), clip_fraction.

      pg  = max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)),  ratio = exp(logp - old)
      vf  = 0.5 * max((v - R)^2, (old_v + clip(v - old_v, -clip, clip) - R)^2)
    """
    k = config.burn_in_steps
    d = batch.data
    logits, value = sequence_forward(apply_fn, params, batch, k)
    action, old_logp, old_value = d.action[k:], d.logp[k:], d.value[k:]
    mask = d.valid[k:]

    logp = categorical_log_prob(logits, action)
    log_ratio = logp - old_logp
    ratio = jnp.exp(log_ratio)
    pg = jnp.maximum(
        -advantage * ratio,
        -advantage * jnp.clip(ratio, 1.0 - config.clip, 1.0 + config.clip),
    )
    value_clipped = old_value + jnp.clip(value - old_value, -config.clip, config.clip)
    vf = 0.5 * jnp.maximum(jnp.square(value - target), jnp.square(value_clipped - target))
    entropy = categorical_entropy(logits)

    pg_loss = masked_mean(pg, mask, axis_name)
    vf_loss = masked_mean(vf, mask, axis_name)
    ent = masked_mean(entropy, mask, axis_name)
    ent_coef = config.ent_coef if ent_coef is None else ent_coef
    loss = pg_loss - ent_coef * ent + config.vf_coef * vf_loss

    stop = jax.lax.stop_gradient
    metrics = {
        "policy_loss": pg_loss,
        "value_loss": vf_loss,
        "entropy": ent,
        "approx_kl": masked_mean(0.5 * jnp.square(stop(log_ratio)), mask, axis_name),
        "kl": masked_mean(-stop(log_ratio), mask, axis_name),
        "clip_fraction": masked_mean(
            (jnp.abs(stop(ratio) - 1.0) > config.clip).astype(jnp.float32), mask, axis_name
        ),
    }
    metrics = jax.tree.map(lambda m: _psum(stop(m), axis_name), metrics)
    return loss, metrics


def normalize_advantages(
    advantage: jax.Array,
    valid: jax.Array,
    cut: jax.Array,
    axis_name: str | None = None,
    eps: float = 1e-8,
) -> jax.Array:
    """Normalise ``[T, B]`` advantages over the global batch's valid, non-cut steps.

    Mean and standard deviation come from sums and counts ``psum``-ed over all devices, so the
    result is independent of how environments are split. Cut steps stay exactly 0: their 0 is
    "no signal about this action", and normalising would turn it into -mean/std.
    """
    mask = (valid & ~cut).astype(jnp.float32)
    count = jnp.maximum(_psum(mask.sum(), axis_name), 1.0)
    mean = _psum((advantage * mask).sum(), axis_name) / count
    var = _psum((jnp.square(advantage - mean) * mask).sum(), axis_name) / count
    return jnp.where(cut, 0.0, (advantage - mean) / (jnp.sqrt(var) + eps))
