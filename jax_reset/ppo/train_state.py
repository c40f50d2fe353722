"""The learner's state and its versions: ``TrainState``, the runtime ``Hyperparams``, Adam.

``TrainState`` is everything the update changes (parameters, Adam's moments and count, the
step counters, the PRNG key and the ``Hyperparams``: learning rate and entropy coefficient as
float32 scalars, so that ``with_hyperparams`` changes them without a recompile);
``create_train_state`` builds the network and a fresh state and ``make_optimizer`` the Adam the
update runs. ``TRAIN_STATE_VERSION`` numbers the layout: a checkpoint of version 1
(``TrainStateV1``, no hyperparameters) restores into ``v1_target`` and ``lift_train_state``
makes it today's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_reset.networks import ActorCritic, NetworkConfig, init_params, make_network
from jax_reset.ppo.config import PPOConfig

Params = Any

# The layout of ``TrainState``: 1 = params, opt_state, update_step, grad_step, rng (checkpoints
# written before the runtime hyperparameters); 2 = the same plus ``hyperparams``. Write it into
# the checkpoint's metadata; a checkpoint without it is version 1.
TRAIN_STATE_VERSION = 2


@flax.struct.dataclass
class Hyperparams:
    """The hyperparameters the update reads at run time: float32 scalars, replicated.

    Changing them (``with_hyperparams``) does not recompile the update.
    """

    learning_rate: jax.Array  # Adam's step size
    ent_coef: jax.Array  # entropy bonus coefficient of the loss


@flax.struct.dataclass
class TrainState:
    """Everything the update changes; replicated on every device. Checkpoint this whole."""

    params: Params  # network parameters, float32
    opt_state: optax.OptState  # Adam moments and count
    update_step: jax.Array  # int32 scalar, updates done (host keeps 64-bit env-step counters)
    grad_step: jax.Array  # int32 scalar, optimiser steps done (epochs x minibatches per update)
    rng: jax.Array  # PRNG key, consumed by the update (minibatch order)
    hyperparams: Hyperparams  # learning rate and entropy coefficient in force


@flax.struct.dataclass
class TrainStateV1:
    """``TrainState`` as checkpoints before ``TRAIN_STATE_VERSION`` 2 hold it (no hyperparams)."""

    params: Params
    opt_state: optax.OptState
    update_step: jax.Array
    grad_step: jax.Array
    rng: jax.Array


def _scalar_like(value: float, like: jax.Array | None) -> jax.Array:
    """A float32 scalar placed like ``like`` (same sharding, committed): a value put anywhere
    else, or weakly typed, would make the next update compile again."""
    x = np.asarray(value, np.float32)
    if like is None:
        return jnp.asarray(x)
    if like.is_fully_addressable:
        return jax.device_put(x, like.sharding)
    # Several processes: a global array from each process's (identical) host value.
    return jax.make_array_from_callback((), like.sharding, lambda index: x[index])


def make_hyperparams(learning_rate: float, ent_coef: float) -> Hyperparams:
    """Hyperparams of two float32 scalars (on the default device, uncommitted)."""
    _check_hyperparams(learning_rate, ent_coef)
    return Hyperparams(learning_rate=_scalar_like(learning_rate, None),
                       ent_coef=_scalar_like(ent_coef, None))


def _check_hyperparams(learning_rate: float | None, ent_coef: float | None) -> None:
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate}")
    if ent_coef is not None and not (math.isfinite(ent_coef) and ent_coef >= 0):
        raise ValueError(f"ent_coef must be a non-negative finite number, got {ent_coef}")


def with_hyperparams(
    state: TrainState, learning_rate: float | None = None, ent_coef: float | None = None
) -> TrainState:
    """``state`` with a new learning rate and/or entropy coefficient (None: keep the current).

    The new scalars take the old ones' placement, so the next update runs the program it
    already compiled. With several processes every process must pass the same values.
    """
    _check_hyperparams(learning_rate, ent_coef)
    hp = state.hyperparams
    return state.replace(hyperparams=Hyperparams(
        learning_rate=hp.learning_rate if learning_rate is None
        else _scalar_like(learning_rate, hp.learning_rate),
        ent_coef=hp.ent_coef if ent_coef is None else _scalar_like(ent_coef, hp.ent_coef),
    ))


def current_hyperparams(state: TrainState) -> dict[str, float]:
    """The values in force: ``{"learning_rate": ..., "ent_coef": ...}`` (logged as
    ``train/learning_rate`` and ``train/ent_coef``)."""
    hp = jax.device_get(state.hyperparams)
    return {"learning_rate": float(hp.learning_rate), "ent_coef": float(hp.ent_coef)}


def v1_target(state: TrainState) -> TrainStateV1:
    """The restore target for a version-1 checkpoint: ``state`` without its hyperparameters
    (arrays or ``jax.ShapeDtypeStruct`` leaves; restored arrays take their placement)."""
    return TrainStateV1(params=state.params, opt_state=state.opt_state,
                        update_step=state.update_step, grad_step=state.grad_step, rng=state.rng)


def lift_train_state(old: TrainStateV1, config: PPOConfig) -> TrainState:
    """A version-1 ``TrainState`` (restored with ``v1_target``) as today's.

    Nothing is lost: the optimiser state has the same layout (Adam's count and moments), and
    version 1 compiled ``config.learning_rate`` and ``config.ent_coef`` in, so these are the
    values it trained with (or the resumed run's own, if its config changed them). The new
    scalars are placed like ``old.update_step`` (replicated over the mesh when it is).
    """
    _check_hyperparams(config.learning_rate, config.ent_coef)
    like = old.update_step if isinstance(old.update_step, jax.Array) else None
    hyperparams = Hyperparams(learning_rate=_scalar_like(config.learning_rate, like),
                              ent_coef=_scalar_like(config.ent_coef, like))
    return TrainState(params=old.params, opt_state=old.opt_state, update_step=old.update_step,
                      grad_step=old.grad_step, rng=old.rng, hyperparams=hyperparams)


def make_optimizer(
    config: PPOConfig, learning_rate: float | jax.Array | None = None
) -> optax.GradientTransformation:
    """Adam(lr, eps) as the reference.

    ``learning_rate``: a float or a traced scalar (the update passes
    ``TrainState.hyperparams.learning_rate``); None: ``config.learning_rate``. The optimiser
    state does not depend on it (Adam's count and moments only), so one state serves any rate.

    The L2 term is added to the gradient by the update (not as weight decay): the reference put
    l2_coef * 0.5 * sum(p^2) into the loss, so its gradient passes through Adam's scaling. So is
    the optional global-norm clip (``clip_gradients``), outside the optimiser, so that the
    optimiser state's structure does not depend on it and a resume may switch it on or off.
    """
    lr = config.learning_rate if learning_rate is None else learning_rate
    return optax.adam(lr, eps=config.adam_eps)


def clip_gradients(config: PPOConfig, grads: Params, norm: jax.Array) -> Params:
    """``grads`` scaled to a global norm of at most ``config.max_grad_norm`` (``norm`` is
    theirs); unchanged when it is None."""
    if config.max_grad_norm is None:
        return grads
    scale = jnp.minimum(1.0, config.max_grad_norm / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


def create_train_state(
    network_config: NetworkConfig,
    ppo_config: PPOConfig,
    obs_shape: Sequence[int],
    num_actions: int,
    rng: jax.Array,
) -> tuple[ActorCritic, TrainState]:
    """Build the network and a fresh ``TrainState``.

    Args:
      obs_shape: one observation's shape, e.g. (12, 105, 80) for channel-first stacked RGB.
      num_actions: size of the discrete action set.
      rng: PRNG key (split for the parameters and the state's own key).

    Returns:
      ``(network, state)``; ``state`` lives on the default device: pass it to the update as is
      (jit replicates it over the mesh) or ``jax.device_put`` it with a replicated sharding.
      Its hyperparameters start at ``ppo_config.learning_rate`` and ``ppo_config.ent_coef``.
    """
    network = make_network(network_config, num_actions)
    init_key, state_key = jax.random.split(rng)
    params = init_params(network, init_key, obs_shape)
    opt_state = make_optimizer(ppo_config).init(params)
    state = TrainState(
        params=params,
        opt_state=opt_state,
        update_step=jnp.zeros((), jnp.int32),
        grad_step=jnp.zeros((), jnp.int32),
        rng=state_key,
        hyperparams=make_hyperparams(ppo_config.learning_rate, ppo_config.ent_coef),
    )
    return network, state
