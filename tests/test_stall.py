"""The stall controller: lowering after K decisions without a move, the floor, moves, JSON."""

import dataclasses
import json

import pytest

from jax_reset.curriculum import stall
from jax_reset.curriculum.stall import StallConfig, stall_update

ON = StallConfig(enabled=True, patience_decisions=3, factor=0.5, min_scale=0.25)


def run(config, state, outcomes):
    """Feeds (decided, old_max, new_max) outcomes; returns the states and changed flags."""
    states, changed = [], []
    for decided, old, new in outcomes:
        state, c = stall_update(state, decided, old, new, config)
        states.append(state)
        changed.append(c)
    return states, changed


def test_k_decisions_without_a_move_lower_the_scale_by_the_factor():
    state = stall.init(1000)
    # Updates without a decision do not count; decisions that stay put (or move later) do.
    states, changed = run(ON, state, [(True, 1000, 1000), (False, 1000, 1000),
                                      (True, 1000, 1100), (True, 1100, 1100)])
    assert [s.scale for s in states] == [1.0, 1.0, 1.0, 0.5]
    assert changed == [False, False, False, True]
    assert states[-1].decisions_without_move == 0 and states[-1].best_max == 1000
    # Back to where it already was is no progress: still stalled, lowered again after 3 more.
    states, changed = run(ON, states[-1], [(True, 1100, 1000)] + [(True, 1000, 1000)] * 2)
    assert [s.scale for s in states] == [0.5, 0.5, 0.25] and changed == [False, False, True]
    lr, ent = stall.hyperparams(1e-4, 2e-3, states[-1])
    assert lr == pytest.approx(2.5e-5) and ent == pytest.approx(5e-4)


def test_never_below_the_floor():
    config = dataclasses.replace(ON, patience_decisions=1, factor=0.3, min_scale=0.2)
    states, changed = run(config, stall.init(500), [(True, 500, 500)] * 5)
    assert [s.scale for s in states] == pytest.approx([0.3, 0.2, 0.2, 0.2, 0.2])
    assert changed == [True, True, False, False, False]


@pytest.mark.parametrize("on_move, expected", [("restore", 1.0), ("keep", 0.5)])
def test_a_move_back_restores_or_keeps_the_scale(on_move, expected):
    config = dataclasses.replace(ON, on_move=on_move)
    states, _ = run(config, stall.init(1000), [(True, 1000, 1000)] * 3)
    assert states[-1].scale == 0.5
    # One decision into the next stall, then a move back past the lowest point so far.
    states, changed = run(config, states[-1], [(True, 1000, 1000), (True, 1000, 990)])
    assert states[0].decisions_without_move == 1
    moved = states[-1]
    assert moved.scale == expected and changed[-1] == (expected != 0.5)
    assert moved.decisions_without_move == 0 and moved.best_max == 990
    # The count starts again from the move.
    states, _ = run(config, moved, [(True, 990, 990)] * 2)
    assert states[-1].scale == expected and states[-1].decisions_without_move == 2


def test_disabled_does_nothing():
    config = dataclasses.replace(ON, enabled=False)
    state = stall.init(1000)
    states, changed = run(config, state, [(True, 1000, 1000)] * 10 + [(True, 1000, 10)])
    assert all(s == state for s in states) and not any(changed)
    assert StallConfig().enabled is False  # off for a reproduction of the reference


def test_json_round_trip_and_refusals():
    states, _ = run(ON, stall.init(777), [(True, 777, 700)] + [(True, 700, 800)] * 4)
    state = states[-1]
    assert (state.scale, state.decisions_without_move, state.best_max) == (0.5, 1, 700)
    data = json.loads(json.dumps(stall.to_json(state)))  # as the checkpoint's JSON item
    assert stall.from_json(data) == state
    with pytest.raises(ValueError, match="version"):
        stall.from_json({**data, "version": 99})
    with pytest.raises(ValueError, match="scale"):
        stall.from_json({**data, "scale": 0.0})
    assert stall.summary(state) == {"curriculum/stall_scale": 0.5,
                                    "curriculum/stall_decisions": 1.0}


@pytest.mark.parametrize("bad, message", [
    ({"patience_decisions": 0}, "patience_decisions"),
    ({"factor": 1.0}, "factor"),
    ({"min_scale": 0.0}, "min_scale"),
    ({"on_move": "raise"}, "on_move"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        StallConfig(**bad)
