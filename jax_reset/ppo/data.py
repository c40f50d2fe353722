"""The learner's data layout: what the trainer records per step, and how a training batch is built.

Per-step layout (time-major; ``[T, B]`` = steps x environments). For environment b at step t:

  obs[t]            uint8 ``[*obs_shape]``  the observation the policy acted on.
  episode_start[t]  bool  obs[t] is the first observation of an episode: the recurrent state is
                    reset (to ``start_carry[t]``, else zeros) *before* obs[t] is processed.
  start_carry[t]    optional, carry leaves ``[core_size]``: the state to reset to at an episode
                    start (the demo warm-up state when the episode starts from a demo state).
                    Read only where episode_start[t]. ``None`` for the whole batch = zeros.
  entropy_boost[t]  bool  the logits were halved at this step (frame below curriculum start+100).
  action[t]         int32 the action taken on obs[t].
  logp[t]           float32 behaviour log-probability of action[t] (under the halved logits where
                    entropy_boost[t]): exactly what the acting function returned.
  value[t]          float32 the value of obs[t] the acting function returned.
  reward[t]         float32 the (clipped) reward received for action[t].
  done[t]           bool  the episode truly ended after action[t] (life lost, lagging the demo,
                    game over): no bootstrapping from step t+1.
  cut[t]            bool  the episode was cut after action[t] (extra-frames budget after reaching
                    the demo's score): not a real terminal. The advantage of step t is 0 and
                    nothing bootstraps across it, so no value target is learned across it.
  valid[t]          bool  step t is a real transition of the agent. Invalid steps (a reset-only
                    step of a pool with autoreset "next_step", padding; the trainer's pool
                    resets inside the ending step: no reset-only steps) are excluded from every
                    loss and from the advantage statistics. They do *not* break the GAE recursion
                    by themselves (an end is expressed by done/cut).

A training sequence is ``S = burn_in_steps + rollout_steps`` steps (64 + 128): the last
``burn_in_steps`` steps of the previous rollout, then the new rollout, plus the recurrent state
that entered its first step. Use :func:`initial_burn_in` before the first update and
:func:`assemble_batch` at every update; both are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

Carry = Any

#: Name of the mesh axis the environments are sharded over.
DATA_AXIS = "data"


@flax.struct.dataclass
class Transition:
    """Per-step rollout data, every leaf ``[T, B, ...]`` (see the module docstring)."""

    obs: jax.Array  # [T, B, *obs_shape] uint8
    episode_start: jax.Array  # [T, B] bool
    entropy_boost: jax.Array  # [T, B] bool
    action: jax.Array  # [T, B] int32
    logp: jax.Array  # [T, B] float32
    value: jax.Array  # [T, B] float32
    reward: jax.Array  # [T, B] float32
    done: jax.Array  # [T, B] bool
    cut: jax.Array  # [T, B] bool
    valid: jax.Array  # [T, B] bool
    start_carry: Carry | None = None  # leaves [T, B, core_size], or None (= zeros)


@flax.struct.dataclass
class BurnIn:
    """What one update hands to the next: the rollout's tail and the state entering it.

    data: ``Transition`` with leaves ``[K, B, ...]``, K = burn_in_steps.
    carry: recurrent state entering data's first step, leaves ``[B, core_size]``.
    """

    data: Transition
    carry: Carry


@flax.struct.dataclass
class TrainBatch:
    """One update's input, sharded over environments (axis 1 of ``data``, axis 0 otherwise).

    data: ``Transition`` with leaves ``[S, B, ...]``, S = burn_in_steps + rollout_steps; the
      first burn_in_steps steps are only for rebuilding the recurrent state.
    carry: recurrent state entering ``data``'s first step (stored while acting, before the reset
      of that step), leaves ``[B, core_size]``.
    bootstrap_value: ``[B]`` value of the observation after the rollout's last step, as the
      acting function returned it (act on that observation once and use the result both as this
      bootstrap and as step 0 of the next rollout). Ignored where the last step is done or cut.
    """

    data: Transition
    carry: Carry
    bootstrap_value: jax.Array


def initial_burn_in(example: Transition, carry: Carry, burn_in_steps: int) -> BurnIn:
    """Padding burn-in for the very first update: ``burn_in_steps`` invalid all-zero steps.

    Args:
      example: any ``Transition`` with leaves ``[T, B, ...]`` (only shapes/dtypes are used).
      carry: the acting state entering the first rollout (typically ``init_carry``).
      burn_in_steps: K.

    The padding is exact only because every environment *starts* an episode at step 0 of the
    first rollout (``episode_start[0]`` is True everywhere), which resets the state the padding
    produced. The padding steps are invalid, so they never enter a loss.
    """

    def pad(x: jax.Array) -> jax.Array:
        xp = np if isinstance(x, np.ndarray) else jnp
        return xp.zeros((burn_in_steps, *x.shape[1:]), x.dtype)

    return BurnIn(data=jax.tree.map(pad, example), carry=carry)


def _concat(a: jax.Array, b: jax.Array) -> jax.Array:
    # Host buffers stay on the host (one host->devices transfer later, by shard_batch, each
    # device receiving only its environments); device arrays are concatenated on device.
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.concatenate([a, b], axis=0)
    return jnp.concatenate([a, b], axis=0)


def assemble_batch(
    burn_in: BurnIn,
    rollout: Transition,
    bootstrap_value: jax.Array,
    tail_carry: Carry,
) -> tuple[TrainBatch, BurnIn]:
    """Concatenate the carried-over burn-in with a new rollout; return the next burn-in.

    Args:
      burn_in: from the previous update (or :func:`initial_burn_in`), leaves ``[K, B, ...]``.
      rollout: the new rollout, leaves ``[T, B, ...]`` with T = rollout_steps >= K.
      bootstrap_value: ``[B]``, see :class:`TrainBatch`.
      tail_carry: the acting state entering step ``T - K`` of ``rollout`` (record the state
        passed *into* the acting function at that step). With K = 0 it is the state after the
        rollout's last step.

    NumPy inputs give NumPy outputs (no device transfer here); JAX arrays stay JAX arrays.

    Returns:
      ``(batch, next_burn_in)``: batch leaves ``[K + T, B, ...]`` with ``batch.carry =
      burn_in.carry``; ``next_burn_in`` = the last K steps of ``rollout`` and ``tail_carry``.
    """
    k = jax.tree.leaves(burn_in.data.obs)[0].shape[0]
    t = rollout.obs.shape[0]
    if k > t:
        raise ValueError(f"burn-in ({k} steps) longer than the rollout ({t} steps)")
    if (burn_in.data.start_carry is None) != (rollout.start_carry is None):
        raise ValueError("start_carry must be given for both the burn-in and the rollout, or none")
    data = jax.tree.map(_concat, burn_in.data, rollout)
    batch = TrainBatch(data=data, carry=burn_in.carry, bootstrap_value=bootstrap_value)
    # A copy, not a view: the trainer may overwrite its NumPy rollout buffer in place.
    tail = jax.tree.map(lambda x: x[t - k :].copy(), rollout)
    return batch, BurnIn(data=tail, carry=tail_carry)


def batch_partition_spec(batch: TrainBatch) -> TrainBatch:
    """PartitionSpecs of a ``TrainBatch``: environments (axis 1 of data, 0 else) over DATA_AXIS."""
    return TrainBatch(
        data=jax.tree.map(lambda _: P(None, DATA_AXIS), batch.data),
        carry=jax.tree.map(lambda _: P(DATA_AXIS), batch.carry),
        bootstrap_value=P(DATA_AXIS),
    )


def place_sharded(tree: Any, specs: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on ``mesh`` by its PartitionSpec in ``specs`` (one process)."""
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, specs)


def place_global(local: Any, specs: Any, mesh: Mesh, rows: int) -> Any:
    """The multi-process ``place_sharded``: each process passes its block of the job's ``rows``
    rows (environments or windows: axis 1 of leaves split as ``P(None, DATA_AXIS)``, else axis
    0) and every process gets the same global arrays. Every process must call it."""
    def place(x: Any, spec: P) -> jax.Array:
        axis = 1 if spec == P(None, DATA_AXIS) else 0
        shape = (*x.shape[:axis], rows, *x.shape[axis + 1 :])
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), np.asarray(x),
                                                      shape)

    return jax.tree.map(place, local, specs)


def shard_batch(batch: TrainBatch, mesh: Mesh) -> TrainBatch:
    """Place a host- or device-resident batch on ``mesh``, environments split over devices.

    Single-process only: with several processes use :func:`global_batch`.
    """
    return place_sharded(batch, batch_partition_spec(batch), mesh)


def global_batch(local: TrainBatch, mesh: Mesh, num_envs: int) -> TrainBatch:
    """The multi-process ``shard_batch``: each process passes its own environments' batch
    (host arrays, ``num_envs / process_count`` environments, the block of the global batch that
    its devices hold: ``jax_reset.parallel.mesh.process_env_slice``) and every process gets the same
    global ``TrainBatch`` of ``num_envs`` environments, sharded as ``shard_batch`` places it.
    Every process must call it (with the same shapes)."""
    return place_global(local, batch_partition_spec(local), mesh, num_envs)


def zeros_transition(
    steps: int, num_envs: int, obs_shape: Sequence[int], carry: Carry | None = None
) -> Transition:
    """An all-zero ``Transition`` ``[steps, num_envs, ...]`` (NumPy), e.g. for a rollout buffer.

    ``carry``: a ``[B, core_size]`` state pytree to size ``start_carry`` after; None = no field.
    """
    z = lambda dt: np.zeros((steps, num_envs), dt)  # noqa: E731
    start = None
    if carry is not None:
        start = jax.tree.map(lambda c: np.zeros((steps, *c.shape), np.float32), carry)
    return Transition(
        obs=np.zeros((steps, num_envs, *obs_shape), np.uint8),
        episode_start=z(bool),
        entropy_boost=z(bool),
        action=z(np.int32),
        logp=z(np.float32),
        value=z(np.float32),
        reward=z(np.float32),
        done=z(bool),
        cut=z(bool),
        valid=z(bool),
        start_carry=start,
    )
