"""The curriculum controller against a literal re-telling of the reference's ResetManager."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
        self.points = [int(max(p - n, 0)) for p in self.points]
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
