"""The recurrent actor-critic of the reference, in Flax linen.

conv 8x8/4 (64) -> conv 4x4/2 (128) -> conv 3x3/1 (128)      ReLU, VALID, orthogonal(sqrt 2)
-> dense 800 -> layer norm (no scale, no bias) -> ReLU       the "dense features"
-> LSTM | GRU | nothing, 800 units, state reset where an episode began
-> concat(core output, dense features) -> policy logits, value   (orthogonal(0.01) init)

One module handles every use: a sequence ``[T, B, ...]`` (the learner, T = 192 with burn-in),
a single step (acting: T = 1) and the demo warm-up (``jax_reset.ppo.warmup``). The torso runs on
all T*B frames at once; only the small core is a ``scan`` over time.

Recurrent-state convention (the same in acting, learning and warm-up): ``carry`` passed in for a
sequence is the state *entering* its first step, i.e. the state produced by the previous step,
before any reset. At every step t with ``episode_start[t]`` the state is replaced, inside the
scan, by ``start_carry[t]`` (zeros unless given; the trainer passes the demo warm-up state of
an episode that starts from a demo state) and then obs[t] is processed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import DenseParams

from jax_reset.networks.config import INPUT_OFFSETS, NetworkConfig

# The torso's constant input offset (``NetworkConfig.input_norm`` "demo_mean" or "play_mean").
INPUT_MEAN = "input_mean"

# LSTM: (c, h), each [B, H]; GRU: h [B, H]; feed-forward: () (no state at all).
Carry = Any
Params = Any


def _dtype(name: str) -> jnp.dtype:
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def init_carry(config: NetworkConfig, batch_size: int) -> Carry:
    """Zero recurrent state for ``batch_size`` environments: leaves ``[B, core_size]`` float32."""
    zeros = jnp.zeros((batch_size, config.core_size), jnp.float32)
    if config.core == "lstm":
        return (zeros, zeros)
    if config.core == "gru":
        return zeros
    return ()


# ------------------------------------------------------------------ convolutions on the CPU
# XLA:CPU runs a VALID convolution's forward pass well (Eigen), but its gradients badly: the
# weight gradient of a strided conv (a conv over the batch with the output gradient as kernel)
# and the input gradient (a conv with lhs_dilation = stride, zeros materialised) ran at 6-12
# GFLOP/s against ~200 for a matmul (scripts/learner_parts.py, LEARNER_REPORT.md). On a CPU the
# torso's convolutions therefore keep XLA's forward pass but take their backward pass from the
# same convolution written as matmuls: s x s space-to-depth turns the stride-s conv into a
# stride-1 conv with a ceil(k/s) kernel, computed either as one matmul to every tap's output
# followed by a shifted sum (when that intermediate is the smaller: the first convs) or as
# im2col by contiguous slices and one matmul. Same function, same parameters; only the float
# rounding of the gradients differs. GPUs keep nn.Conv (cuDNN's gradients are fine).
#
# "auto": the matmul backward when the default backend is the CPU; "xla" / "matmul" force a
# choice (benchmarks, tests). Read when a function is traced (``conv_impl``).
CONV_IMPL_ENV = "JAX_RESET_CONV"


def conv_impl() -> str:
    """"matmul" or "xla": how the torso's convolutions are differentiated in this process."""
    choice = os.environ.get(CONV_IMPL_ENV, "auto")
    if choice not in ("auto", "xla", "matmul"):
        raise ValueError(f"{CONV_IMPL_ENV} must be auto, xla or matmul, got {choice!r}")
    if choice == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return choice


def _conv_out(n: int, k: int, s: int) -> int:
    return (n - k) // s + 1


def conv_valid_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """VALID conv, NHWC x HWIO -> NHWC: the operation nn.Conv runs (same dimension numbers)."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _space_to_depth(x: jax.Array, k: int, s: int) -> jax.Array:
    """[N, H, W, C] -> [N, H', W', s*s*C], ordered (row in block, column in block, channel).

    Cropped (or zero-padded when k is not a multiple of s) to the rows and columns the stride-s
    VALID conv reads, so a ceil(k/s) stride-1 VALID conv has exactly its output grid.
    """
    n, h, w, c = x.shape
    kp = -(-k // s) * s
    nh = (_conv_out(h, k, s) - 1) * s + kp
    nw = (_conv_out(w, k, s) - 1) * s + kp
    x = x[:, : min(h, nh), : min(w, nw)]
    if nh > h or nw > w:
        x = jnp.pad(x, ((0, 0), (0, max(0, nh - h)), (0, max(0, nw - w)), (0, 0)))
    x = x.reshape(n, nh // s, s, nw // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, nh // s, nw // s, s * s * c)


def _space_to_depth_kernel(kernel: jax.Array, s: int) -> jax.Array:
    """[k, k, C, O] -> [ceil(k/s), ceil(k/s), s*s*C, O], matching ``_space_to_depth``."""
    k, _, c, o = kernel.shape
    kb = -(-k // s)
    if kb * s != k:
        kernel = jnp.pad(kernel, ((0, kb * s - k), (0, kb * s - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(kb, s, kb, s, c, o).transpose(0, 2, 1, 3, 4, 5)
    return kernel.reshape(kb, kb, s * s * c, o)


def _conv_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The same VALID conv as ``conv_valid_xla`` written with reshapes, slices and matmuls."""
    k = kernel.shape[0]
    oh, ow = _conv_out(x.shape[1], k, stride), _conv_out(x.shape[2], k, stride)
    if stride > 1:
        x, kernel = _space_to_depth(x, k, stride), _space_to_depth_kernel(kernel, stride)
    n, h, w, c = x.shape
    kb, o = kernel.shape[0], kernel.shape[-1]
    if h * w * o < oh * ow * c:
        # Every tap's output at every input position ([N*H*W, C] @ [C, kb*kb*O]), then the
        # shifted sum; its gradient is one matmul per operand plus pads.
        wm = kernel.transpose(2, 0, 1, 3).reshape(c, kb * kb * o)
        z = (x.reshape(-1, c) @ wm).reshape(n, h, w, kb * kb, o)
        y = None
        for a in range(kb):
            for b in range(kb):
                tap = z[:, a : a + oh, b : b + ow, a * kb + b]
                y = tap if y is None else y + tap
        return y
    # im2col: kb*kb contiguous slices side by side ([N, oh, ow, kb*kb*C], HWIO order), one matmul.
    cols = [x[:, a : a + oh, b : b + ow] for a in range(kb) for b in range(kb)]
    patches = jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]
    y = patches.reshape(-1, kb * kb * c) @ kernel.reshape(kb * kb * c, o)
    return y.reshape(n, oh, ow, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_valid_cpu(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """VALID conv (NHWC x HWIO, no bias): XLA's forward pass, the matmul form's backward."""
    return conv_valid_xla(x, kernel, stride)


def _conv_valid_cpu_fwd(x, kernel, stride):
    return conv_valid_xla(x, kernel, stride), (x, kernel)


def _conv_valid_cpu_bwd(stride, residuals, g):
    x, kernel = residuals
    # Linear in each operand: the matmul form's forward is dead code here, XLA drops it (as it
    # drops the input gradient of the first conv, whose input is the frames).
    _, vjp = jax.vjp(lambda x, kernel: _conv_matmul(x, kernel, stride), x, kernel)
    return vjp(g)


conv_valid_cpu.defvjp(_conv_valid_cpu_fwd, _conv_valid_cpu_bwd)


class CpuConv(nn.Module):
    """``nn.Conv(features, (k, k), (s, s), padding="VALID")`` with the same parameters (names,
    shapes, dtypes, initial values: ``kernel`` [k, k, C, O], ``bias`` [O]) and the same forward
    pass, differentiated by ``conv_valid_cpu``. Give it nn.Conv's name (``Conv_<i>``) so a
    checkpoint of either loads into the other."""

    features: int
    kernel_size: int
    stride: int
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv_valid_cpu(x, kernel, self.stride) + bias


# ------------------------------------------------------------ the first convolution, in chunks
# The first convolution reads the frames: [N, H, W, C] float32 is 4x the uint8 frames (75 MB for
# the CPU job's 1,536-frame minibatch), and XLA:CPU allocates such a buffer afresh at each call,
# to be faulted in by the kernel page by page. Measured on the 2-core CPU (docs/benchmarks.md):
# converting the frames and convolving them took twice as long as the convolution alone. So on
# the CPU the scaled frames exist only a chunk at a time (a few MB, in cache): the forward pass
# maps over chunks of FRAME_CHUNK frames (scale, centre, XLA's convolution), and the backward
# pass, whose residual is the uint8 frames themselves, scans over the same chunks summing each
# chunk's weight gradient (the matmul form of ``conv_valid_cpu``). The frames take no gradient.
FRAME_CHUNK = 128


def scale_frames(frames: jax.Array, mean: jax.Array | None, dtype: Any) -> jax.Array:
    """uint8 ``[N, C, H, W]`` -> ``[N, H, W, C]`` in ``dtype``: frames / 255 - ``mean``.

    ``mean`` float32 ``[C, H, W]`` or None. The uint8 frames are transposed (1 byte/element)
    rather than the scaled floats.
    """
    x = jnp.moveaxis(frames, -3, -1)
    x = x.astype(dtype) * jnp.asarray(1.0 / 255.0, dtype)
    if mean is not None:
        x = x - jnp.moveaxis(mean, -3, -1).astype(dtype)
    return x


def _split_chunks(n: int, chunk: int) -> tuple[int, int]:
    """(number of whole chunks, frames left over) for ``n`` frames."""
    return n // chunk, n % chunk


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv_frames_cpu(frames: jax.Array, mean: jax.Array | None, kernel: jax.Array, stride: int,
                    dtype: Any, chunk: int = FRAME_CHUNK) -> jax.Array:
    """``conv_valid_xla(scale_frames(frames, mean, dtype), kernel, stride)`` a chunk of frames at
    a time: uint8 ``[N, C, H, W]``, kernel ``[k, k, C, O]`` -> ``[N, H', W', O]`` in ``dtype``.
    Differentiable in ``kernel`` only (the frames are data, the mean a constant)."""
    return _conv_frames_forward(frames, mean, kernel, stride, dtype, chunk)


def _conv_frames_forward(frames, mean, kernel, stride, dtype, chunk):
    kernel = kernel.astype(dtype)

    def conv(f: jax.Array) -> jax.Array:
        return conv_valid_xla(scale_frames(f, mean, dtype), kernel, stride)

    whole, left = _split_chunks(frames.shape[0], chunk)
    if whole <= 1:
        return conv(frames)
    body = frames[: whole * chunk].reshape(whole, chunk, *frames.shape[1:])
    y = jax.lax.map(conv, body)
    y = y.reshape(whole * chunk, *y.shape[2:])
    return jnp.concatenate([y, conv(frames[whole * chunk:])]) if left else y


def _conv_frames_fwd(frames, mean, kernel, stride, dtype, chunk):
    return _conv_frames_forward(frames, mean, kernel, stride, dtype, chunk), (frames, mean, kernel)


def _conv_frames_bwd(stride, dtype, chunk, residuals, g):
    frames, mean, kernel = residuals
    kernel_d = kernel.astype(dtype)

    def kernel_grad(f: jax.Array, g: jax.Array) -> jax.Array:
        x = scale_frames(f, mean, dtype)
        _, vjp = jax.vjp(lambda k: _conv_matmul(x, k, stride), kernel_d)
        return vjp(g)[0].astype(jnp.float32)

    whole, left = _split_chunks(frames.shape[0], chunk)
    if whole <= 1:
        grad = kernel_grad(frames, g)
    else:
        def step(total: jax.Array, fg: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            return total + kernel_grad(*fg), None

        # The first chunk's gradient starts the sum: a carry that varies like the data, as
        # it must inside shard_map (zeros would not).
        grad, _ = jax.lax.scan(
            step, kernel_grad(frames[:chunk], g[:chunk]),
            (frames[chunk: whole * chunk].reshape(whole - 1, chunk, *frames.shape[1:]),
             g[chunk: whole * chunk].reshape(whole - 1, chunk, *g.shape[1:])))
        if left:
            grad = grad + kernel_grad(frames[whole * chunk:], g[whole * chunk:])
    mean_grad = None if mean is None else jnp.zeros_like(mean)
    return None, mean_grad, grad.astype(kernel.dtype)


conv_frames_cpu.defvjp(_conv_frames_fwd, _conv_frames_bwd)


class CpuFramesConv(nn.Module):
    """The torso's first layer on the CPU: ``nn.Conv`` (VALID, the same parameters) applied to
    ``scale_frames(frames, mean)``, computed by ``conv_frames_cpu``. Name it ``Conv_0``."""

    features: int
    kernel_size: int
    stride: int
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frames: jax.Array, mean: jax.Array | None) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init,
                            (k, k, frames.shape[-3], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        y = conv_frames_cpu(frames, mean, kernel, self.stride, self.dtype)
        return y + bias.astype(self.dtype)


class Torso(nn.Module):
    """uint8 frames ``[N, *obs_shape]`` -> dense features ``[N, dense_size]`` float32."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = _dtype(cfg.compute_dtype)
        mean = None
        if cfg.input_norm in INPUT_OFFSETS:
            # A constant the trainer sets from the demo (``set_input_mean``), not learned: no
            # gradient reaches it (so Adam leaves it alone) and the L2 term skips it.
            mean = self.param(INPUT_MEAN, nn.initializers.zeros, obs.shape[-3:], jnp.float32)
            mean = jax.lax.stop_gradient(mean)
        cpu_conv = conv_impl() == "matmul"
        # On the CPU the first convolution takes the uint8 frames and scales them itself.
        x = obs if cpu_conv and cfg.conv_channels else scale_frames(obs, mean, dtype)
        for i, (c, k, s) in enumerate(
            zip(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides, strict=True)
        ):
            init = nn.initializers.orthogonal(math.sqrt(2.0))
            # The same parameters as nn.Conv's, under nn.Conv's automatic name, on every path.
            if cpu_conv and i == 0:
                x = nn.relu(CpuFramesConv(c, k, s, kernel_init=init, dtype=dtype,
                                          name="Conv_0")(x, mean))
                continue
            if cpu_conv:
                conv = CpuConv(c, k, s, kernel_init=init, dtype=dtype, name=f"Conv_{i}")
            else:
                conv = nn.Conv(c, (k, k), (s, s), padding="VALID", kernel_init=init,
                               dtype=dtype, param_dtype=jnp.float32)
            x = nn.relu(conv(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(
            cfg.dense_size,
            kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)),
            dtype=dtype,
            param_dtype=jnp.float32,
        )(x)
        # Layer norm in float32 whatever the torso's dtype: its statistics are where bf16 hurts.
        x = nn.LayerNorm(use_bias=False, use_scale=False, dtype=jnp.float32)(x.astype(jnp.float32))
        return nn.relu(x)


class _ResetCell(nn.Module):
    """One core step with the episode-start reset inside (scanned over time by ``nn.scan``)."""

    kind: str
    size: int

    @nn.compact
    def __call__(self, carry: Carry, xs: tuple[jax.Array, ...]) -> tuple[Carry, jax.Array]:
        # x [B, D], reset [B] bool, start: carry-shaped or None, step_mask: [B] bool or None.
        x, reset, start, step_mask = xs
        if start is None:
            start = jax.tree.map(jnp.zeros_like, carry)
        carry = jax.tree.map(lambda s, c: jnp.where(reset[:, None], s, c), start, carry)
        if self.kind == "lstm":
            cell = nn.OptimizedLSTMCell(self.size, name="lstm")
        else:
            cell = nn.GRUCell(self.size, name="gru")
        new_carry, y = cell(carry, x)
        if step_mask is not None:
            # Masked-out steps leave the state untouched (variable-length demo warm-up).
            new_carry = jax.tree.map(
                lambda n, c: jnp.where(step_mask[:, None], n, c), new_carry, carry
            )
        return new_carry, y


class _LSTMWeights(nn.Module):
    """The parameters of flax's ``OptimizedLSTMCell`` (the same names, shapes and initializers:
    ``i{i,f,g,o}/kernel`` [D, H], ``h{i,f,g,o}/kernel`` [H, H] and ``/bias`` [H]), returned
    concatenated over the gates: (input kernel [D, 4H], recurrent kernel [H, 4H], bias [4H])."""

    size: int

    @nn.compact
    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        gates = "ifgo"
        cell = nn.OptimizedLSTMCell  # its defaults: lecun normal, orthogonal, zeros
        inputs = [DenseParams(self.size, use_bias=False, kernel_init=cell.kernel_init,
                              name=f"i{g}")(x)[0] for g in gates]
        recurrent = [DenseParams(self.size, use_bias=True, kernel_init=cell.recurrent_kernel_init,
                                 bias_init=cell.bias_init, name=f"h{g}")(h) for g in gates]
        return (jnp.concatenate(inputs, axis=-1),
                jnp.concatenate([k for k, _ in recurrent], axis=-1),
                jnp.concatenate([b for _, b in recurrent], axis=-1))


class _LSTMCore(nn.Module):
    """The LSTM core over a sequence, with the episode-start reset: ``OptimizedLSTMCell``'s
    math and parameters (under ``lstm``), with the input projection of all T*B steps taken
    before the scan as one [T*B, D] x [D, 4H] matmul. The scan then holds only the recurrent
    [B, H] x [H, 4H] matmul, and the backward pass forms the input kernel's gradient as one
    matmul instead of T thin ones (on the CPU, a tenth of the update went to those). Same
    function; the float rounding of the projection may differ.

    Call: ``(carry, (x, reset, start, step_mask))`` with x [T, B, D], reset [T, B] bool, start
    carry-shaped with leaves [T, B, H] or None, step_mask [T, B] bool or None; returns
    ``(carry after step T-1, outputs [T, B, H])`` like the scanned ``_ResetCell``.
    """

    size: int

    @nn.compact
    def __call__(self, carry: Carry, xs: tuple[Any, ...]) -> tuple[Carry, jax.Array]:
        x, reset, start, step_mask = xs
        w_input, w_recurrent, bias = _LSTMWeights(self.size, name="lstm")(x, carry[1])
        projected = jnp.dot(x, w_input)  # [T, B, 4H]

        def step(carry: Carry, inputs: tuple[Any, ...]) -> tuple[Carry, jax.Array]:
            xp, reset_t, start_t, mask_t = inputs
            if start_t is None:
                start_t = jax.tree.map(jnp.zeros_like, carry)
            carry = jax.tree.map(lambda s, c: jnp.where(reset_t[:, None], s, c), start_t, carry)
            c, h = carry
            # the cell's order of operations: (h W_h + b) + x W_i, then the gates i, f, g, o
            z = jnp.dot(h, w_recurrent) + bias[None, :] + xp
            i, f, g, o = jnp.split(z, 4, axis=-1)
            new_c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
            new_h = nn.sigmoid(o) * jnp.tanh(new_c)
            new_carry = (new_c, new_h)
            if mask_t is not None:  # masked-out steps leave the state untouched
                new_carry = jax.tree.map(lambda n, c_: jnp.where(mask_t[:, None], n, c_),
                                         new_carry, carry)
            return new_carry, new_h

        return jax.lax.scan(step, carry, (projected, reset, start, step_mask))


_ScanCell = nn.scan(
    _ResetCell,
    variable_broadcast="params",
    split_rngs={"params": False},
    in_axes=0,
    out_axes=0,
)


def core_module(config: NetworkConfig) -> nn.Module:
    """The recurrent core (``config.core`` "lstm" or "gru") over a sequence: called as
    ``(carry, (x [T, B, D], reset [T, B], start or None, step_mask or None))`` -> ``(carry,
    outputs [T, B, H])``."""
    if config.core == "lstm":
        return _LSTMCore(config.core_size)
    return _ScanCell(config.core, config.core_size)


class ActorCritic(nn.Module):
    """Recurrent (or feed-forward) actor-critic over sequences ``[T, B, ...]``.

    Call: ``apply({"params": p}, obs, episode_start, entropy_boost, carry, start_carry, evaluate)``

    Args:
      obs: ``[T, B, *obs_shape]`` uint8, ``obs_shape`` = (C, H, W), stacked frames first.
      episode_start: ``[T, B]`` bool, obs[t] is the first observation of an episode: the state
        is reset (to ``start_carry[t]``, else zeros) before processing it.
      entropy_boost: ``[T, B]`` bool, halve the logits at this step (higher entropy), as the
        reference does while the frame index is below the curriculum start + 100.
      carry: recurrent state entering step 0, leaves ``[B, core_size]``; ``()`` for "none".
      start_carry: optional state to reset to, leaves ``[T, B, core_size]``; None = zeros.
      evaluate: static; double the logits (lower temperature) as the reference does at test.

    Returns:
      ``(carry, logits, value)``: the state after step T-1 (same structure as ``carry``),
      ``[T, B, num_actions]`` float32 and ``[T, B]`` float32.

    ``method=ActorCritic.warm_up`` runs only the torso and the core over demo observations.
    """

    config: NetworkConfig
    num_actions: int

    def setup(self) -> None:
        cfg = self.config
        self.torso = Torso(cfg)
        if cfg.core != "none":
            self.core = core_module(cfg)
        self.logits_head = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.value_head = nn.Dense(1, kernel_init=nn.initializers.orthogonal(0.01))

    def encode(self, obs: jax.Array) -> jax.Array:
        """``[*lead, *obs_shape]`` uint8 -> ``[*lead, dense_size]`` float32 (any lead dims)."""
        lead = obs.shape[: obs.ndim - 3]
        feats = self.torso(obs.reshape((-1, *obs.shape[-3:])))
        return feats.reshape((*lead, self.config.dense_size))

    def __call__(
        self,
        obs: jax.Array,
        episode_start: jax.Array,
        entropy_boost: jax.Array,
        carry: Carry,
        start_carry: Carry | None = None,
        evaluate: bool = False,
    ) -> tuple[Carry, jax.Array, jax.Array]:
        feats = self.encode(obs)  # [T, B, D]
        if self.config.core == "none":
            x = feats
        else:
            carry, core_out = self.core(carry, (feats, episode_start, start_carry, None))
            x = jnp.concatenate([core_out, feats], axis=-1)
        logits = self.logits_head(x)
        value = self.value_head(x)[..., 0]
        logits = jnp.where(entropy_boost[..., None], 0.5 * logits, logits)
        if evaluate:
            logits = 2.0 * logits
        return carry, logits, value

    def warm_up(self, obs: jax.Array, mask: jax.Array) -> Carry:
        """Recurrent state after demo observations; see ``jax_reset.ppo.warmup``.

        obs ``[B, L, *obs_shape]`` uint8, mask ``[B, L]`` bool -> carry, leaves ``[B, H]``.
        """
        b = obs.shape[0]
        carry = init_carry(self.config, b)
        if self.config.core == "none":
            return carry
        # Torso in batch-major order, then transpose the small features (not the frames).
        feats = jnp.swapaxes(self.encode(obs), 0, 1)  # [L, B, D]
        mask_t = jnp.swapaxes(mask, 0, 1)
        never = jnp.zeros_like(mask_t)
        carry, _ = self.core(carry, (feats, never, None, mask_t))
        return carry


def make_network(config: NetworkConfig, num_actions: int) -> ActorCritic:
    """The actor-critic module for ``config`` and a discrete action space of ``num_actions``."""
    return ActorCritic(config, num_actions)


def init_params(network: ActorCritic, rng: jax.Array, obs_shape: Sequence[int]) -> Params:
    """Initialise the parameters (float32) from one dummy frame of shape ``obs_shape``."""
    obs = jnp.zeros((1, 1, *obs_shape), jnp.uint8)
    flags = jnp.zeros((1, 1), bool)
    carry = init_carry(network.config, 1)
    # Compiled as one program: run eagerly, each of the init's ~100 operations is lowered and
    # compiled on its own (seconds at every start); the values are the same.
    return jax.jit(network.init)(rng, obs, flags, flags, carry)["params"]


def forward_flops(config: NetworkConfig, obs_shape: Sequence[int], num_actions: int) -> int:
    """Analytic forward FLOPs per sample (2 per multiply-add; convs, dense, core, heads).

    ``obs_shape`` is (C, H, W). Element-wise work (ReLU, norm, gates) is ignored: it is well
    under 1% at reference size. Forward + backward is about 3x this.
    """
    c, h, w = obs_shape
    flops = 0
    for out_c, k, s in zip(
        config.conv_channels, config.conv_kernels, config.conv_strides, strict=True
    ):
        h, w = (h - k) // s + 1, (w - k) // s + 1
        flops += 2 * h * w * out_c * k * k * c
        c = out_c
    flops += 2 * h * w * c * config.dense_size
    head_in = config.dense_size
    if config.core != "none":
        gates = 4 if config.core == "lstm" else 3
        flops += 2 * gates * config.core_size * (config.dense_size + config.core_size)
        head_in += config.core_size
    flops += 2 * head_in * (num_actions + 1)
    return flops


def set_input_mean(params: Params, mean: Any) -> Params:
    """``params`` with the torso's input offset replaced by ``mean`` float32 [C, H, W] in [0, 1]
    (``jax_reset.envs.demo_obs.demo_mean_observation``, or
    ``jax_reset.evaluation.envs.play_mean_observation``); for ``input_norm`` "demo_mean" or
    "play_mean"."""
    torso = dict(params["torso"])
    if INPUT_MEAN not in torso:
        raise ValueError("the network has no input offset: set network.input_norm = 'demo_mean' "
                         "or 'play_mean'")
    old = torso[INPUT_MEAN]
    mean = jnp.asarray(mean, jnp.float32)
    if mean.shape != old.shape:
        raise ValueError(f"input mean of shape {mean.shape}, the network takes {old.shape}")
    torso[INPUT_MEAN] = mean
    return {**params, "torso": torso}
