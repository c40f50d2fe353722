"""The no-demo baseline (``configs/pong_nodemo.toml``): the input offset from random play is the
same background as the demo's mean frame, and a run with the baseline's settings starts every
environment at the game's start, warms nothing up on the demo and takes no offset from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jax_reset import config as cfg
from jax_reset import config_tree, demos
from jax_reset import metrics as m
from jax_reset.envs.demo_obs import demo_mean_observation
from jax_reset.evaluation.envs import play_mean_observation
from jax_reset.run.state import load_params
from tests.conftest import REPO, SMOKE, run_module


def test_the_offset_from_random_play_is_the_background_of_the_demos_frames() -> None:
    env = cfg.load(SMOKE).env
    play = play_mean_observation("Pong", env, seed=0)
    demo = demo_mean_observation(demos.load(REPO / "demos" / "Pong.npz", check=False), env)
    assert play.shape == demo.shape == env.obs_shape and play.dtype == np.float32
    assert play.min() > 0.2 and play.max() <= 1.0
    # Pong's court is most of the frame: the two offsets differ by ~0.002 on average and only
    # where the paddles and the ball move (up to ~0.2 there).
    assert np.abs(play - demo).mean() < 0.01, np.abs(play - demo).mean()
    np.testing.assert_array_equal(play, play_mean_observation("Pong", env, seed=0))


def test_a_run_without_the_demo(tmp_path: Path) -> None:
    """The smoke job with the keys in which the baseline differs from pong.toml."""
    demo = config_tree.to_dict(cfg.load(REPO / "configs" / "pong.toml", on_cpu=True))
    nodemo = config_tree.to_dict(cfg.load(REPO / "configs" / "pong_nodemo.toml", on_cpu=True))
    overrides = []
    for key in config_tree.diff(demo, nodemo):
        section, name = key.split(".")
        value = nodemo[section][name]
        overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    run = tmp_path / "run"
    done = run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(run),
                      "train.total_updates=3", *overrides)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "the mean observation of random play from the game's start" in done.stdout
    assert "warm-up" not in done.stdout and "demo's mean observation" not in done.stdout
    rows = m.read_jsonl(run / m.JSONL_NAME)
    assert [r["curriculum/max_starting_point"] for r in rows] == [0, 0, 0]
    assert [r["curriculum/min_starting_point"] for r in rows] == [0, 0, 0]
    _, _, config, params = load_params(run, "latest")
    assert config.network.input_norm == "play_mean"
    offset = np.asarray(params["torso"]["input_mean"])
    np.testing.assert_array_equal(offset, play_mean_observation("Pong", config.env, seed=0))
