"""The actor-critic: shapes, logit scaling, recurrent resets, scan == step-by-step, warm-up."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_reset.networks import forward_flops, init_carry, init_params, make_network
from jax_reset.ppo.synthetic import TINY_OBS_SHAPE, tiny_network_config
from jax_reset.ppo.warmup import make_warmup_fn

A = 5


def build(core="lstm", **kw):
    cfg = tiny_network_config(core, **kw)
    net = make_network(cfg, A)
    params = init_params(net, jax.random.key(0), TINY_OBS_SHAPE)
    return cfg, net, params


@functools.cache
def jitted_apply(net, evaluate=False):
    return jax.jit(lambda p, *a: net.apply({"params": p}, *a, evaluate=evaluate))


def rand_obs(rng, t, b, shape=TINY_OBS_SHAPE):
    return rng.integers(0, 256, (t, b, *shape), dtype=np.uint8)


def rand_carry(rng, cfg, b):
    return jax.tree.map(lambda c: rng.normal(size=c.shape).astype(np.float32), init_carry(cfg, b))


@pytest.mark.parametrize("core", ["lstm", "gru", "none"])
def test_shapes_and_dtypes(core):
    cfg, net, params = build(core)
    rng = np.random.default_rng(0)
    t, b = 3, 2
    f = np.zeros((t, b), bool)
    carry, logits, value = jitted_apply(net)(params, rand_obs(rng, t, b), f, f, init_carry(cfg, b))
    assert logits.shape == (t, b, A) and logits.dtype == jnp.float32
    assert value.shape == (t, b) and value.dtype == jnp.float32
    assert jax.tree.map(jnp.shape, carry) == jax.tree.map(jnp.shape, init_carry(cfg, b))
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(value))


def test_entropy_boost_halves_and_evaluation_doubles_the_logits():
    cfg, net, params = build("lstm")
    rng = np.random.default_rng(2)
    obs = rand_obs(rng, 2, 4)
    start = np.zeros((2, 4), bool)
    boost = np.array([[True, False, True, False]] * 2)
    c = init_carry(cfg, 4)
    _, plain, v0 = jitted_apply(net)(params, obs, start, np.zeros_like(boost), c)
    _, boosted, v1 = jitted_apply(net)(params, obs, start, boost, c)
    _, evald, _ = jitted_apply(net, True)(params, obs, start, np.zeros_like(boost), c)
    np.testing.assert_allclose(boosted, np.where(boost[..., None], 0.5, 1.0) * plain, rtol=1e-6)
    np.testing.assert_allclose(evald, 2.0 * np.asarray(plain), rtol=1e-6)
    np.testing.assert_allclose(v0, v1)  # the flag changes the policy only


def test_bfloat16_torso_is_close_to_float32():
    cfg, net, params = build("lstm")
    _, net16, _ = build("lstm", compute_dtype="bfloat16")
    rng = np.random.default_rng(3)
    obs, f = rand_obs(rng, 2, 3), np.zeros((2, 3), bool)
    _, lg, _ = jitted_apply(net)(params, obs, f, f, init_carry(cfg, 3))
    _, lg16, v16 = jitted_apply(net16)(params, obs, f, f, init_carry(cfg, 3))
    assert lg16.dtype == jnp.float32 and v16.dtype == jnp.float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    np.testing.assert_allclose(lg16, lg, atol=2e-2)


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_scan_equals_step_by_step_with_resets(core):
    """Burn-in: the state reached by one scan over S steps equals stepping one at a time."""
    cfg, net, params = build(core)
    rng = np.random.default_rng(4)
    s, b = 11, 3
    obs = rand_obs(rng, s, b)
    start = rng.random((s, b)) < 0.25
    boost = rng.random((s, b)) < 0.5
    carry0 = rand_carry(rng, cfg, b)
    start_carry = jax.tree.map(
        lambda c: rng.normal(size=(s, *c.shape)).astype(np.float32), init_carry(cfg, b)
    )
    apply = jitted_apply(net)
    carry_scan, logits_scan, value_scan = apply(params, obs, start, boost, carry0, start_carry)
    carry = carry0
    for t in range(s):
        sc = jax.tree.map(lambda x, t=t: x[t : t + 1], start_carry)
        carry, lg, v = apply(params, obs[t : t + 1], start[t : t + 1], boost[t : t + 1], carry, sc)
        np.testing.assert_allclose(lg[0], logits_scan[t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v[0], value_scan[t], rtol=1e-5, atol=1e-5)
    for a, b_ in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_scan), strict=True):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)


def test_episode_start_resets_the_state():
    cfg, net, params = build("lstm")
    rng = np.random.default_rng(5)
    obs = rand_obs(rng, 4, 2)
    start = np.zeros((4, 2), bool)
    start[2] = True
    f = np.zeros((4, 2), bool)
    apply = jitted_apply(net)
    _, lg_a, _ = apply(params, obs, start, f, rand_carry(rng, cfg, 2))
    _, lg_b, _ = apply(params, obs, start, f, rand_carry(rng, cfg, 2))
    assert not np.allclose(lg_a[:2], lg_b[:2])  # before the reset the entering state matters
    np.testing.assert_allclose(lg_a[2:], lg_b[2:], rtol=1e-6)  # from the reset on it does not
    # ... and from a fresh zero state the tail is the same as a new sequence.
    _, lg_c, _ = apply(params, obs[2:], start[2:], f[2:], init_carry(cfg, 2))
    np.testing.assert_allclose(lg_a[2:], lg_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("core", ["lstm", "none"])
def test_warm_up_equals_stepping_the_valid_observations(core):
    cfg, net, params = build(core)
    rng = np.random.default_rng(6)
    b, length = 3, 7
    obs = rng.integers(0, 256, (b, length, *TINY_OBS_SHAPE), dtype=np.uint8)
    mask = np.ones((b, length), bool)
    mask[0, 5:] = False  # right-padded (shorter demo)
    mask[1, :2] = False  # left-padded
    mask[2, :] = False  # nothing: zero state
    carry = make_warmup_fn(net)(params, obs, mask)
    apply = jitted_apply(net)
    for i in range(b):
        c = init_carry(cfg, 1)
        f = np.zeros((1, 1), bool)
        for t in np.flatnonzero(mask[i]):
            c, _, _ = apply(params, obs[i : i + 1, t][None], f, f, c)
        for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(c), strict=True):
            np.testing.assert_allclose(got[i : i + 1], want, rtol=1e-5, atol=1e-6)


def test_forward_flops_of_the_reference_network():
    """~110 MFLOP per 105x80x12 sample for the reference (cpu-costs.md)."""
    from jax_reset.networks import NetworkConfig

    flops = forward_flops(NetworkConfig(), (12, 105, 80), 18)
    assert 90e6 < flops < 130e6


def test_demo_mean_input_norm_subtracts_the_offset_and_is_not_trained():
    """input_norm = "demo_mean": the torso sees frames minus the offset, which no loss moves."""
    from jax_reset.networks import INPUT_MEAN, set_input_mean
    from jax_reset.ppo.losses import l2_penalty

    rng = np.random.default_rng(0)
    _, net_plain, params = build()
    _, net_norm, params_norm = build(input_norm="demo_mean")
    assert params_norm["torso"][INPUT_MEAN].shape == TINY_OBS_SHAPE
    mean = rng.uniform(0, 1, TINY_OBS_SHAPE).astype(np.float32)
    params_norm = set_input_mean(params_norm, mean)
    # Same weights otherwise (same init key): the offset network on obs equals the plain one on
    # obs - 255 * mean (the torso scales its input by 1/255 either way).
    assert l2_penalty(params_norm) == pytest.approx(float(l2_penalty(params)), rel=1e-6)
    obs = rand_obs(rng, 2, 3).astype(np.float32)
    a = net_norm.apply({"params": params_norm}, jnp.asarray(obs), method=net_norm.encode)
    b = net_plain.apply({"params": params}, jnp.asarray(obs - 255.0 * mean),
                        method=net_plain.encode)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    c = net_plain.apply({"params": params}, jnp.asarray(obs), method=net_plain.encode)
    assert float(np.abs(np.asarray(a) - np.asarray(c)).max()) > 1e-2  # the offset matters
    grad = jax.grad(lambda p: net_norm.apply({"params": p}, jnp.asarray(obs),
                                             method=net_norm.encode).sum())(params_norm)
    assert float(np.abs(np.asarray(grad["torso"][INPUT_MEAN])).max()) == 0.0
    with pytest.raises(ValueError, match="input_norm"):
        set_input_mean(params, mean)
    with pytest.raises(ValueError, match="shape"):
        set_input_mean(params_norm, mean[:1])


@pytest.mark.parametrize("with_start_and_mask", [True, False])
def test_lstm_core_equals_flax_optimized_lstm_cell(with_start_and_mask):
    """The LSTM core with its input projection out of the scan is flax's ``OptimizedLSTMCell``
    scanned step by step: the same parameters (names, shapes, initial values), outputs and
    gradients (of the parameters, the entering state and the inputs) equal at float32 1e-5,
    with resets, start states and a step mask."""
    from jax_reset.networks import model

    t, b, d, h = 12, 5, 32, 16
    keys = jax.random.split(jax.random.key(3), 6)
    x = jax.random.normal(keys[0], (t, b, d))
    reset = jax.random.bernoulli(keys[1], 0.2, (t, b))
    start = (jax.random.normal(keys[2], (t, b, h)), jax.random.normal(keys[3], (t, b, h)))
    mask = jax.random.bernoulli(keys[4], 0.8, (t, b))
    carry = (jax.random.normal(keys[5], (b, h)), jax.random.normal(keys[0], (b, h)))
    rest = (reset, start, mask) if with_start_and_mask else (reset, None, None)
    fast, plain = model._LSTMCore(h), model._ScanCell("lstm", h)
    params = fast.init(jax.random.key(1), carry, (x, *rest))
    assert jax.tree.all(jax.tree.map(jnp.array_equal, params,
                                     plain.init(jax.random.key(1), carry, (x, *rest))))

    def loss(core, p, c, inputs):
        (c_end, h_end), y = core.apply(p, c, (inputs, *rest))
        return jnp.sum(y ** 2) + jnp.sum(0.3 * c_end) + jnp.sum(h_end), y

    grad = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)
    (loss_fast, y_fast), g_fast = grad(fast, params, carry, x)
    (loss_plain, y_plain), g_plain = grad(plain, params, carry, x)
    np.testing.assert_allclose(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss_fast, loss_plain, rtol=1e-5)
    for a, b_ in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)
