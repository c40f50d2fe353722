"""The CPU convolution (``CpuConv``: XLA's forward pass, the matmul form's backward pass) is
``nn.Conv`` with VALID padding: the same parameters, the same outputs, the same gradients (float32,
to rounding) for the CPU job's shapes, the reference's and sizes that are not a multiple of the
stride; and the whole actor-critic gives the same loss and gradients either way."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_reset.networks import NetworkConfig, init_carry, init_params, make_network
from jax_reset.networks import model as model_lib
from jax_reset.networks.model import CpuConv, _conv_matmul, conv_valid_cpu, conv_valid_xla

ATOL = 1e-5
RTOL = 1e-5

# (H, W, C_in, kernel, stride, C_out)
CPU_JOB = [(64, 48, 4, 8, 4, 16), (15, 11, 16, 4, 2, 32), (6, 4, 32, 3, 1, 32)]
REFERENCE = [(84, 84, 4, 8, 4, 64), (20, 20, 64, 4, 2, 128), (9, 9, 128, 3, 1, 128)]
ODD = [
    (105, 80, 12, 8, 4, 64),  # the default 105x80 frames: one row is never read
    (67, 53, 3, 8, 4, 5),  # neither side a multiple of the stride
    (13, 9, 3, 3, 2, 4),  # kernel not a multiple of the stride (zero-padded kernel)
    (11, 10, 6, 5, 3, 7),
    (10, 10, 2, 2, 2, 3),  # one-tap kernel after space-to-depth
    (5, 7, 3, 1, 1, 2),
]
SHAPES = CPU_JOB + REFERENCE + ODD


def _inputs(shape, batch=2, seed=0):
    h, w, c, k, s, o = shape
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((batch, h, w, c)), jnp.float32)  # like frames / 255
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    # Cotangent scaled so that the gradients are O(1) whatever the size.
    g = jnp.asarray(rng.normal(size=(batch, oh, ow, o)) / math.sqrt(batch * oh * ow),
                    jnp.float32)
    return x, g


def _modules(shape):
    _, _, _, k, s, o = shape
    init = nn.initializers.orthogonal(math.sqrt(2.0))  # the torso's
    plain = nn.Conv(o, (k, k), (s, s), padding="VALID", kernel_init=init,
                    dtype=jnp.float32, param_dtype=jnp.float32)
    fast = CpuConv(o, k, s, kernel_init=init, dtype=jnp.float32)
    return plain, fast


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_conv_matches_nn_conv(shape):
    x, g = _inputs(shape)
    plain, fast = _modules(shape)
    key = jax.random.key(1)
    p_plain = plain.init(key, x)["params"]
    p_fast = fast.init(key, x)["params"]
    # Same parameter names, shapes, dtypes and initial values: checkpoints load either way.
    assert jax.tree.structure(p_plain) == jax.tree.structure(p_fast)
    for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_fast), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Give the bias a value so that its gradient path is exercised with a non-zero output.
    params = jax.tree.map(lambda p: p + 0.01, p_plain)

    def vjp(module):
        y, back = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
        return y, back(g)

    y_plain, (dp_plain, dx_plain) = jax.jit(lambda: vjp(plain))()
    y_fast, (dp_fast, dx_fast) = jax.jit(lambda: vjp(fast))()
    # The forward pass is the same XLA convolution: equal, not merely close.
    np.testing.assert_array_equal(np.asarray(y_plain), np.asarray(y_fast))
    np.testing.assert_allclose(dx_fast, dx_plain, rtol=RTOL, atol=ATOL)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(dp_fast[name], dp_plain[name], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", CPU_JOB + ODD[:3], ids=lambda s: "x".join(map(str, s)))
def test_matmul_form_forward(shape):
    """The formulation the backward pass differentiates computes the convolution itself."""
    _, _, c, k, s, o = shape
    x, _ = _inputs(shape)
    kernel = jnp.asarray(np.random.default_rng(2).normal(size=(k, k, c, o)) / (k * math.sqrt(c)),
                         jnp.float32)
    np.testing.assert_allclose(jax.jit(_conv_matmul, static_argnums=2)(x, kernel, s),
                               conv_valid_xla(x, kernel, s), rtol=RTOL, atol=ATOL)


def test_cpu_conv_under_vmap_and_bfloat16():
    x, g = _inputs(CPU_JOB[1])
    kernel = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 16, 32)) * 0.1, jnp.float32)
    dk = jax.vmap(lambda x, g: jax.vjp(lambda k: conv_valid_cpu(x[None], k, 2), kernel)[1](
        g[None])[0])(x, g)
    dk_ref = jax.vmap(lambda x, g: jax.vjp(lambda k: conv_valid_xla(x[None], k, 2), kernel)[1](
        g[None])[0])(x, g)
    np.testing.assert_allclose(dk, dk_ref, rtol=RTOL, atol=ATOL)
    xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    y, back = jax.vjp(lambda x, k: conv_valid_cpu(x, k, 2), xb, kb)
    assert y.dtype == jnp.bfloat16
    dxb, dkb = back(g.astype(jnp.bfloat16))
    assert dxb.dtype == dkb.dtype == jnp.bfloat16


def test_actor_critic_same_loss_and_gradients(monkeypatch):
    """The CPU job's network (configs/cpu.toml's sizes), both ways."""
    obs = (4, 64, 48)
    cfg = NetworkConfig(conv_channels=(16, 32, 32), dense_size=256, core_size=128,
                        input_norm="demo_mean")
    rng = np.random.default_rng(4)
    t, b = 5, 3
    frames = jnp.asarray(rng.integers(0, 256, (t, b, *obs), dtype=np.uint8))
    start = jnp.asarray(rng.random((t, b)) < 0.3)
    boost = jnp.asarray(rng.random((t, b)) < 0.3)
    mean = rng.random(obs).astype(np.float32) * 0.5
    out = {}
    for impl in ("xla", "matmul"):
        monkeypatch.setenv(model_lib.CONV_IMPL_ENV, impl)
        net = make_network(cfg, 6)
        params = init_params(net, jax.random.key(0), obs)
        params = model_lib.set_input_mean(params, mean)

        def loss(p, net=net):
            _, logits, value = net.apply({"params": p}, frames, start, boost, init_carry(cfg, b))
            return jnp.sum(jnp.square(logits)) + jnp.sum(value)

        out[impl] = (params, jax.jit(jax.value_and_grad(loss))(params))
    (p_x, (l_x, g_x)), (p_m, (l_m, g_m)) = out["xla"], out["matmul"]
    assert jax.tree.structure(p_x) == jax.tree.structure(p_m)
    for a, c in zip(jax.tree.leaves(p_x), jax.tree.leaves(p_m), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert float(l_x) == float(l_m)  # same forward pass
    for a, c in zip(jax.tree.leaves(g_x), jax.tree.leaves(g_m), strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(a))))
        np.testing.assert_allclose(c, a, rtol=RTOL, atol=ATOL * scale)


def test_conv_impl_choice(monkeypatch):
    monkeypatch.delenv(model_lib.CONV_IMPL_ENV, raising=False)
    assert model_lib.conv_impl() == ("matmul" if jax.default_backend() == "cpu" else "xla")
    monkeypatch.setenv(model_lib.CONV_IMPL_ENV, "xla")
    assert model_lib.conv_impl() == "xla"
    monkeypatch.setenv(model_lib.CONV_IMPL_ENV, "fast")
    with pytest.raises(ValueError, match="JAX_RESET_CONV"):
        model_lib.conv_impl()


@pytest.mark.parametrize("n,chunk", [(2 * 4 + 3, 4), (3 * 4, 4), (3, 4), (7, 3)])
@pytest.mark.parametrize("with_mean", [True, False])
def test_first_conv_in_chunks_matches_the_plain_one(n, chunk, with_mean):
    """``conv_frames_cpu`` (the frames scaled and convolved a chunk at a time, the kernel's
    gradient summed over chunks) is XLA's convolution of the scaled frames: outputs equal up to
    the convolution's rounding, the kernel's gradient to 1e-5, for batches that are a multiple
    of the chunk, are not, or are smaller than one."""
    rng = np.random.default_rng(5)
    frames = jnp.asarray(rng.integers(0, 256, (n, 4, 64, 48), dtype=np.uint8))
    mean = jnp.asarray(rng.random((4, 64, 48)), jnp.float32) * 0.5 if with_mean else None
    kernel = jnp.asarray(rng.normal(size=(8, 8, 4, 16)) / 16, jnp.float32)
    g = jnp.asarray(rng.normal(size=(n, 15, 11, 16)) / math.sqrt(n * 165), jnp.float32)

    def plain(k):
        return conv_valid_xla(model_lib.scale_frames(frames, mean, jnp.float32), k, 4)

    def chunked(k):
        return model_lib.conv_frames_cpu(frames, mean, k, 4, jnp.float32, chunk)

    y_plain, back_plain = jax.vjp(plain, kernel)
    y_fast, back_fast = jax.jit(lambda k: jax.vjp(chunked, k))(kernel)
    np.testing.assert_allclose(y_fast, y_plain, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(back_fast(g)[0], back_plain(g)[0], rtol=RTOL, atol=ATOL)
    if with_mean:  # the mean is a constant: no gradient, and not in the way of one
        dmean = jax.grad(lambda m: jnp.vdot(model_lib.conv_frames_cpu(
            frames, m, kernel, 4, jnp.float32, chunk), g))(mean)
        assert not np.any(np.asarray(dmean))
