"""The curriculum controller: the reference rule against a literal re-telling of the 2018
ResetManager, the "episodes" rule on its own and against the reference where both must agree."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jax_reset import curriculum as cur
from jax_reset.curriculum import CurriculumConfig


class ReferenceResetManager:
    """The 2018 ResetManager's logic, step by step, with plain Python lists and dicts."""

    def __init__(self, starting_points: list[int]):
        self.points = list(starting_points)
        self.max_sp = max(self.points)
        self.nrstartsteps = self.max_sp - min(self.points)
        self.max_max_sp = self.max_sp
        self.success = np.zeros(self.max_sp + 10000, dtype=np.float64)
        self.counter = 0
        self.infos: list[tuple[int, bool]] = []

    def step(self, infos: list[tuple[int, bool]]) -> None:
        self.infos += infos
        self.counter += 1
        if (self.counter > (self.max_max_sp - self.max_sp) / 2 and self.counter % 1024 == 0):
            self.proc_infos()

    def proc_infos(self) -> None:
        wins: dict[int, int] = {}
        counts: dict[int, int] = {}
        for sp, good in self.infos:
            counts[sp] = counts.get(sp, 0) + 1
            wins[sp] = wins.get(sp, 0) + int(good)
        for sp in wins:
            self.success[sp] = wins[sp] / counts[sp]
        csd = np.argwhere(np.cumsum(self.success) / self.nrstartsteps >= 0.2)
        new_max = csd[0][0] if len(csd) > 0 else min(self.max_sp + 100, self.max_max_sp)
        n = self.max_sp - new_max
        # decrement_starting_point: an environment at 0 is skipped, it never moves again.
        self.points = [int(max(p - n, 0)) if p > 0 else p for p in self.points]
        self.max_sp = max(self.points)
        self.infos = []


def random_episode_stream(rng: np.random.Generator, points: np.ndarray, num_frames: int,
                          skill: float) -> list[tuple[int, bool]]:
    """A few finished episodes; success is likelier the closer the start is to the demo's end."""
    out = []
    for _ in range(rng.poisson(0.3)):
        sp = int(rng.choice(points))
        start = sp if rng.random() < 0.8 else int(rng.integers(sp, num_frames))
        p = skill * (start / num_frames) ** 4
        out.append((start, bool(rng.random() < p)))
    return out


@pytest.mark.parametrize("num_envs,skill", [(16, 1.0), (64, 0.6), (400, 0.9)])
def test_matches_reference_step_by_step(num_envs: int, skill: float) -> None:
    num_frames = 3000
    config = CurriculumConfig()
    state = cur.init(num_envs, num_frames, config)
    ref = ReferenceResetManager(state.starting_points.tolist())
    rng = np.random.default_rng(num_envs)
    moves = 0
    for _ in range(30_000):
        eps = random_episode_stream(rng, state.starting_points, num_frames, skill)
        ref.step(eps)
        records = cur.EpisodeRecords.make([e[0] for e in eps], [e[1] for e in eps])
        state, decision = cur.update(state, records, 1, config)
        moves += decision.decided and decision.new_max != decision.old_max
        assert state.starting_points.tolist() == ref.points
    assert np.array_equal(state.success, ref.success[:num_frames])
    assert moves >= 3, "the stream should have moved the curriculum a few times"
    assert state.max_starting_point < num_frames - 1


def test_rollout_sized_calls_equal_step_calls() -> None:
    config = CurriculumConfig(decision_interval=256)
    a = b = cur.init(32, 2000, config)
    rng = np.random.default_rng(1)
    for _ in range(40):
        starts = rng.integers(1900, 2000, size=20)
        good = rng.random(20) < 0.7
        records = cur.EpisodeRecords.make(starts, good)
        a, _ = cur.update(a, records, 128, config)
        for _ in range(127):
            b, _ = cur.update(b, cur.EpisodeRecords.empty(), 1, config)
        b, _ = cur.update(b, records, 1, config)
    assert cur.equal(a, b)
    assert a.decisions == 40 * 128 // 256


def test_initial_starting_points() -> None:
    assert cur.initial_starting_points(4, 1000, 320).tolist() == [999, 998, 997, 996]
    pts = cur.initial_starting_points(640, 1000, 320)
    assert pts[:4].tolist() == [999, 999, 998, 998] and pts.min() == 680
    assert cur.initial_starting_points(5, 3, 320).tolist() == [2, 1, 0, 0, 0]
    state = cur.init(640, 1000, CurriculumConfig())
    assert state.spread_frames == 319 and state.ceiling == 999


def test_start_at_and_set_max() -> None:
    config = CurriculumConfig(start_at=500)
    state = cur.init(8, 1000, config)
    assert state.starting_points.tolist() == list(range(500, 492, -1))
    assert state.origin == 500 and state.ceiling == 999
    state = cur.set_max_starting_point(state, 3)
    assert state.starting_points.tolist() == [3, 2, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="outside the demo"):
        cur.set_max_starting_point(state, 1000)


def test_fallback_moves_later_up_to_the_ceiling() -> None:
    config = CurriculumConfig(decision_interval=10, start_at=850)
    state = cur.init(4, 1000, config)
    failures = cur.EpisodeRecords.make([850, 849], [False, False])
    state, d = cur.update(state, failures, 10, config)
    assert d.decided and not d.found and d.new_max == 950
    state, d = cur.update(state, failures, 10, config)
    assert d.new_max == 999  # never past the demo's end
    state, d = cur.update(state, failures, 10, config)
    assert d.new_max == 999 and state.starting_points.tolist() == [999, 998, 997, 996]


def test_throttle_counts_frames_moved_from_the_origin() -> None:
    config = CurriculumConfig(decision_interval=10, spread=4)
    state = cur.init(4, 1000, config)
    # Success far back: the 20% rule wants to jump to frame 100.
    win = cur.EpisodeRecords.make([100], [True])
    state, d = cur.update(state, win, 10, config)
    assert d.decided and d.found and d.new_max == 100
    # 899 frames moved: no decision until more than 449.5 steps have been taken.
    back = cur.EpisodeRecords.make([50], [True])
    state, d = cur.update(state, back, 430, config)
    assert not d.decided and state.max_starting_point == 100
    state, d = cur.update(state, cur.EpisodeRecords.empty(), 10, config)
    assert d.decided and d.new_max == 50


def test_decision_does_not_depend_on_record_order() -> None:
    config = CurriculumConfig(decision_interval=100)
    rng = np.random.default_rng(3)
    starts = rng.integers(900, 1000, size=300)
    good = rng.random(300) < 0.3
    perm = rng.permutation(300)
    a, _ = cur.update(cur.init(64, 1000, config), cur.EpisodeRecords.make(starts, good), 100,
                      config)
    b, _ = cur.update(cur.init(64, 1000, config),
                      cur.EpisodeRecords.make(starts[perm], good[perm]), 100, config)
    assert cur.equal(a, b) and a.decisions == 1


def test_success_table_overwrites_only_the_frames_seen() -> None:
    table = cur.success_table(np.zeros(10), np.array([3, 3, 5]), np.array([True, False, True]))
    assert table.tolist() == [0, 0, 0, 0.5, 0, 1, 0, 0, 0, 0]
    table = cur.success_table(table, np.array([3]), np.array([False]))
    assert table[3] == 0 and table[5] == 1
    with pytest.raises(ValueError, match="outside the demo"):
        cur.success_table(table, np.array([10]), np.array([True]))


def test_json_round_trip_is_exact() -> None:
    config = CurriculumConfig(decision_interval=64)
    state = cur.init(48, 4000, config)
    rng = np.random.default_rng(5)
    for _ in range(11):
        recs = cur.EpisodeRecords.make(rng.integers(3900, 4000, 7), rng.random(7) < 1 / 3)
        state, _ = cur.update(state, recs, 40, config)
    assert state.decisions > 0 and len(state.pending_start) > 0
    back = cur.from_json(json.loads(json.dumps(cur.to_json(state))))
    assert cur.equal(state, back)
    summary = cur.summary(back)
    assert set(summary) >= {"curriculum/max_starting_point", "curriculum/success_table_at_sp",
                            "curriculum/progress"}
    assert all(k.startswith("curriculum/") for k in summary)
    with pytest.raises(ValueError, match="version"):
        cur.from_json({**cur.to_json(state), "version": 99})


def test_reference_environment_at_zero_stays_at_zero() -> None:
    """Issue 11, 4(b): as in the 2018 code, a failed decision moves the others later only."""
    config = CurriculumConfig(decision_interval=1024, start_at=2)
    state = cur.init(5, 1000, config)
    assert state.starting_points.tolist() == [2, 1, 0, 0, 0]
    ref = ReferenceResetManager(cur.initial_starting_points(5, 1000, 320).tolist())
    ref.points, ref.max_sp = state.starting_points.tolist(), 2
    failures = [(2, False), (1, False), (0, False)]
    for _ in range(1024):
        ref.step(failures if ref.counter == 0 else [])
    state, d = cur.update(state, cur.EpisodeRecords.make([2, 1, 0], [False] * 3), 1024, config)
    assert d.decided and not d.found and d.new_max == 102
    assert state.starting_points.tolist() == [102, 101, 0, 0, 0] == ref.points
    # Once every environment is at 0 the reference's curriculum is frozen there.
    frozen = state.replace(starting_points=np.zeros(5, dtype=np.int64))
    frozen, d = cur.update(frozen, cur.EpisodeRecords.make([0, 0], [False, False]), 1024, config)
    assert d.decided and frozen.starting_points.tolist() == [0] * 5


def test_matches_reference_step_by_step_through_frame_zero() -> None:
    """A short demo the agent masters, then fails everywhere: the curriculum reaches frame 0,
    then moves later shift every environment but those at 0, as in the 2018 code."""
    num_frames, config = 600, CurriculumConfig(decision_interval=64)
    state = cur.init(40, num_frames, config)
    ref = ReferenceResetManager(state.starting_points.tolist())
    ref_interval, rng = 64, np.random.default_rng(4)
    zeros_after_fallback, failing = 0, False
    for _ in range(8_000):
        failing |= bool((state.starting_points == 0).any())  # from the first one at 0 on
        eps = random_episode_stream(rng, state.starting_points, num_frames, 1.0)
        eps = [(s, not failing and rng.random() < 0.9) for s, _ in eps]
        ref.infos += eps
        ref.counter += 1
        if ref.counter > (ref.max_max_sp - ref.max_sp) / 2 and ref.counter % ref_interval == 0:
            ref.proc_infos()
        records = cur.EpisodeRecords.make([e[0] for e in eps], [e[1] for e in eps])
        state, d = cur.update(state, records, 1, config)
        assert state.starting_points.tolist() == ref.points
        if d.decided and d.new_max > d.old_max:  # moved later (its stale table or fallback)
            zeros_after_fallback = max(zeros_after_fallback,
                                       int((state.starting_points == 0).sum()))
    assert zeros_after_fallback > 0, "the stream should move later with environments at 0"


# --------------------------------------------------------------------------------------------
# Rule "episodes".

# No throttle here: these tests decide every 64 steps, however far the last decision moved.
EPISODES = CurriculumConfig(rule="episodes", min_episodes=16, min_decision_steps=64,
                            spread_factor=1.0, max_frames_per_step=1e6)


def with_(config: CurriculumConfig, **changes: object) -> CurriculumConfig:
    return dataclasses.replace(config, **changes)


def records_at(points: np.ndarray, per_env: int, good: bool | np.ndarray) -> cur.EpisodeRecords:
    """``per_env`` episodes from each starting point, in order; ``good`` per episode or all."""
    starts = np.repeat(points, per_env)
    return cur.EpisodeRecords.make(starts, np.broadcast_to(good, starts.shape))


def test_even_starting_points() -> None:
    pts = cur.even_starting_points(8, 999, 320)
    assert pts[0] == 999 and pts[-1] == 680 and set(np.diff(-pts)) <= {45, 46}
    dense = cur.even_starting_points(2048, 999, 320)
    assert set(dense.tolist()) == set(range(680, 1000))  # every frame holds environments
    assert cur.even_starting_points(8, 100, 320).tolist() == [100, 54, 9, 0, 0, 0, 0, 0]
    assert cur.even_starting_points(1, 5, 320).tolist() == [5]
    state = cur.init(8, 1000, EPISODES)
    assert np.array_equal(state.starting_points, pts) and state.spread == 320


def test_episodes_rule_moves_most_of_the_spread_when_all_succeed() -> None:
    state = cur.init(8, 1000, EPISODES)
    slots = np.sort(state.starting_points)
    state, d = cur.update(state, records_at(state.starting_points, 2, True), 64, EPISODES)
    # 8 slots of 1/7 each: 20% needs 1.4 of them, so the second-lowest slot is the new maximum.
    assert d.decided and d.found and d.episodes == 16 and d.new_max == slots[1]
    assert d.old_max - d.new_max == 273 > 0.8 * 319
    assert np.array_equal(state.starting_points, cur.even_starting_points(8, int(slots[1]), 320))
    # The reference rule from the same records: 16 successes over 7 frames of spread, 6 frames.
    ref_config = CurriculumConfig(decision_interval=64)
    ref = cur.init(8, 1000, ref_config)
    _, d_ref = cur.update(ref, records_at(ref.starting_points, 2, True), 64, ref_config)
    assert d_ref.old_max - d_ref.new_max == 6


def test_episodes_rule_waits_for_min_episodes_inside_the_spread_and_min_steps() -> None:
    config = with_(EPISODES, start_at=900)
    state = cur.init(8, 1000, config)
    inside = records_at(state.starting_points[:5], 3, True)  # 15 episodes inside the spread
    later = cur.EpisodeRecords.make([950] * 40, [True] * 40)  # uniform later starts
    state, d = cur.update(state, cur.EpisodeRecords.concatenate([inside, later]), 640, config)
    assert not d.decided and state.max_starting_point == 900
    state, d = cur.update(state, records_at(state.starting_points[5:6], 1, True), 0, config)
    assert d.decided and d.episodes == 16
    # Enough episodes but too few steps since that decision: wait.
    state, d = cur.update(state, records_at(state.starting_points, 4, True), 63, config)
    assert not d.decided
    state, d = cur.update(state, cur.EpisodeRecords.empty(), 1, config)
    assert d.decided


def test_episodes_rule_moves_later_by_the_fallback_only() -> None:
    """Failures at the spread, successes from uniform later starts: the reference jumps
    thousands of frames later on those, this rule ``fallback_frames`` later."""
    ref_config = CurriculumConfig(decision_interval=64, start_at=14_000)
    ep_config = with_(EPISODES, start_at=14_000)
    later = cur.EpisodeRecords.make(np.arange(14_500, 20_000, 500), [True] * 11)
    results = []
    for config in (ref_config, ep_config):
        state = cur.init(8, 20_000, config)
        fails = records_at(state.starting_points, 3, False)
        results.append(cur.update(state, cur.EpisodeRecords.concatenate([fails, later]), 64,
                                  config)[1])
    d_ref, d_ep = results
    assert d_ref.found and d_ref.new_max - d_ref.old_max == 1_000  # the second later success
    assert d_ep.decided and not d_ep.found and d_ep.new_max == 14_100 and d_ep.episodes == 24
    # Never past the demo's end; there the layout stays as it is (no move, no new spread).
    config = with_(EPISODES, spread_factor=2.0)
    state = launch = cur.init(8, 1_000, config)
    for _ in range(3):
        state, d = cur.update(state, records_at(state.starting_points, 2, False), 64, config)
        assert d.decided and d.new_max == 999
        assert np.array_equal(state.starting_points, launch.starting_points)


def test_episodes_rule_does_not_depend_on_record_order() -> None:
    state = cur.init(8, 2000, EPISODES)
    rng = np.random.default_rng(11)
    starts = np.concatenate([rng.choice(state.starting_points, 60),
                             rng.integers(1680, 2000, 30)])
    good = rng.random(90) < 0.4
    perm = rng.permutation(90)
    a, da = cur.update(state, cur.EpisodeRecords.make(starts, good), 64, EPISODES)
    b, db = cur.update(state, cur.EpisodeRecords.make(starts[perm], good[perm]), 64, EPISODES)
    assert da.decided and da == db and cur.equal(a, b)


def test_episodes_rule_at_frame_zero() -> None:
    """Issue 11, 4(b) for this rule: clipped environments move later with the layout while the
    maximum is above 0; once it is 0 the curriculum is finished and never moves again."""
    config = with_(EPISODES, start_at=100)
    state = cur.init(8, 1000, config)
    assert state.starting_points.tolist() == [100, 54, 9, 0, 0, 0, 0, 0]
    state, d = cur.update(state, records_at(state.starting_points, 2, False), 64, config)
    assert d.new_max == 200 and state.starting_points.tolist() == [200, 154, 109, 63, 18, 0, 0, 0]
    done = state.replace(starting_points=np.zeros(8, dtype=np.int64))
    for _ in range(3):
        done, d = cur.update(done, records_at(done.starting_points, 4, False), 64, config)
        assert not d.decided and done.max_starting_point == 0 and len(done.pending_start) == 0


def test_episodes_rule_spread_adapts_within_its_bounds() -> None:
    config = with_(EPISODES, spread_factor=2.0)
    state = cur.init(8, 5000, config)
    state, d = cur.update(state, records_at(state.starting_points, 2, True), 64, config)
    assert state.spread == 640  # broad success: twice as wide
    assert state.max_starting_point - state.min_starting_point == 639
    state, _ = cur.update(state, records_at(state.starting_points, 2, True), 64, config)
    assert state.spread == 640  # at the bound (320 x 2)
    for expected in (320, 160, 160):  # failures: half as wide, down to 320 / 2
        state, d = cur.update(state, records_at(state.starting_points, 2, False), 64, config)
        assert not d.found and state.spread == expected
    # Only the three highest slots succeed: a move of less than half the spread, kept as is.
    good = np.zeros(16, dtype=bool)
    good[:6] = True
    state, d = cur.update(state, records_at(state.starting_points, 2, good), 64, config)
    assert d.found and 0 < d.old_max - d.new_max < 160 / 2 and state.spread == 160


def dense_state(layout: str, num_frames: int, start_at: int) -> cur.CurriculumState:
    """A dense spread: 2,048 environments over 320 frames as in the reference, or exactly one
    environment on each of 320 frames."""
    num_envs = 2048 if layout == "reference" else 320
    state = cur.init(num_envs, num_frames, CurriculumConfig(start_at=start_at))
    assert len(np.unique(state.starting_points)) == state.spread_frames + 1  # dense
    if layout == "one_per_frame":
        assert len(np.unique(state.starting_points)) == num_envs
    return state


@settings(max_examples=60, deadline=None)
@given(layout=st.sampled_from(["reference", "one_per_frame"]), seed=st.integers(0, 2**31),
       start_at=st.integers(400, 4_999), skill=st.floats(0.0, 1.0),
       pattern=st.sampled_from(["uniform", "hard_point", "sparse"]))
def test_episodes_rule_equals_the_reference_on_a_dense_spread(
        layout: str, seed: int, start_at: int, skill: float, pattern: str) -> None:
    """Same records, same decision point, dense spread: the same new maximum (or, where the
    reference moves later, this rule's bounded fallback)."""
    state = dense_state(layout, 5_000, start_at)
    rng = np.random.default_rng(seed)
    lo, hi = state.min_starting_point, state.max_starting_point
    n = int(rng.integers(1, 3_000))
    starts = rng.choice(state.starting_points, n)
    later = rng.random(n) < 0.2  # the pool's uniform later starts
    starts[later] = rng.integers(starts[later], 5_000)
    if pattern == "uniform":
        p = np.full(n, skill)
    elif pattern == "hard_point":  # succeeds above a hard frame inside the spread
        p = np.where(starts > rng.integers(lo, hi + 1), 0.9, 0.1 * skill)
    else:  # few episodes succeed at all
        p = np.where(rng.random(n) < 0.05, 1.0, 0.0) * skill
    records = cur.EpisodeRecords.make(starts, rng.random(n) < p)
    _, d_ref = cur.update(state, records, 128, CurriculumConfig(decision_interval=128))
    _, d_ep = cur.update(state, records, 128, CurriculumConfig(
        rule="episodes", min_episodes=1, min_decision_steps=128))
    assert d_ref.decided and d_ep.decided
    if d_ref.new_max <= hi:
        assert (d_ep.new_max, d_ep.found) == (d_ref.new_max, d_ref.found)
    else:  # the reference moved later (fallback, or the later starts): bounded here
        assert not d_ep.found and d_ep.new_max == min(hi + 100, state.ceiling)


@pytest.mark.parametrize("wins,counts,expected", [
    ([1, 1, 1], [1, 2, 2], 991),  # 1 + 0.5 + 0.5 = 2.0 = 0.2 x 10 exactly, at frame 991
    ([1, 1, 1, 1, 1, 1], [3] * 6, None),  # six thirds: the float sum, whatever it gives
    ([1, 1, 0, 1], [1, 1, 1, 5], 990),
])
def test_episodes_rule_equals_the_reference_at_the_threshold(
        wins: list[int], counts: list[int], expected: int | None) -> None:
    """Shares that reach 20% of the spread exactly: the same floats, the same frame."""
    state = cur.init(11, 1_000, CurriculumConfig())  # one environment per frame, 989..999
    assert state.spread_frames == 10
    starts = np.repeat(989 + np.arange(len(counts)), counts)
    good = np.concatenate([np.arange(c) < w for w, c in zip(wins, counts, strict=True)])
    records = cur.EpisodeRecords.make(starts, good)
    _, d_ref = cur.update(state, records, 1024, CurriculumConfig())
    _, d_ep = cur.update(state, records, 1024, CurriculumConfig(rule="episodes", min_episodes=1))
    assert (d_ref.new_max, d_ref.found) == (d_ep.new_max, d_ep.found)
    if expected is not None:
        assert d_ep.found and d_ep.new_max == expected


# --------------------------------------------------------------------------------------------
# State files and the simulator.


def test_version_1_state_loads() -> None:
    v1 = {"version": 1, "num_frames": 1000, "spread_frames": 7, "ceiling": 999, "origin": 999,
          "starting_points": [999, 998, 997, 996, 995, 994, 993, 992],
          "success_frames": [995, 999], "success_values": [0.5, 1.0], "agent_steps": 4096,
          "pending_start": [999, 993], "pending_good": [1, 0], "decisions": 4}
    state = cur.from_json(v1)
    assert state.spread == 8 and state.last_decision_step == 4096
    assert state.success[995] == 0.5 and state.pending_good.tolist() == [True, False]
    assert cur.to_json(state)["version"] == cur.STATE_VERSION == 2
    # Both rules continue from it.
    for config in (CurriculumConfig(decision_interval=64), EPISODES):
        after, d = cur.update(state, records_at(state.starting_points, 2, True), 64, config)
        assert d.decided and after.max_starting_point < 999


def test_episodes_state_json_round_trip() -> None:
    config = with_(EPISODES, spread_factor=2.0)
    state = cur.init(8, 4000, config)
    rng = np.random.default_rng(2)
    for _ in range(12):
        state, _ = cur.update(state, records_at(state.starting_points, 2, rng.random(16) < 0.6),
                              40, config)
    state, d = cur.update(state, records_at(state.starting_points[:2], 1, True), 10, config)
    assert not d.decided and state.decisions > 0 and state.last_decision_step > 0
    assert len(state.pending_start) == 2 and state.spread != config.spread
    back = cur.from_json(json.loads(json.dumps(cur.to_json(state))))
    assert cur.equal(state, back)


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="rule must be one of reference, episodes"):
        CurriculumConfig(rule="frames")  # type: ignore[arg-type]


def test_bench_curriculum_runs() -> None:
    """The simulator's entry point: the episodes rule outpaces the reference at 8 environments
    and never moves later by more than the fallback."""
    out = subprocess.run(
        [sys.executable, "-m", "jax_reset.bench", "curriculum", "--envs", "8", "--scenario",
         "uniform", "--vector-steps", "8192", "--json"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {r["rule"]: r for r in json.loads(out.strip().splitlines()[-1])["results"]}
    assert rows["episodes"]["frames_moved"] > 10 * rows["reference"]["frames_moved"] > 0
    assert rows["episodes"]["largest_move_later"] <= 100
