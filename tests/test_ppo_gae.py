"""GAE against an independent NumPy loop, with episode ends, cuts and invalid steps."""

import jax
import numpy as np
import pytest

from jax_reset.ppo.gae import gae


def gae_reference(reward, value, done, cut, bootstrap, gamma, lam):
    """Plain per-environment loop, written from the rules, not from the JAX code."""
    t_len, n = reward.shape
    adv = np.zeros((t_len, n), np.float64)
    for b in range(n):
        next_adv, next_value = 0.0, float(bootstrap[b])
        for t in reversed(range(t_len)):
            if cut[t, b]:
                # Step into a cut: no signal, and nothing flows across it.
                adv[t, b] = 0.0
            elif done[t, b]:
                adv[t, b] = reward[t, b] - value[t, b]
            else:
                delta = reward[t, b] + gamma * next_value - value[t, b]
                adv[t, b] = delta + gamma * lam * next_adv
            next_adv, next_value = adv[t, b], value[t, b]
    return adv, adv + value


_gae = jax.jit(gae, static_argnums=(5, 6))


@pytest.mark.parametrize("seed", range(4))
def test_gae_matches_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    shape = (37, 6)
    reward = rng.normal(size=shape).astype(np.float32)
    value = rng.normal(size=shape).astype(np.float32)
    done = rng.random(shape) < 0.1
    cut = rng.random(shape) < 0.08
    cut[-1, 0] = True  # a cut on the last step: bootstrap must not leak in
    done[-1, 1] = True
    bootstrap = rng.normal(size=shape[1]).astype(np.float32)
    gamma, lam = (0.999, 0.95) if seed % 2 == 0 else (0.9, 0.5)
    adv, target = _gae(reward, value, done, cut, bootstrap, gamma, lam)
    adv_ref, target_ref = gae_reference(reward, value, done, cut, bootstrap, gamma, lam)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, target_ref, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[cut] == 0.0)
    np.testing.assert_array_equal(np.asarray(target)[cut], value[cut])


def test_gae_no_ends_is_discounted_td_sum():
    """lambda = 1, no ends: A[t] = sum_k gamma^k r[t+k] + gamma^(T-t) V[T] - V[t]."""
    rng = np.random.default_rng(7)
    t_len = 10
    reward = rng.normal(size=(t_len, 1)).astype(np.float32)
    value = rng.normal(size=(t_len, 1)).astype(np.float32)
    no = np.zeros((t_len, 1), bool)
    boot = np.array([0.7], np.float32)
    adv, _ = _gae(reward, value, no, no, boot, 0.9, 1.0)
    for t in range(t_len):
        ret = sum(0.9**k * reward[t + k, 0] for k in range(t_len - t)) + 0.9 ** (t_len - t) * 0.7
        np.testing.assert_allclose(adv[t, 0], ret - value[t, 0], rtol=1e-5, atol=1e-5)


def test_nothing_flows_back_across_an_episode_end():
    """An ended episode's advantages do not depend on anything after its end."""
    rng = np.random.default_rng(3)
    shape = (12, 2)
    reward = rng.normal(size=shape).astype(np.float32)
    value = rng.normal(size=shape).astype(np.float32)
    done = np.zeros(shape, bool)
    done[5] = True
    cut = np.zeros(shape, bool)
    boot = np.zeros(2, np.float32)
    adv1, _ = _gae(reward, value, done, cut, boot, 0.99, 0.95)
    reward2, value2 = reward.copy(), value.copy()
    reward2[6:] += 100.0
    value2[6:] -= 50.0
    adv2, _ = _gae(reward2, value2, done, cut, boot + 9.0, 0.99, 0.95)
    np.testing.assert_allclose(np.asarray(adv1)[:6], np.asarray(adv2)[:6], rtol=1e-6)
