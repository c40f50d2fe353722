"""Each PPO loss term against an independent NumPy reference (valid-step means, burn-in cut)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.data import TrainBatch, Transition
from jax_reset.ppo.losses import l2_penalty, normalize_advantages, ppo_loss

K, T, B, A = 3, 9, 5, 4
CFG = PPOConfig(rollout_steps=T, burn_in_steps=K, clip=0.1, ent_coef=0.01, vf_coef=0.5)


def fake_apply(params, obs, episode_start, entropy_boost, carry, start_carry):
    """A 'network' whose outputs are its parameters: lets the test set logits and values."""
    return carry, params["logits"], params["value"]


def make_case(seed):
    rng = np.random.default_rng(seed)
    s = K + T
    params = {
        "logits": rng.normal(size=(s, B, A)).astype(np.float32),
        "value": rng.normal(size=(s, B)).astype(np.float32),
    }
    z = np.zeros((s, B), bool)
    data = Transition(
        obs=np.zeros((s, B, 1, 1, 1), np.uint8),
        episode_start=z,
        entropy_boost=z,
        action=rng.integers(0, A, (s, B)).astype(np.int32),
        # Behaviour log-probs near the current ones so that some ratios fall inside the clip.
        logp=np.zeros((s, B), np.float32),
        value=(params["value"] + rng.normal(scale=0.15, size=(s, B))).astype(np.float32),
        reward=np.zeros((s, B), np.float32),
        done=z,
        cut=z,
        valid=rng.random((s, B)) > 0.25,
    )
    logp_all = params["logits"] - np.log(np.exp(params["logits"]).sum(-1, keepdims=True))
    cur = np.take_along_axis(logp_all, data.action[..., None], -1)[..., 0]
    data = data.replace(logp=(cur + rng.normal(scale=0.12, size=(s, B))).astype(np.float32))
    batch = TrainBatch(data=data, carry=(), bootstrap_value=np.zeros(B, np.float32))
    adv = rng.normal(size=(T, B)).astype(np.float32)
    target = rng.normal(size=(T, B)).astype(np.float32)
    return params, batch, adv, target


def reference_terms(params, batch, adv, target, cfg):
    d = batch.data
    logits = params["logits"][K:].astype(np.float64)
    value = params["value"][K:].astype(np.float64)
    mask = d.valid[K:]
    logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    logp = np.take_along_axis(logp_all, d.action[K:][..., None], -1)[..., 0]
    ratio = np.exp(logp - d.logp[K:])
    pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip))
    old_v = d.value[K:]
    v_clip = old_v + np.clip(value - old_v, -cfg.clip, cfg.clip)
    vf = 0.5 * np.maximum((value - target) ** 2, (v_clip - target) ** 2)
    ent = -(np.exp(logp_all) * logp_all).sum(-1)
    mean = lambda x: x[mask].mean()  # noqa: E731
    return {
        "policy_loss": mean(pg),
        "value_loss": mean(vf),
        "entropy": mean(ent),
        "approx_kl": mean(0.5 * (logp - d.logp[K:]) ** 2),
        "kl": mean(d.logp[K:] - logp),
        "clip_fraction": mean((np.abs(ratio - 1) > cfg.clip).astype(np.float64)),
    }


@pytest.mark.parametrize("seed", range(3))
def test_loss_terms_match_numpy(seed):
    params, batch, adv, target = make_case(seed)
    loss, metrics = jax.jit(ppo_loss, static_argnums=(1, 5))(
        params, fake_apply, batch, adv, target, CFG
    )
    ref = reference_terms(params, batch, adv, target, CFG)
    clip_frac = ref["clip_fraction"]
    assert 0.05 < clip_frac < 0.95, "test data should exercise both sides of the clip"
    for name, value in ref.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    expected = ref["policy_loss"] - CFG.ent_coef * ref["entropy"] + CFG.vf_coef * ref["value_loss"]
    np.testing.assert_allclose(loss, expected, rtol=2e-5, atol=1e-6)


def test_burn_in_and_invalid_steps_do_not_enter_the_loss():
    params, batch, adv, target = make_case(11)
    loss_fn = jax.jit(ppo_loss, static_argnums=(1, 5))
    loss, _ = loss_fn(params, fake_apply, batch, adv, target, CFG)
    grads = jax.grad(lambda p: loss_fn(p, fake_apply, batch, adv, target, CFG)[0])(params)
    # No gradient reaches the burn-in outputs or the invalid rollout steps.
    assert np.all(np.asarray(grads["logits"])[:K] == 0)
    assert np.all(np.asarray(grads["value"])[:K] == 0)
    invalid = ~batch.data.valid[K:]
    assert np.all(np.asarray(grads["logits"])[K:][invalid] == 0)
    # Scrambling them leaves the loss unchanged.
    p2 = jax.tree.map(np.array, params)
    p2["logits"][:K] += 5.0
    p2["logits"][K:][invalid] -= 3.0
    p2["value"][K:][invalid] += 7.0
    loss2, _ = loss_fn(p2, fake_apply, batch, adv, target, CFG)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)


def test_no_valid_step_gives_zero_not_nan():
    params, batch, adv, target = make_case(2)
    batch = batch.replace(data=batch.data.replace(valid=np.zeros_like(batch.data.valid)))
    loss, metrics = ppo_loss(params, fake_apply, batch, adv, target, CFG)
    assert float(loss) == 0.0 and all(np.isfinite(v) for v in metrics.values())


def test_value_clip_takes_the_max_of_clipped_and_unclipped():
    """Hand-worked: old 0, new 1, target 2, clip 0.1 -> max((1-2)^2, (0.1-2)^2) / 2 = 1.805."""
    _, batch, adv, _ = make_case(0)
    s = K + T
    params = {"logits": np.zeros((s, B, A), np.float32), "value": np.ones((s, B), np.float32)}
    d = batch.data.replace(
        value=np.zeros((s, B), np.float32),
        valid=np.ones((s, B), bool),
        logp=np.full((s, B), -np.log(A), np.float32),
    )
    cfg = dataclasses.replace(CFG, ent_coef=0.0)
    _, m = ppo_loss(params, fake_apply, batch.replace(data=d), adv, np.full((T, B), 2.0), cfg)
    np.testing.assert_allclose(m["value_loss"], 0.5 * 1.9**2, rtol=1e-6)
    np.testing.assert_allclose(m["policy_loss"], -adv.mean(), rtol=1e-5, atol=1e-6)


def test_normalize_advantages_over_valid_non_cut_steps():
    rng = np.random.default_rng(5)
    adv = rng.normal(loc=3.0, scale=2.0, size=(20, 6)).astype(np.float32)
    valid = rng.random((20, 6)) > 0.2
    cut = rng.random((20, 6)) < 0.1
    adv[cut] = 0.0
    out = np.asarray(normalize_advantages(jnp.asarray(adv), valid, cut))
    sel = valid & ~cut
    expected = (adv - adv[sel].mean()) / (adv[sel].std() + 1e-8)
    np.testing.assert_allclose(out[~cut], expected[~cut], rtol=1e-4, atol=1e-5)
    assert np.all(out[cut] == 0.0)


def test_l2_penalty_is_half_sum_of_squares():
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(3, 4)), "b": {"c": rng.normal(size=7)}}
    params = jax.tree.map(lambda x: x.astype(np.float32), params)
    expected = 0.5 * sum((x.astype(np.float64) ** 2).sum() for x in jax.tree.leaves(params))
    np.testing.assert_allclose(l2_penalty(params), expected, rtol=1e-6)


def test_runtime_ent_coef_scales_the_entropy_gradient_without_recompiling():
    """ent_coef as an input of the compiled loss: its gradient is grad(rest) - c * grad(H)."""
    params, batch, adv, target = make_case(4)

    def loss(p, ent_coef):
        return ppo_loss(p, fake_apply, batch, adv, target, CFG, None, ent_coef)

    grad_fn = jax.jit(jax.grad(lambda p, c: loss(p, c)[0]))
    grads = {c: np.asarray(grad_fn(params, np.float32(c))["logits"]) for c in (0.0, 0.1, 0.3)}
    assert grad_fn._cache_size() == 1  # one program for every coefficient
    entropy_part = grads[0.1] - grads[0.0]
    assert np.abs(entropy_part).max() > 1e-4  # the coefficient does act
    np.testing.assert_allclose(grads[0.3] - grads[0.0], 3 * entropy_part, rtol=1e-3, atol=1e-7)
    # The same value through the config (compiled in) gives the same loss and metrics.
    by_config = ppo_loss(params, fake_apply, batch, adv, target,
                         dataclasses.replace(CFG, ent_coef=0.3))
    by_input = jax.jit(loss)(params, np.float32(0.3))
    np.testing.assert_allclose(by_input[0], by_config[0], rtol=1e-6)
    np.testing.assert_allclose(by_input[1]["entropy"], by_config[1]["entropy"], rtol=1e-6)
