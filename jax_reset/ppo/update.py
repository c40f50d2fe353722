"""The PPO update: epochs x minibatches in one jitted, data-parallel ``jit(shard_map(...))``.

Every device runs the same program on its share of the environments (axis ``"data"``):
GAE, global advantage normalisation (``psum`` of sums and counts), then ``epochs`` passes of
``minibatches`` optimiser steps, each re-running its whole sequences from the stored recurrent
state through the burn-in under the current parameters. With ``ppo.target_kl`` the update stops
at the first step whose minibatch has drifted further than that from the behaviour policy
(that step is not applied): the scan carries an ``active`` flag, the host loop breaks.
Gradients are summed over devices (each device's loss is its share of the global mean), so
parameters stay identical everywhere and the result does not depend on the number of devices
(up to float rounding).

Minibatch m holds the environments whose *global* index is = m (mod minibatches); with
environments split over devices in contiguous blocks whose size is a multiple of minibatches,
that is the local indices = m (mod minibatches) on every device. The order in which the
minibatches are visited is a fresh permutation per epoch from ``TrainState.rng`` (the same on
every device). Both choices make 1, 2 or 4 devices compute the same update.

The learning rate and the entropy coefficient are runtime values, not constants compiled into
the program: both live in ``TrainState.hyperparams`` (float32 scalars, checkpointed with the
state) and ``with_hyperparams`` changes them between two updates without a recompile (the stall
controller, ``jax_reset.curriculum.stall``, lowers them when the curriculum stops moving).
Adam is built inside the compiled step from that learning rate, so the optimiser state holds only
Adam's moments and count, as before: a checkpoint written before the change (``TrainStateV1``, no
hyperparameters) restores into ``v1_target`` and ``lift_train_state`` makes it a ``TrainState``.
Those live in ``jax_reset.ppo.train_state``.

The update's metrics carry short names (``loss``, ``approx_kl``, ``sgd_steps``, ...: the keys of
``UPDATE_METRICS``); the trainer maps them to the logged keys (``train/loss``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_reset.networks import ActorCritic
from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.data import DATA_AXIS, TrainBatch, shard_batch
from jax_reset.ppo.gae import gae
from jax_reset.ppo.imitation import DEMO_SPEC, DemoBatch, imitation_loss, shard_demo
from jax_reset.ppo.losses import l2_gradient, l2_penalty, normalize_advantages, ppo_loss
from jax_reset.ppo.train_state import (
    Hyperparams,
    Params,
    TrainState,
    clip_gradients,
    make_optimizer,
)

Metrics = dict[str, jax.Array]

# What an update reports, by short name (the trainer logs each as ``train/<name>``): the losses,
# the policy's move, the gradient's norm before the clip, the critic's fit, and the optimiser
# steps taken (fewer than epochs x minibatches when ``target_kl`` stopped the update).
UPDATE_METRICS = ("loss", "policy_loss", "value_loss", "entropy", "l2_loss", "approx_kl", "kl",
                  "clip_fraction", "grad_norm", "explained_variance", "advantage_mean",
                  "valid_fraction", "sgd_steps")
# And with ``ppo.imitation_windows`` (``jax_reset.ppo.imitation``): the demo term's value and the
# share of the demo's steps where the policy's most likely action is the demo's.
IMITATION_METRICS = ("imitation_loss", "imitation_accuracy")


def _take_minibatch(x: jax.Array, m: jax.Array, minibatches: int, axis: int) -> jax.Array:
    """Environments with local index = m (mod minibatches) along ``axis`` (strided split)."""
    b = x.shape[axis]
    x = x.reshape((*x.shape[:axis], b // minibatches, minibatches, *x.shape[axis + 1 :]))
    return jax.lax.dynamic_index_in_dim(x, m, axis + 1, keepdims=False)


def _explained_variance(
    value: jax.Array, target: jax.Array, mask: jax.Array, axis_name: str
) -> jax.Array:
    """1 - Var[target - value] / Var[target] over the global batch's masked steps."""
    mask = mask.astype(jnp.float32)
    n = jnp.maximum(jax.lax.psum(mask.sum(), axis_name), 1.0)

    def var(x: jax.Array) -> jax.Array:
        mean = jax.lax.psum((x * mask).sum(), axis_name) / n
        return jax.lax.psum((jnp.square(x - mean) * mask).sum(), axis_name) / n

    var_t = var(target)
    return jnp.where(var_t > 0, 1.0 - var(target - value) / jnp.maximum(var_t, 1e-12), 0.0)


@flax.struct.dataclass
class Prepared:
    """Per-update quantities computed once from the behaviour data, before the epochs."""

    advantage: jax.Array  # [T, B_local] normalised advantages (0 at cut steps, cut_mode zero)
    target: jax.Array  # [T, B_local] value targets (GAE advantage + behaviour value)
    metrics: Metrics  # explained_variance, advantage_mean, valid_fraction (global)


def prepare(config: PPOConfig, batch: TrainBatch, axis_name: str = DATA_AXIS) -> Prepared:
    """GAE from the behaviour values (once per update, as the reference) and the global
    advantage normalisation. Runs inside ``shard_map``; batch data leaves ``[S, B_local, ...]``.
    """
    k = config.burn_in_steps
    d = batch.data
    valid, cut, done = d.valid[k:], d.cut[k:], d.done[k:]
    if config.cut_mode == "end":  # a cut is an episode's end for learning (PPOConfig.cut_mode)
        done, cut = done | cut, jnp.zeros_like(cut)
    advantage, target = gae(
        d.reward[k:], d.value[k:], done, cut, batch.bootstrap_value,
        config.gamma, config.gae_lambda,
    )
    count = jnp.maximum(jax.lax.psum(valid.sum(), axis_name), 1)
    metrics = {
        "explained_variance": _explained_variance(d.value[k:], target, valid, axis_name),
        "advantage_mean": jax.lax.psum((advantage * valid).sum(), axis_name) / count,
        "valid_fraction": jax.lax.psum(valid.sum(), axis_name)
        / jax.lax.psum(jnp.asarray(valid.size, jnp.float32), axis_name),
    }
    return Prepared(normalize_advantages(advantage, valid, cut, axis_name), target, metrics)


def sgd_step(
    network: ActorCritic,
    config: PPOConfig,
    params: Params,
    opt_state: optax.OptState,
    hyperparams: Hyperparams,
    batch: TrainBatch,
    prepared: Prepared,
    m: jax.Array,
    active: jax.Array,
    axis_name: str = DATA_AXIS,
    demo: DemoBatch | None = None,
) -> tuple[Params, optax.OptState, Metrics]:
    """One optimiser step on minibatch ``m`` (int32 scalar, the same on every device).

    Runs inside ``shard_map``: ``params``/``opt_state``/``hyperparams`` replicated,
    ``batch``/``prepared`` this device's environments. ``active`` (bool scalar): no earlier
    step of this update was refused. The step is applied when ``active`` and, with
    ``config.target_kl``, the minibatch's approximate KL from the behaviour policy under
    ``params`` (before the step) is at most ``target_kl``; otherwise parameters and optimiser
    state come back unchanged. Returns the new replicated parameters, optimiser state and
    metrics, with ``measured`` (1.0 when ``active``: the step's metrics count in the update's
    means) and ``applied`` (1.0 when the step was taken). ``demo``: this device's windows of
    the demo (``ppo.imitation_windows``); its minibatch ``m`` adds the imitation term.
    """
    mbs = config.minibatches
    take_t = lambda x: _take_minibatch(x, m, mbs, axis=1)  # noqa: E731
    take_b = lambda x: _take_minibatch(x, m, mbs, axis=0)  # noqa: E731
    mb = TrainBatch(
        data=jax.tree.map(take_t, batch.data),
        carry=jax.tree.map(take_b, batch.carry),
        bootstrap_value=take_b(batch.bootstrap_value),
    )

    def apply_fn(p, *args):
        return network.apply({"params": p}, *args)

    # Differentiate w.r.t. a device-varying copy of the parameters so that the gradient is this
    # device's share, and sum the shares explicitly (JAX would otherwise insert the psum
    # implicitly when transposing the replicated -> varying broadcast).
    local_params = jax.lax.pcast(params, axis_name, to="varying")
    demo_mb = None if demo is None else DemoBatch(
        obs=take_t(demo.obs), episode_start=take_t(demo.episode_start),
        action=take_t(demo.action), mask=take_t(demo.mask), carry=jax.tree.map(take_b, demo.carry))

    def loss_fn(p: Params) -> tuple[jax.Array, Metrics]:
        loss, metrics = ppo_loss(p, apply_fn, mb, take_t(prepared.advantage),
                                 take_t(prepared.target), config, axis_name, hyperparams.ent_coef)
        if demo_mb is not None:
            demo_loss, demo_metrics = imitation_loss(p, apply_fn, demo_mb, axis_name)
            loss = loss + config.imitation_coef * demo_loss
            metrics = {**metrics, **demo_metrics}
        return loss, metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(local_params)
    grads = jax.lax.psum(grads, axis_name)
    # L2 once, on the replicated parameters (not per device), on the trained ones only: the
    # torso's input offset is a constant (it once took this term alone, and Adam, scaling it by
    # 1/eps, shrank the offset by lr * l2_coef / eps per step: ~70% over a 10,000-update run).
    grads = l2_gradient(grads, params, config.l2_coef)
    metrics["grad_norm"] = optax.tree.norm(grads)  # before the clip
    grads = clip_gradients(config, grads, metrics["grad_norm"])
    optimizer = make_optimizer(config, hyperparams.learning_rate)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    apply = jnp.asarray(active, jnp.bool_)
    if config.target_kl is not None:
        # approx_kl is already the global mean (psum-ed): every device takes the same branch.
        apply = apply & (metrics["approx_kl"] <= config.target_kl)
        keep = lambda new, old: jax.tree.map(  # noqa: E731
            lambda n, o: jnp.where(apply, n, o), new, old)
        new_params, new_opt_state = keep(new_params, params), keep(new_opt_state, opt_state)
    metrics["measured"] = jnp.asarray(active, jnp.float32)
    metrics["applied"] = apply.astype(jnp.float32)
    return new_params, new_opt_state, metrics


def minibatch_orders(config: PPOConfig, key: jax.Array) -> jax.Array:
    """[epochs, minibatches] int32: a fresh permutation of the minibatches for every epoch."""
    keys = jax.random.split(key, config.epochs)
    return jax.vmap(lambda k: jax.random.permutation(k, config.minibatches))(keys)


def finish(
    config: PPOConfig, state: TrainState, params: Params, opt_state: optax.OptState,
    step_metrics: Metrics, prepared_metrics: Metrics, rng: jax.Array,
) -> tuple[TrainState, Metrics]:
    """The new state and the update's metrics (step metrics are [steps]: epochs x minibatches,
    or those up to the one ``target_kl`` refused)."""
    step_metrics = dict(step_metrics)
    measured, applied = step_metrics.pop("measured"), step_metrics.pop("applied")
    # Means over the steps taken and the one that was refused (steps after it measure nothing).
    metrics = {k: (v * measured).sum() / measured.sum() for k, v in step_metrics.items()}
    sgd_steps = applied.sum().astype(jnp.int32)
    metrics["sgd_steps"] = sgd_steps
    l2 = l2_penalty(params)
    metrics["l2_loss"] = l2
    metrics["loss"] = (
        metrics["policy_loss"]
        - state.hyperparams.ent_coef * metrics["entropy"]
        + config.vf_coef * metrics["value_loss"]
        + config.l2_coef * l2
    )
    names = UPDATE_METRICS
    if "imitation_loss" in metrics:
        metrics["loss"] = metrics["loss"] + config.imitation_coef * metrics["imitation_loss"]
        names = names + IMITATION_METRICS
    metrics.update(prepared_metrics)
    new_state = TrainState(
        params=params,
        opt_state=opt_state,
        update_step=state.update_step + 1,
        grad_step=state.grad_step + sgd_steps,
        rng=rng,
        hyperparams=state.hyperparams,
    )
    return new_state, {name: metrics[name] for name in names}


def local_update(
    network: ActorCritic,
    config: PPOConfig,
    state: TrainState,
    batch: TrainBatch,
    axis_name: str = DATA_AXIS,
    demo: DemoBatch | None = None,
) -> tuple[TrainState, Metrics]:
    """The whole update as one per-device program (runs inside ``shard_map``): the epochs and
    minibatches are a ``lax.scan``.

    Args:
      state: replicated ``TrainState``.
      batch: this device's environments, data leaves ``[S, B_local, ...]``.
      demo: this device's windows of the demo (``ppo.imitation_windows``), or None.

    Returns:
      ``(new_state, metrics)``, both identical on every device.
    """
    prepared = prepare(config, batch, axis_name)

    def step(carry, m):
        params, opt_state, active = carry
        params, opt_state, metrics = sgd_step(
            network, config, params, opt_state, state.hyperparams, batch, prepared, m, active,
            axis_name, demo,
        )
        # Once a step is refused (target_kl), the rest of the update takes none.
        return (params, opt_state, metrics["applied"] > 0), metrics

    rng, key = jax.random.split(state.rng)
    orders = minibatch_orders(config, key).reshape(-1)
    (params, opt_state, _), metrics = jax.lax.scan(
        step, (state.params, state.opt_state, jnp.ones((), jnp.bool_)), orders)
    return finish(config, state, params, opt_state, metrics, prepared.metrics, rng)


def default_loop(mesh: Mesh) -> str:
    """"scan" on accelerators; "host" on CPU, where XLA runs a convolution's gradient inside a
    while loop (any ``lax.scan``, even ``unroll=True``) 15-30x slower than outside one
    (measured: the same minibatch gradient, 3.4 s alone, 51-100 s inside a one-step scan;
    the forward pass alone is not affected)."""
    return "host" if mesh.devices.flat[0].platform == "cpu" else "scan"


def make_update(
    network: ActorCritic,
    config: PPOConfig,
    mesh: Mesh,
    donate_state: bool = False,
    loop: str | None = None,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """The jitted, data-parallel update ``update(state, batch, demo=None) -> (state, metrics)``.

    Args:
      network: from ``create_train_state``.
      config: PPO hyper-parameters (static).
      mesh: 1-D mesh over axis ``"data"`` (``jax_reset.parallel.mesh.make_data_mesh``).
      donate_state: let XLA reuse the input state's buffers for the output. Off by default:
        the state is small (~130 MB of params + Adam moments at reference size) and an actor
        that still acts with the previous parameters would find them deleted.
      loop: how the epochs x minibatches loop runs. "scan": the whole update is one compiled
        ``jit(shard_map(...))`` program with a ``lax.scan`` inside (accelerators). "host": the
        same pieces as two compiled programs, ``prepare`` once and ``sgd_step`` per minibatch,
        called from a Python loop (each compiles once; the default on CPU, see
        ``default_loop``). Both compute the same update.

    The returned function takes a replicated ``TrainState`` and a ``TrainBatch`` of S =
    burn_in + rollout steps for B environments (B divisible by devices x minibatches; place it
    with ``shard_batch`` to avoid a transfer inside the call), and returns the new state and a
    dict of scalar metrics (``train/loss``, ``train/policy_loss``, ``train/value_loss``,
    ``train/entropy``, ``train/l2_loss``, ``train/approx_kl``, ``train/kl``,
    ``train/clip_fraction``, ``train/grad_norm`` (means over the minibatch steps, the one
    ``target_kl`` refused included), ``sgd_steps`` (optimiser steps applied),
    ``train/explained_variance``, ``train/advantage_mean``, ``train/valid_fraction``).
    The learning rate and entropy coefficient come from ``state.hyperparams`` (runtime
    values: ``with_hyperparams`` changes them without a recompile).
    With ``config.imitation_windows`` the call also takes ``demo``, a ``DemoBatch`` of that
    many windows of the demo (``jax_reset.ppo.imitation``; placed like the batch), and the
    metrics add ``imitation_loss`` and ``imitation_accuracy``; without, ``demo`` must be None.
    Compiles once per batch shape and structure (``start_carry`` given or not);
    ``update.jitted`` is the compiled program (for "host", the per-minibatch step) whose cache
    size tests count.
    """
    loop = loop or default_loop(mesh)
    if loop not in ("scan", "host"):
        raise ValueError(f"loop must be 'scan' or 'host', got {loop!r}")
    num_devices = mesh.shape[DATA_AXIS]
    # PartitionSpecs as a prefix of TrainBatch: whatever the carry's structure (LSTM pair, GRU
    # array, none) and whether start_carry is present, environments are axis 1 of the data and
    # axis 0 of the carry and bootstrap values.
    batch_spec = TrainBatch(
        data=P(None, DATA_AXIS), carry=P(DATA_AXIS), bootstrap_value=P(DATA_AXIS)
    )
    replicated = NamedSharding(mesh, P())

    # The demo's windows travel as an optional trailing argument of every compiled program:
    # present exactly when the config imitates the demo.
    demo_specs = (DEMO_SPEC,) if config.imitates else ()

    def check(batch: TrainBatch, demo: DemoBatch | None) -> tuple[DemoBatch, ...]:
        assert batch.bootstrap_value.shape[0] % (num_devices * config.minibatches) == 0  # sizes
        s = batch.data.obs.shape[0]
        if s != config.sequence_steps:
            raise ValueError(
                f"batch has {s} steps, expected burn_in_steps + rollout_steps = "
                f"{config.sequence_steps}"
            )
        if (demo is not None) != config.imitates:
            raise ValueError("the update takes the demo's windows exactly when "
                             "ppo.imitation_windows > 0")
        if demo is None:
            return ()
        if config.imitation_windows % (num_devices * config.minibatches):
            raise ValueError(f"ppo.imitation_windows ({config.imitation_windows}) must be "
                             f"divisible by minibatches x devices ({config.minibatches} x "
                             f"{num_devices})")
        if demo.obs.shape[:2] != (config.sequence_steps, config.imitation_windows):
            raise ValueError(f"demo windows of shape {demo.obs.shape[:2]}, expected "
                             f"({config.sequence_steps}, {config.imitation_windows})")
        return (shard_demo(demo, mesh),)

    if loop == "scan":

        def body(state: TrainState, batch: TrainBatch, *demo: DemoBatch,
                 ) -> tuple[TrainState, Metrics]:
            return local_update(network, config, state, batch, DATA_AXIS, *demo)

        sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), batch_spec, *demo_specs),
                                out_specs=(P(), P()))
        jitted = jax.jit(sharded, donate_argnums=(0,) if donate_state else ())

        def update(state: TrainState, batch: TrainBatch, demo: DemoBatch | None = None,
                   ) -> tuple[TrainState, Metrics]:
            demo_args = check(batch, demo)
            # Place both where the compiled program expects them (no-ops when they already
            # are): a state or batch with another sharding would be a recompile.
            state = jax.device_put(state, replicated)
            return jitted(state, shard_batch(batch, mesh), *demo_args)

        update.jitted = jitted  # type: ignore[attr-defined]
        return update

    prepared_spec = Prepared(advantage=P(None, DATA_AXIS), target=P(None, DATA_AXIS),
                             metrics=P())
    prepare_jit = jax.jit(jax.shard_map(
        lambda batch: prepare(config, batch, DATA_AXIS), mesh=mesh, in_specs=(batch_spec,),
        out_specs=prepared_spec))
    step_jit = jax.jit(jax.shard_map(
        lambda params, opt_state, hyperparams, batch, prepared, m, *demo: sgd_step(
            network, config, params, opt_state, hyperparams, batch, prepared, m, True,
            DATA_AXIS, *demo),
        mesh=mesh, in_specs=(P(), P(), P(), batch_spec, prepared_spec, P(), *demo_specs),
        out_specs=(P(), P(), P())), donate_argnums=(0, 1) if donate_state else ())
    split_jit = jax.jit(lambda key: jax.random.split(key))
    orders_jit = jax.jit(lambda key: minibatch_orders(config, key))
    finish_jit = jax.jit(lambda state, params, opt_state, metrics, prepared_metrics, rng: finish(
        config, state, params, opt_state, metrics, prepared_metrics, rng))

    def update(state: TrainState, batch: TrainBatch, demo: DemoBatch | None = None,
               ) -> tuple[TrainState, Metrics]:
        demo_args = check(batch, demo)
        state = jax.device_put(state, replicated)
        batch = shard_batch(batch, mesh)
        prepared = prepare_jit(batch)
        rng, key = split_jit(state.rng)
        params, opt_state = state.params, state.opt_state
        step_metrics = []
        # The order is needed on the host to drive the loop: a few int32 per epoch.
        for m in jax.device_get(orders_jit(key)).reshape(-1):
            params, opt_state, metrics = step_jit(params, opt_state, state.hyperparams, batch,
                                                  prepared, jnp.asarray(m, jnp.int32), *demo_args)
            step_metrics.append(metrics)
            # A refused step (target_kl) ends the update: the later ones would all be refused.
            if config.target_kl is not None and not float(metrics["applied"]):
                break
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)
        return finish_jit(state, params, opt_state, stacked, prepared.metrics, rng)

    update.jitted = step_jit  # type: ignore[attr-defined]
    return update
