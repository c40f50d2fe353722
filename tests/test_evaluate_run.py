"""`python -m jax_reset.evaluate` on a real run directory (an emulator crash included), and the
evaluation environment against the training pool."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from jax_reset import milestones
from jax_reset.envs import AtariPool, EnvConfig
from jax_reset.evaluation.envs import make_envpool, protocol_env_config
from tests.conftest import (
    run_module,
    run_module_killing_its_emulator,
)


def test_evaluate_a_run_directory(smoke_run_dir: Path, tmp_path: Path):
    video = tmp_path / "game.mp4"
    done = run_module("jax_reset.evaluate", "--run-dir", str(smoke_run_dir), "--protocol", "plain",
               "--protocol", "epsilon", "--episodes", "2", "--envs", "2", "--json",
               "--video", str(video))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["game"] == "Pong" and out["checkpoint"] == 4
    assert [p["protocol"] for p in out["protocols"]] == ["plain", "epsilon"]
    for p in out["protocols"]:
        assert p["episodes"] == 2 and -21 <= p["score_min"] <= p["score_max"] <= 21
    assert video.is_file() and out["video"]["frames"] > 700
    plots = run_module("jax_reset.plot", "--run-dir", str(smoke_run_dir))
    assert plots.returncode == 0, plots.stderr
    assert (smoke_run_dir / "plots" / "starting_point.png").is_file()
    # Four updates from Pong's end pass its last scoring frame (22,859, the demo's -1) at most.
    passed = json.loads((smoke_run_dir / "plots" / milestones.JSON_NAME).read_text())
    frames = [r["frame"] for r in passed["demos/Pong.npz"]]
    assert frames == [22859, 18251, 14004, 12889, 11778, 9457, 2070, 1]
    assert all(r["for_good_agent_steps"] is None for r in passed["demos/Pong.npz"][1:])
    assert "below frame" in plots.stdout


def test_bad_run_directory_and_checkpoint(smoke_run_dir: Path, tmp_path: Path):
    done = run_module("jax_reset.evaluate", "--run-dir", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "not a run directory" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_module("jax_reset.evaluate", "--run-dir", str(smoke_run_dir), "--checkpoint", "99")
    assert done.returncode == 2 and "no checkpoint at step 99" in done.stderr
    done = run_module("jax_reset.evaluate", "--run-dir", str(smoke_run_dir), "--checkpoint",
                      "first")
    assert done.returncode == 2 and "latest, best or an update number" in done.stderr
    done = run_module("jax_reset.plot", "--run-dir", str(tmp_path))
    assert done.returncode == 2 and "no metrics.jsonl" in done.stderr


def test_evaluation_env_sees_what_the_training_pool_sees():
    """The plain protocol's EnvPool env and the training pool, same actions: same frames."""
    train_cfg = EnvConfig(img_height=42, img_width=32, gray_scale=True, stack_num=2)
    eval_cfg = protocol_env_config(train_cfg, "plain")
    # The pool in EnvPool's reset convention; training's other settings are what the protocol
    # turns off (clipping, life loss): full games, raw scores.
    pool_cfg = dataclasses.replace(eval_cfg, autoreset="next_step")
    ref = make_envpool("Pong", eval_cfg, 2, seed=0, num_threads=1)
    rng = np.random.default_rng(0)
    with AtariPool("Pong", 2, 2, config=pool_cfg, seed=0) as pool:
        ref_obs, _ = ref.reset()
        np.testing.assert_array_equal(pool.reset().obs, ref_obs)
        for _ in range(300):
            actions = rng.integers(0, 6, 2)
            ref_obs, ref_reward, *_ = ref.step(actions.astype(np.int32))
            out = pool.step(actions)
            np.testing.assert_array_equal(out.obs, ref_obs)
            np.testing.assert_array_equal(out.raw_reward, ref_reward)
    ref.close()


def test_an_emulator_crash_loses_one_protocol_not_the_others(smoke_run_dir: Path):
    """The emulator dies (SIGSEGV, as ALE's known crash) under the first protocol: a one-line
    error for it, the second protocol still played and reported, exit status 1."""
    done = run_module_killing_its_emulator(
        "jax_reset.evaluate", "--run-dir", str(smoke_run_dir), "--protocol", "plain",
        "--protocol", "noop", "--episodes", "2", "--envs", "2", "--json")
    stdout, stderr = done.stdout, done.stderr
    assert done.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, stderr[-3000:]
    assert "killed by SIGSEGV while playing Pong under the plain protocol" in errors[0]
    assert "crashed under 1 of 2 protocols (plain)" in errors[1]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert [p["protocol"] for p in out["protocols"]] == ["noop"]
    assert out["protocols"][0]["episodes"] == 2
    assert [c["protocol"] for c in out["crashed"]] == ["plain"]
