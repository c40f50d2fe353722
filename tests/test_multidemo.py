"""Several demos of one game in one run (``demo.demo_paths``): the environments divided in
blocks, one curriculum per demo decided on its own episodes, saved and restored exactly, the
stall controller over all of them, and mixed games refused. The second demo is a real one made
with ``python -m jax_reset.demo from-actions`` from the first 3,000 actions of Pong's demo (so
the two demos differ in length: an environment restored from the wrong demo shows)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from jax_reset import curriculum as cur
from jax_reset.config import load
from jax_reset.curriculum import stall
from jax_reset.envs import AtariPool
from jax_reset.parallel.sizes import derive
from jax_reset.run import checkpoint as ckpt_lib
from jax_reset.run import state as run_state
from jax_reset.training.setup import build_trainer, make_group
from jax_reset.training.trainer import RunOutputs
from tests.conftest import REPO, SMOKE, train_cmd
from tests.helpers import PONG, PREFIX_FRAMES, make_prefix_demo, paths_override


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prefix_demo(tmp_path_factory.mktemp("demos") / "PongPrefix.npz")


# ---- the pure parts ------------------------------------------------------------------------


def test_blocks_and_the_override() -> None:
    assert cur.demo_bounds(8, 2).tolist() == [0, 4, 8]
    assert cur.env_demos(5, 2).tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"num_envs \(1\) must be at least the number of demos"):
        cur.env_demos(1, 2)
    config = load(SMOKE, ['demo.demo_paths=["a.npz","b.npz"]'])
    assert config.demo.paths == ("a.npz", "b.npz")
    assert load(SMOKE).demo.paths == ("demos/Pong.npz",)


def test_each_demo_decides_on_its_own_episodes_and_round_trips() -> None:
    config = cur.CurriculumConfig(rule="episodes", spread=40, min_episodes=2,
                                  min_decision_steps=1)
    curricula = cur.init_curricula(8, [1000, 2000], config)
    assert curricula.starting_points.shape == (8,)
    assert curricula.max_starting_points == (999, 1999)
    # Demo 1's environments all succeed; demo 0's episodes all fail.
    s1 = curricula.states[1].starting_points
    s0 = curricula.states[0].starting_points
    records = cur.EpisodeRecords.make(np.concatenate([s0, s1]), [False] * 4 + [True] * 4,
                                      demo=[0] * 4 + [1] * 4)
    after, decisions = cur.update_curricula(curricula, records, 16, config)
    assert [d.decided for d in decisions] == [True, True]
    assert decisions[0].new_max >= decisions[0].old_max  # failed: the fallback, later
    assert decisions[1].new_max < decisions[1].old_max  # moved back on its own successes
    # The checkpoint item: a one-demo run's is exactly today's state JSON.
    one = cur.init_curricula(4, [1000], config)
    assert cur.curricula_to_json(one) == cur.to_json(one.states[0])
    assert cur.equal(cur.curricula_from_json(cur.to_json(one.states[0])), one)
    back = cur.curricula_from_json(cur.curricula_to_json(after))
    assert back.num_demos == 2 and cur.equal(back, after) and not cur.equal(back, curricula)
    keys = cur.summary_all(after)
    assert keys["curriculum/demo1/max_starting_point"] == decisions[1].new_max
    assert keys[cur.MAX_STARTING_POINT] == max(after.max_starting_points)


def test_stall_reacts_only_when_no_demo_moves() -> None:
    config = stall.StallConfig(enabled=True, patience_decisions=2)
    state = stall.init((1000, 2000))
    state, changed = stall.stall_update_demos(state, [True, True], [1000, 2000], [1000, 2000],
                                              config)
    assert not changed and state.decisions_without_move == 1
    # Demo 0 moves back: a move, though demo 1 failed (moved later).
    moved, _ = stall.stall_update_demos(state, [True, True], [1000, 2000], [900, 2100], config)
    assert moved.decisions_without_move == 0 and moved.best_maxes == (900, 2000)
    # Neither moves past its own best: lowered at the patience.
    low, changed = stall.stall_update_demos(state, [True, False], [1000, 2000], [1000, 2000],
                                            config)
    assert changed and low.scale == 0.5
    assert stall.from_json(stall.to_json(moved)) == moved
    assert stall.init((1000,)) == stall.init(1000)  # one demo: today's state


# ---- a real 2-demo trainer, saved and restored ---------------------------------------------


def test_two_demo_trainer_saves_and_restores_both_curricula(tmp_path: Path,
                                                            prefix: Path) -> None:
    config = load(SMOKE, ["train.overlap=false", paths_override(PONG, prefix),
                          "curriculum.rule=episodes", "curriculum.min_episodes=1",
                          "curriculum.min_decision_steps=1", "stall.enabled=true"])
    sizes = derive(config)
    env_demos = cur.env_demos(sizes.num_envs_global, 2)
    with AtariPool(None, 4, 2, config=config.env, demo=config.demo, seed=0,
                   env_demos=env_demos) as pool:
        assert pool.demos_num_frames == (22_869, PREFIX_FRAMES)
        checkpoints = ckpt_lib.open_checkpoints(tmp_path, keep_last=2)
        trainer = build_trainer(config, make_group(config), pool,
                                RunOutputs(tmp_path, checkpoints))
        assert len(trainer.actor.histories) == 2
        seen = set()
        for index in range(3):
            rollout, _ = trainer.collect(threading.Event())
            got = trainer.exchange(rollout, stop_requested=False)
            # Each environment's episodes start inside its own demo.
            frames = np.asarray(pool.demos_num_frames)[got.records.demo]
            assert (got.records.start <= frames).all()
            seen |= set(got.records.demo.tolist())
            trainer.handle_stall(trainer.advance_curriculum(got.records, index))
            trainer.learn(rollout, int(got.sums["frames"]))
            trainer.publish()
        assert seen == {0, 1}
        saved = trainer.state
        assert saved.curriculum.num_demos == 2
        assert saved.curriculum.states[1].max_starting_point < PREFIX_FRAMES
        assert saved.curriculum.states[0].max_starting_point > 20_000
        assert trainer.save()
        checkpoints.wait()
        restored = build_trainer(config, make_group(config), pool, RunOutputs(tmp_path),
                                 restore=lambda target, meta: run_state.restore_state(
                                     checkpoints, target, meta, "here")).state
        checkpoints.close()
    assert restored.update == 3 and cur.equal(restored.curriculum, saved.curriculum)
    assert len(saved.stall.best_maxes) == 2 and restored.stall == saved.stall


def test_demos_of_two_games_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run(train_cmd("--config", str(SMOKE), "--run-dir", str(tmp_path / "r"),
                                    paths_override(PONG, REPO / "demos" / "Pitfall.npz")),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "demos of different games in one run" in lines[0], proc.stderr


def test_plot_draws_one_curve_per_demo() -> None:
    from jax_reset import plot

    rows = [{"train/agent_steps": 64.0 * i, cur.MAX_STARTING_POINT: 900.0 - i,
             "curriculum/demo0/max_starting_point": 900.0 - i,
             "curriculum/demo1/max_starting_point": 500.0 - 2 * i} for i in range(3)]
    curves = plot._curves(rows, "train/agent_steps", cur.MAX_STARTING_POINT)
    assert [c[0] for c in curves] == ["demo 0", "demo 1"]
    assert curves[1][2].tolist() == [500.0, 498.0, 496.0]
    one = [{k: v for k, v in r.items() if "demo" not in k} for r in rows]
    assert [c[0] for c in plot._curves(one, "train/agent_steps", cur.MAX_STARTING_POINT)] == [None]
