"""Demo-state restores and the curriculum's per-frame episode rules, on the real demos."""

from __future__ import annotations

import numpy as np
import pytest

from jax_reset import demos
from jax_reset.envs import AtariPool, DemoResetConfig, EndReason

MONTEZUMA = "demos/MontezumaRevenge.npz"
PONG = "demos/Pong.npz"
PLAY_DEMO = -1  # the pool's action that plays the demo's own frame actions
RIGHT = 3  # Montezuma's minimal action set: NOOP, FIRE, UP, RIGHT, ...


@pytest.fixture(scope="module")
def demo() -> demos.Demo:
    return demos.load(MONTEZUMA)


@pytest.fixture(scope="module")
def pool():
    # start_noop_max=0: frame 0 is the game's reset itself (exact frame accounting below).
    with AtariPool(None, 4, 2, demo=DemoResetConfig(MONTEZUMA, start_noop_max=0), seed=7) as p:
        yield p


def _run_until_end(pool: AtariPool, env: int, action: int, max_steps: int):
    for _ in range(max_steps):
        out = pool.step(np.array([action]), [env])
        if out.ended[0]:
            return out
    raise AssertionError(f"no episode end in {max_steps} steps")


@pytest.mark.parametrize("path", [MONTEZUMA, "demos/Pong.npz"])
def test_restore_reproduces_demo_rewards_and_frames(path: str) -> None:
    demo = demos.load(path)
    returns = demo.returns
    rng = np.random.default_rng(0)
    late = rng.integers(200, demo.num_frames - 200, 3)
    frames = np.concatenate([[5], late])  # 5: before the first checkpoint, from the reset
    steps = 20
    with AtariPool(None, len(frames), 2, demo=DemoResetConfig(path), seed=1) as pool:
        out = pool.restore(None, frames, starting_points=frames)
        np.testing.assert_array_equal(out.frame, frames)
        np.testing.assert_array_equal(out.score, [returns[f - 1] for f in frames])
        assert out.episode_start.all()
        alive = np.ones(len(frames), bool)
        for k in range(steps):
            out = pool.step(np.full(len(frames), PLAY_DEMO))
            start = frames + 4 * k
            expected = np.array([demo.rewards[f : f + 4].sum() for f in start])
            # Pong's demo reaches its final score (5) at frame 14,005, long before its end (it
            # peaks at 6, then loses a point): starts after that are cut after the extra
            # frames. Follow the envs still in their episode.
            alive &= ~out.ended
            if path == MONTEZUMA:
                assert alive.all()
            a = alive
            np.testing.assert_array_equal(out.raw_reward[a], expected[a], err_msg=f"step {k}")
            np.testing.assert_array_equal(out.frame[a], start[a] + 4)
            np.testing.assert_array_equal(out.score[a], returns[start[a] + 3])
        assert alive.sum() >= 2
        # The step path and the restore path agree: a fresh restore at the frames reached
        # gives the same frame stacks.
        ids = np.flatnonzero(alive)
        again = pool.restore(ids, out.frame[ids])
        np.testing.assert_array_equal(again.obs, out.obs[ids])


def test_score_starts_at_demo_score_before_the_start_frame(pool, demo) -> None:
    first_reward = int(np.flatnonzero(demo.rewards)[0])  # 360: reward of executing a[360]
    out = pool.restore([0, 1], [first_reward, first_reward + 1])
    # At frame 360 the reward of a[360] is still to come (the reference counted it already).
    np.testing.assert_array_equal(out.score, [0.0, demo.rewards[first_reward]])


def test_lagging_the_demo_ends_the_episode(pool, demo) -> None:
    first_reward = int(np.flatnonzero(demo.rewards)[0])
    start = first_reward - 60
    pool.restore([0], [start], starting_points=[start])
    out = _run_until_end(pool, 0, action=0, max_steps=100)  # NOOP: no points
    assert out.end_reason[0] == EndReason.LAG and out.done[0] and not out.cut[0]
    # Ends at the first frame f with score < R[f - 50]: f - 50 = the demo's reward frame.
    assert out.ep_end_frame[0] == first_reward + 50
    assert out.ep_start_frame[0] == start and out.ep_starting_point[0] == start
    assert out.ep_score[0] == 0.0 and not out.ep_as_good_as_demo[0]


def test_reaching_the_demo_score_cuts_after_extra_frames(pool, demo) -> None:
    last_reward = int(np.flatnonzero(demo.rewards)[-1])
    start = last_reward - 40
    pool.restore([1], [start], starting_points=[start])
    out = _run_until_end(pool, 1, action=PLAY_DEMO, max_steps=400)
    assert out.end_reason[0] == EndReason.DEMO_SCORE_CUT
    assert out.cut[0] and not out.done[0]
    assert out.ep_as_good_as_demo[0] and out.ep_score[0] == demo.score
    # The countdown starts on the frame that reaches the score, e = int(exp(7 U)) frames.
    extra = out.ep_end_frame[0] - (last_reward + 1) + 1
    assert 1 <= extra <= int(np.exp(7.0))


def test_an_episode_from_the_game_start_begins_as_a_plain_reset() -> None:
    # U{1..2} reset frames, the last FIRE (Pong's fire reset): a 1-frame start is exactly the
    # plain evaluation protocol's first observation, so that start is one training practises.
    demo = DemoResetConfig(PONG, start_noop_max=2)
    with AtariPool(None, 4, 1, demo=demo, seed=3) as pool, AtariPool("Pong", 1, 1) as plain:
        first = plain.reset()
        assert first.frame[0] == 1 and first.reset_frames[0] == 1
        by_frames = {}
        for _ in range(6):
            out = pool.restore(None, [0] * 4, starting_points=[0] * 4)
            np.testing.assert_array_equal(out.reset_frames, out.frame)
            assert out.episode_start.all() and (out.score == 0).all()
            for i in range(4):
                by_frames.setdefault(int(out.frame[i]), out.obs[i])
        assert sorted(by_frames) == [1, 2]
        np.testing.assert_array_equal(by_frames[1], first.obs[0])
        assert not np.array_equal(by_frames[2], first.obs[0])
        # The episode still started at the demo's frame 0, for the curriculum.
        out = _run_until_end(pool, 0, action=0, max_steps=400)  # NOOP: lags the demo
        assert out.ep_start_frame[0] == 0 and out.end_reason[0] == EndReason.LAG


@pytest.mark.parametrize("run_on", [False, True])
def test_an_episode_from_the_game_start_plays_on_after_the_demo_score(run_on: bool) -> None:
    # The demo's own actions from the game's reset replay its game: the demo's final score (5)
    # is reached at frame 14,005. The 2018 rule cuts such an episode within ~1,100 frames;
    # run_on_from_start lets it play on, here to the demo's end and beyond, where the replayed
    # game loses a point and so lags the demo's final score.
    final = demos.load(PONG).returns[-1]
    reached = int(np.flatnonzero(demos.load(PONG).returns >= final)[0]) + 1
    demo = DemoResetConfig(PONG, start_noop_max=0, run_on_from_start=run_on)
    with AtariPool(None, 1, 1, demo=demo, seed=3) as pool:
        pool.restore([0], [0], starting_points=[0])
        out = _run_until_end(pool, 0, action=PLAY_DEMO, max_steps=8000)
    assert out.ep_as_good_as_demo[0]  # it reached the demo's score: success either way
    if run_on:
        assert out.end_reason[0] == EndReason.LAG and out.done[0]
        assert out.ep_end_frame[0] > reached + int(np.exp(7.0)) + 5000
    else:
        assert out.end_reason[0] == EndReason.DEMO_SCORE_CUT and out.cut[0]
        assert reached <= out.ep_end_frame[0] <= reached + int(np.exp(7.0))


def test_life_loss_ends_episode_and_next_start_frame_is_used(pool) -> None:
    out = pool.restore([2], [0], starting_points=[0])  # frame 0: the game's reset
    assert out.reset_frames[0] == 0 and out.step_frames[0] == 0  # reset_game() only
    pool.set_start_frames([2], [5000])  # the start of the episode after this one
    frames_run = 0
    for _ in range(50):  # RIGHT: walks off the platform
        out = pool.step(np.array([RIGHT]), [2])
        frames_run += int(out.step_frames[0])
        if out.ended[0]:
            break
        assert out.step_frames[0] == 4 and out.reset_frames[0] == 0
    assert out.end_reason[0] == EndReason.LIFE_LOSS and out.done[0]
    assert out.ep_end_frame[0] == 33  # mid-skip: the skip stops at the dying frame
    # Exact frame accounting: 8 full skips and 1 frame; the restore at 5000 is counted apart.
    assert frames_run == 33 and out.step_frames[0] == 1
    assert 0 < out.reset_frames[0] <= 16 + 4 * 3 + 1
    # Autoreset "same_step": the returned observation is already the next episode's first.
    assert out.episode_start[0] and out.frame[0] == 5000
    fresh = pool.restore([2], [5000])
    np.testing.assert_array_equal(fresh.obs, out.obs)


def test_entropy_boost_is_the_first_frame_of_the_step_with_the_current_starting_point() -> None:
    """The 2018 wrapper (atari_reset/wrappers.py, ReplayResetEnv.step) sets the flag after every
    emulator frame whose index is below sp + 100, with the env's current sp, and the frame skip
    ORs it over the step's frames: a step is boosted when its first frame is below sp + 100."""
    sp = 3000  # Pong: the demo's score stays below its final 5 here (no cut), no lives to lose
    with AtariPool(None, 1, 1, demo=DemoResetConfig("demos/Pong.npz"), seed=0) as pool:
        out = pool.restore([0], [sp], starting_points=[sp])
        flags = [bool(out.entropy_boost[0])]  # the start frame itself: sp < sp + 100
        for _ in range(30):
            out = pool.step(np.array([PLAY_DEMO]))
            assert not out.ended[0]
            flags.append(bool(out.entropy_boost[0]))
        # Step k runs frames sp + 4k - 3 .. sp + 4k: its first frame is below sp + 100 up to
        # k = 25, which ends at frame sp + 100 itself (the last frame's rule would say no).
        assert flags == [4 * k - 3 < 100 for k in range(31)]
        assert flags[25] and not flags[26]
        # The curriculum moves sp mid-episode: the next step's flag follows the new sp at once.
        out = pool.restore([0], [sp], starting_points=[sp])
        for _ in range(5):
            assert pool.step(np.array([PLAY_DEMO])).entropy_boost[0]  # first frames < sp + 20
        pool.set_starting_points([0], [sp - 100])
        out = pool.step(np.array([PLAY_DEMO]))  # first frame sp + 21 >= (sp - 100) + 100
        assert not out.entropy_boost[0] and not out.episode_start[0]
        pool.set_starting_points([0], [sp])
        assert pool.step(np.array([PLAY_DEMO])).entropy_boost[0]  # sp + 25 < sp + 100


def test_restore_cost_is_a_few_milliseconds(pool) -> None:
    import time

    frames = np.array([1000, 20_000, 40_000, 52_000])
    pool.restore(None, frames)
    t0 = time.perf_counter()
    for _ in range(5):
        pool.restore(None, frames)
    per_env_ms = (time.perf_counter() - t0) / 20 * 1e3
    print(f"restore: {per_env_ms:.2f} ms per env")
    assert per_env_ms < 50  # generous: the machine is shared; typically ~5 ms
