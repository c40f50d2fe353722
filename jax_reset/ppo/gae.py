"""Generalised advantage estimation with episode ends, cuts and invalid steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    reward: jax.Array,
    value: jax.Array,
    done: jax.Array,
    cut: jax.Array,
    bootstrap_value: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets over a rollout, computed backwards with ``lax.scan``.

    Args:
      reward: ``[T, B]`` reward for the action at step t.
      value: ``[T, B]`` behaviour value of obs[t].
      done: ``[T, B]`` bool, the episode truly ended after step t.
      cut: ``[T, B]`` bool, the episode was cut after step t (not a real terminal).
      bootstrap_value: ``[B]`` value of the observation after step T-1.
      gamma, gae_lambda: discount and GAE lambda.

    Returns:
      ``(advantage, target)``, both ``[T, B]`` float32, with ``V[T] = bootstrap_value``:

        cut[t]:   A[t] = 0                                   (and nothing flows from t+1)
        else:     nt = 1 - done[t]
                  delta = r[t] + gamma * nt * V[t+1] - V[t]
                  A[t] = delta + gamma * lambda * nt * A[t+1]        (A[T] = 0)
        target[t] = A[t] + V[t]   (so a cut step's target is its own value: no target learned)

      Invalid steps are computed like any other (callers mask them out of losses); episode
      boundaries are expressed only by done/cut, so an invalid step never leaks across them.
    """
    reward = reward.astype(jnp.float32)
    value = value.astype(jnp.float32)
    next_values = jnp.concatenate([value[1:], bootstrap_value[None].astype(jnp.float32)], axis=0)

    def step(next_adv: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        r, v, nv, d, c = xs
        nonterminal = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * nonterminal * nv - v
        adv = delta + gamma * gae_lambda * nonterminal * next_adv
        adv = jnp.where(c, 0.0, adv)
        return adv, adv

    _, advantage = jax.lax.scan(
        step,
        jnp.zeros_like(bootstrap_value, jnp.float32),
        (reward, value, next_values, done, cut),
        reverse=True,
    )
    return advantage, advantage + value
