"""Imitation of the demo's actions (``ppo.imitation_coef`` / ``ppo.imitation_windows``): the
term, its windows of the real demo, its sizes and checks, and a real training run with it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from pathlib import Path

import jax
import numpy as np
import pytest

from jax_reset import curriculum as cur
from jax_reset.config import load
from jax_reset.envs.demo_history import DemoHistory
from jax_reset.metrics import read_jsonl
from jax_reset.networks import init_carry
from jax_reset.parallel.mesh import make_data_mesh
from jax_reset.parallel.sizes import SizeError, derive
from jax_reset.plot import plot_run
from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.synthetic import (
    TINY_OBS_SHAPE,
    random_batch,
    random_demo_batch,
    tiny_network_config,
    tiny_ppo_config,
)
from jax_reset.ppo.train_state import create_train_state
from jax_reset.ppo.update import make_update
from jax_reset.training.demo_windows import DemoWindows, build_windows, window_frames
from tests.conftest import DEMOS, REPO, SMOKE, train_cmd
from tests.helpers import A

DEMO = str(DEMOS / "Pong.npz")


def test_the_term_teaches_the_demos_actions_in_both_loops() -> None:
    """Updates with the term fit the policy to fixed demo windows (the PPO batch is fresh noise
    each time), and the accelerator's scan and the CPU's host loop compute the same update."""
    cfg = tiny_network_config()
    ppo = tiny_ppo_config(imitation_coef=1.0, imitation_windows=2, learning_rate=3e-3)
    net, state0 = create_train_state(cfg, ppo, TINY_OBS_SHAPE, A, jax.random.key(0))
    demo = random_demo_batch(np.random.default_rng(1), cfg, ppo, 2, TINY_OBS_SHAPE, A)
    results = {}
    for loop in ("scan", "host"):
        update = make_update(net, ppo, make_data_mesh(), loop=loop)
        rng, state, history = np.random.default_rng(2), state0, []
        for _ in range(10):
            state, metrics = update(state, random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A),
                                    demo)
            history.append({k: float(v) for k, v in metrics.items()})
        assert update.jitted._cache_size() == 1
        results[loop] = (state, history)
    (s_scan, _), (s_host, h_host) = results["scan"], results["host"]
    for a, b in zip(jax.tree.leaves(s_scan.params), jax.tree.leaves(s_host.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    first, last = h_host[0], h_host[-1]
    assert first["imitation_loss"] > 0.9 * np.log(A)  # about uniform at the start
    assert last["imitation_loss"] < 0.5 * first["imitation_loss"], (first, last)
    assert last["imitation_accuracy"] > first["imitation_accuracy"]
    assert last["imitation_accuracy"] >= 0.8
    # The logged loss is the whole objective: PPO's terms plus the weighted demo term.
    ppo_part = (last["policy_loss"] - ppo.ent_coef * last["entropy"]
                + ppo.vf_coef * last["value_loss"] + ppo.l2_coef * last["l2_loss"])
    assert last["loss"] == pytest.approx(ppo_part + last["imitation_loss"], rel=1e-5)


def test_the_windows_go_with_the_config() -> None:
    cfg = tiny_network_config()
    plain = tiny_ppo_config()
    ppo = tiny_ppo_config(imitation_coef=0.1, imitation_windows=2)
    mesh = make_data_mesh()
    rng = np.random.default_rng(0)
    batch = random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A)
    demo = random_demo_batch(rng, cfg, ppo, 2, TINY_OBS_SHAPE, A)
    net, state = create_train_state(cfg, plain, TINY_OBS_SHAPE, A, jax.random.key(0))
    with pytest.raises(ValueError, match="exactly when"):
        make_update(net, plain, mesh)(state, batch, demo)
    with pytest.raises(ValueError, match="exactly when"):
        make_update(net, ppo, mesh)(state, batch)
    with pytest.raises(ValueError, match="expected"):
        make_update(net, ppo, mesh)(state, batch, jax.tree.map(lambda x: x[:, :1], demo))
    for coef, windows in ((0.1, 0), (0.0, 2)):
        with pytest.raises(ValueError, match="go together"):
            PPOConfig(imitation_coef=coef, imitation_windows=windows)
    with pytest.raises(ValueError, match="imitation_span must be one of spread, rest"):
        PPOConfig(imitation_span="whole")
    config = load(SMOKE, ["ppo.minibatches=2", "ppo.imitation_coef=0.1",
                          "ppo.imitation_windows=3"])
    with pytest.raises(SizeError, match=r"ppo\.imitation_windows=3"):
        derive(config)
    assert derive(dataclasses.replace(
        config, ppo=dataclasses.replace(config.ppo, imitation_windows=4))).minibatches == 2


def test_windows_are_the_demos_frames_and_actions() -> None:
    env = load(SMOKE).env
    history = DemoHistory(DEMO, env, lo=0)
    actions = np.asarray(history.demo.actions, np.int64)
    t, skip = len(actions), env.frame_skip
    k, r = 8, 16
    start = np.array([0, 10, 500, t - 5])
    carry = jax.tree.map(np.asarray, init_carry(load(SMOKE).network, len(start)))
    w = build_windows(history, actions, start, k, r, carry)
    frames = window_frames(start, k, r, skip)
    assert w.obs.shape == (k + r, 4, *env.obs_shape) and frames.shape == (k + r, 4)
    np.testing.assert_array_equal(frames[k], start)  # the first imitated step is the start
    np.testing.assert_array_equal(np.diff(frames, axis=0), skip)
    # The state resets at each window's first frame inside the demo: frame 0's step for the
    # windows whose burn-in reaches back before the game's start (0: step 8; 10: step 6).
    assert [int(np.argmax(w.episode_start[:, j])) for j in range(4)] == [8, 6, 0, 0]
    assert w.episode_start.sum() == 4
    inside = (frames >= 0) & (frames < t)
    for i, j in zip(*np.nonzero(inside), strict=True):
        assert w.action[i, j] == actions[frames[i, j]]
        assert np.array_equal(w.obs[i, j], history.stacked(np.array([frames[i, j]]))[0])
    # Imitated: the rollout steps inside the demo (the last window runs past its end).
    np.testing.assert_array_equal(w.mask, inside & (np.arange(k + r) >= k)[:, None])
    assert w.mask[:, 3].sum() == 2  # frames t - 5 and t - 1


def test_window_starts_follow_the_spread_the_seed_and_the_update() -> None:
    env = load(SMOKE).env
    carry = jax.tree.map(np.asarray, init_carry(load(SMOKE).network, 4))
    one = DemoWindows([DEMO], env, None, 4, 8, 16, carry, seed=3)
    curricula = cur.init_curricula(8, [one.histories[0].num_frames], cur.CurriculumConfig())
    lo, hi = 1000, 3000
    draws = np.stack([one.starts(u, [(lo, hi)]) for u in range(200)])
    assert draws.min() >= lo and draws.max() <= hi and len(np.unique(draws)) > 500
    np.testing.assert_array_equal(one.starts(7, [(lo, hi)]), draws[7])  # seed and update only
    assert not np.array_equal(DemoWindows([DEMO], env, None, 4, 8, 16, carry, seed=4)
                              .starts(7, [(lo, hi)]), draws[7])
    # Two processes build the two halves of the one process's windows.
    whole = one.build(7, curricula)
    half = jax.tree.map(lambda c: c[:2], carry)
    parts = [DemoWindows([DEMO], env, None, 4, 8, 16, half, seed=3, process_index=p,
                         num_processes=2).build(7, curricula) for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([p.obs for p in parts], axis=1), whole.obs)
    np.testing.assert_array_equal(np.concatenate([p.action for p in parts], axis=1), whole.action)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        DemoWindows([DEMO], env, None, 3, 8, 16, carry, seed=3, num_processes=2)


def test_windows_over_the_rest_of_the_demo_reach_past_the_spread() -> None:
    """span "rest": from the lowest starting point to the last window that ends in the demo,
    also with the curriculum at the game's start (where "spread" imitates frames 0-63 only)."""
    env = load(SMOKE).env
    carry = jax.tree.map(np.asarray, init_carry(load(SMOKE).network, 4))
    spread = DemoWindows([DEMO], env, None, 4, 8, 16, carry, seed=3)
    rest = DemoWindows([DEMO], env, None, 4, 8, 16, carry, seed=3, span="rest")
    last = len(rest.actions[0]) - env.frame_skip * 16  # the last window ends at the last frame
    for lo, hi in ((0, 0), (1000, 3000)):
        near = np.stack([spread.starts(u, [(lo, hi)]) for u in range(300)])
        draws = np.stack([rest.starts(u, [(lo, hi)]) for u in range(300)])
        assert near.min() >= lo and near.max() <= hi
        assert draws.min() >= lo and draws.max() <= last
        assert draws.max() > last - 0.05 * (last - lo)  # the demo's end is imitated too
        # Uniform over [lo, last]: the mean sits in the middle.
        assert abs(draws.mean() - (lo + last) / 2) < 0.05 * (last - lo)
        # Every imitated step lies inside the demo (none is a masked-out step past its end).
        frames = window_frames(draws.reshape(-1), 8, 16, env.frame_skip)
        assert frames[-1].max() < len(rest.actions[0])
    with pytest.raises(ValueError, match="imitation_span must be one of"):
        DemoWindows([DEMO], env, None, 4, 8, 16, carry, seed=3, span="all")


def test_a_training_run_imitates_the_demo(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_RESET_TEST_TAG": uuid.uuid4().hex}
    run_dir = tmp_path / "run"
    done = subprocess.run(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "train.total_updates=3",
                  "ppo.imitation_coef=0.5", "ppo.imitation_windows=2", "ppo.imitation_span=rest"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["ppo"]["imitation_span"] == "rest"
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert 0 < row["train/imitation_loss"] < 10 and 0 <= row["train/imitation_accuracy"] <= 1
    assert "imitation_accuracy.png" in {p.name for p in plot_run(run_dir)}
