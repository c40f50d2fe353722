"""The no-demo baseline (``configs/pong_nodemo.toml``): the input offset from random play is the
same background as the demo's mean frame, and a run with the baseline's settings starts every
environment at the game's start, warms nothing up on the demo and takes no offset from it; an
emulator crash in its start-up's random play costs a second try, not the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jax_reset import config as cfg
from jax_reset import config_tree, demos
from jax_reset import metrics as m
from jax_reset.envs.demo_obs import demo_mean_observation
from jax_reset.evaluation.envs import play_mean_observation
from jax_reset.run.state import load_params
from tests.conftest import REPO, SMOKE, run_module, run_module_killing_its_emulator


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


def nodemo_overrides() -> list[str]:
    """The keys in which the baseline differs from pong.toml, as command-line overrides."""
    demo = config_tree.to_dict(cfg.load(REPO / "configs" / "pong.toml", on_cpu=True))
    nodemo = config_tree.to_dict(cfg.load(REPO / "configs" / "pong_nodemo.toml", on_cpu=True))
    overrides = []
    for key in config_tree.diff(demo, nodemo):
        section, name = key.split(".")
        value = nodemo[section][name]
        overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return overrides


def test_a_run_without_the_demo(tmp_path: Path) -> None:
    """The smoke job with the keys in which the baseline differs from pong.toml."""
    run = tmp_path / "run"
    done = run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(run),
                      "train.total_updates=3", *nodemo_overrides())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "the mean observation of random play from the game's start" in done.stdout
    assert "warm-up" not in done.stdout and "demo's mean observation" not in done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("update ")]
    assert len(lines) == 3 and not [line for line in lines if "starting point" in line], lines
    rows = m.read_jsonl(run / m.JSONL_NAME)
    assert [r["curriculum/max_starting_point"] for r in rows] == [0, 0, 0]
    assert [r["curriculum/min_starting_point"] for r in rows] == [0, 0, 0]
    _, _, config, params = load_params(run, "latest")
    assert config.network.input_norm == "play_mean"
    offset = np.asarray(params["torso"]["input_mean"])
    np.testing.assert_array_equal(offset, play_mean_observation("Pong", config.env, seed=0))


def test_an_emulator_crash_in_the_random_play_costs_a_second_try_not_the_run(
        tmp_path: Path) -> None:
    """The emulator dies (SIGSEGV, ALE's known crash in some games) while the baseline's
    start-up plays randomly for its input offset: the run says so in one line, plays again with
    the next seed, and trains; its offset is that seed's."""
    run = tmp_path / "run"
    done = run_module_killing_its_emulator(  # its first EnvPool child: the random play
        "jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(run),
        "train.total_updates=2", *nodemo_overrides(), kill_within_s=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    again = [line for line in output.splitlines() if "random play again" in line]
    assert len(again) == 1 and "was killed by SIGSEGV" in again[0], output[-3000:]
    assert again[0].endswith("random play again with seed 1")
    assert [r["update"] for r in m.read_jsonl(run / m.JSONL_NAME)] == [1, 2]
    _, _, config, params = load_params(run, "latest")
    np.testing.assert_array_equal(np.asarray(params["torso"]["input_mean"]),
                                  play_mean_observation("Pong", config.env, seed=1))
