"""The pool's plain mode against the real EnvPool: same actions, same frames and rewards."""

from __future__ import annotations

import envpool
import numpy as np
import pytest

from jax_reset.envs import AtariPool, EnvConfig


def _compare(game: str, cfg: EnvConfig, num_envs: int, steps: int, seed: int = 0) -> dict:
    # The evaluation's own mapping of EnvConfig onto EnvPool (jax_reset.evaluate uses it too).
    ref = envpool.make(f"{game}-v5", env_type="gym", num_envs=num_envs, batch_size=num_envs,
                       num_threads=1, seed=seed, **cfg.envpool_kwargs(game))
    rng = np.random.default_rng(seed)
    stats = {"ends": 0, "stale_obs_skipped": 0, "nonzero_rewards": 0}
    with AtariPool(game, num_envs, 2, config=cfg, seed=seed) as pool:
        ref_obs, _ = ref.reset()
        out = pool.reset()
        np.testing.assert_array_equal(out.obs, ref_obs)
        prev_frame = out.frame
        for t in range(steps):
            actions = rng.integers(0, pool.num_actions, num_envs).astype(np.int32)
            ref_obs, ref_rew, ref_term, ref_trunc, info = ref.step(actions)
            out = pool.step(actions)
            np.testing.assert_array_equal(out.raw_reward, ref_rew, err_msg=f"step {t}")
            np.testing.assert_array_equal(out.done, ref_term, err_msg=f"step {t}")
            np.testing.assert_array_equal(out.cut, ref_trunc, err_msg=f"step {t}")
            np.testing.assert_array_equal(out.lives, info["lives"], err_msg=f"step {t}")
            # Documented difference: when the game ends before the second-to-last frame of a
            # skip, EnvPool returns the previous observation; the pool returns the last frame.
            ran = out.frame - prev_frame
            stale = out.game_over & ~out.episode_start & (ran < cfg.frame_skip - 1)
            same = ~stale
            np.testing.assert_array_equal(out.obs[same], ref_obs[same], err_msg=f"step {t}")
            stats["ends"] += int(out.ended.sum())
            stats["stale_obs_skipped"] += int(stale.sum())
            stats["nonzero_rewards"] += int((out.raw_reward != 0).sum())
            prev_frame = out.frame
    ref.close()
    return stats


def test_pong_rgb_105x80_matches_envpool() -> None:
    cfg = EnvConfig(reward_clip=False, fire_reset=False, autoreset="next_step")
    stats = _compare("Pong", cfg, num_envs=4, steps=300)
    assert stats["nonzero_rewards"] > 0  # the points scored were compared too


def test_montezuma_episodic_life_matches_envpool() -> None:
    cfg = EnvConfig(reward_clip=False, fire_reset=False, autoreset="next_step", episodic_life=True)
    stats = _compare("MontezumaRevenge", cfg, num_envs=4, steps=400, seed=3)
    assert stats["ends"] > 0  # life losses and their resets were compared


@pytest.mark.parametrize("game", ["Pong"])
def test_gray_84x84_fire_reset_matches_envpool(game: str) -> None:
    cfg = EnvConfig(
        img_height=84,
        img_width=84,
        gray_scale=True,
        reward_clip=False,
        fire_reset=True,
        autoreset="next_step",
        max_episode_steps=100,  # time-limit cuts, and the FIRE resets after them, compared too
    )
    stats = _compare(game, cfg, num_envs=2, steps=150, seed=1)
    assert stats["nonzero_rewards"] > 0  # the points scored were compared
    assert stats["ends"] > 0
