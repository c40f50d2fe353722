"""Where one PPO update's time goes: each part of the network's forward and backward pass, and
the optimizer, jitted and timed alone on the sizes one minibatch step sees, then multiplied by
the steps of an update (epochs x minibatches). ``bench learner`` reports them beside the whole
update as ``parts`` (seconds per update); what the parts leave is the heads, the loss, GAE and
the normalisation, the host loop and the glue between the parts ("rest", negative when the
parts alone cost more than inside the one compiled update: XLA fuses across their borders).

A part's backward time is its forward-and-backward time minus its forward time. The first
convolution takes the uint8 frames (scaling them is part of it) and its backward no input
gradient (the frames need none), as in the update.
The convolutions take the path the network takes (``networks.model.conv_impl``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_reset.networks import NetworkConfig
from jax_reset.networks import model as net_model


def _seconds(fn: Callable[..., Any], *args: Any, calls: int) -> float:
    """Median seconds of ``fn(*args)`` over ``calls`` calls after one that compiles."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _forward_and_backward(apply: Callable[..., jax.Array], args: tuple[Any, ...],
                          wrt: tuple[int, ...], calls: int) -> tuple[float, float]:
    """(forward s, backward s) of ``apply(*args)``: the backward is the gradient, with respect
    to the arguments ``wrt``, of a fixed random projection of the output, minus the forward."""
    out = jax.eval_shape(apply, *args)
    cotangent = jax.random.normal(jax.random.key(1), out.shape, out.dtype)
    forward = jax.jit(apply)
    both = jax.jit(jax.grad(lambda *a: jnp.vdot(apply(*a), cotangent), argnums=wrt))
    fwd_s = _seconds(forward, *args, calls=calls)
    return fwd_s, max(_seconds(both, *args, calls=calls) - fwd_s, 0.0)


def time_parts(cfg: NetworkConfig, params: Any, obs_shape: tuple[int, ...], envs: int,
               steps: int, steps_per_update: int, calls: int = 5) -> dict[str, float]:
    """Seconds per update of each part, for minibatches of ``envs`` environments x ``steps``
    (burn-in + rollout) frames and ``steps_per_update`` optimizer steps per update. Keys:
    ``conv<i> forward``, ``conv<i> backward``, ``dense forward``, ``dense backward`` (the dense
    layer with its layer norm), ``core forward``, ``core backward``, ``optimizer``."""
    rng = np.random.default_rng(0)
    n = envs * steps
    torso = params["torso"]
    conv = (net_model.conv_valid_cpu if net_model.conv_impl() == "matmul"
            else net_model.conv_valid_xla)
    frames = jnp.asarray(rng.integers(0, 256, (n, *obs_shape), np.uint8))
    mean = torso.get(net_model.INPUT_MEAN)
    x = frames
    seconds: dict[str, float] = {}
    for i, stride in enumerate(cfg.conv_strides):
        layer = torso[f"Conv_{i}"]

        def apply(x, kernel, bias, stride=stride, first=i == 0):
            if first:  # the uint8 frames in, scaled as the torso scales them
                if net_model.conv_impl() == "matmul":
                    y = net_model.conv_frames_cpu(x, mean, kernel, stride, jnp.float32)
                else:
                    y = conv(net_model.scale_frames(x, mean, jnp.float32), kernel, stride)
            else:
                y = conv(x, kernel, stride)
            return nn.relu(y + bias)

        wrt = (1, 2) if i == 0 else (0, 1, 2)
        fwd, bwd = _forward_and_backward(apply, (x, layer["kernel"], layer["bias"]), wrt, calls)
        seconds[f"conv{i} forward"], seconds[f"conv{i} backward"] = fwd, bwd
        x = jax.jit(apply)(x, layer["kernel"], layer["bias"])

    layer_norm = nn.LayerNorm(use_bias=False, use_scale=False)  # the torso's: no parameters

    def dense(x, kernel, bias):
        return nn.relu(layer_norm.apply({}, x.reshape((x.shape[0], -1)) @ kernel + bias))

    layer = torso["Dense_0"]
    seconds["dense forward"], seconds["dense backward"] = _forward_and_backward(
        dense, (x, layer["kernel"], layer["bias"]), (0, 1, 2), calls)

    if cfg.core != "none":
        core = net_model.core_module(cfg)
        feats = jnp.asarray(rng.standard_normal((steps, envs, cfg.dense_size), np.float32))
        reset = jnp.asarray(rng.random((steps, envs)) < 0.01)
        carry = net_model.init_carry(cfg, envs)

        def recurrent(core_params, feats):
            return core.apply({"params": core_params}, carry, (feats, reset, None, None))[1]

        seconds["core forward"], seconds["core backward"] = _forward_and_backward(
            recurrent, (params["core"], feats), (0, 1), calls)

    adam = optax.adam(1e-4)
    grads = jax.tree.map(jnp.ones_like, params)
    step = jax.jit(lambda g, s, p: optax.apply_updates(p, adam.update(g, s, p)[0]))
    seconds["optimizer"] = _seconds(step, grads, adam.init(params), params, calls=calls)
    return {k: v * steps_per_update for k, v in seconds.items()}
