"""`python -m jax_reset.demo from-run` on a real (tiny) smoke run: the policy's best game from
the start, in the project's pool, saved as a demo that verifies, with its provenance."""

from __future__ import annotations

from pathlib import Path

from jax_reset import demos
from tests.conftest import run_module

CAP_AGENT_STEPS = 150  # each game cut after 600 frames: fast, and still 6 checkpoints




def test_from_run_writes_the_best_game_as_a_demo(smoke_run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.npz"
    done = run_module("jax_reset.demo", "from-run", "--run-dir", str(smoke_run_dir),
                      "--episodes", "3", "--seed", "7", "--max-agent-steps",
                      str(CAP_AGENT_STEPS), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    demo = demos.load(out)
    header = demo.header
    assert header["source"] == "from-run" and header["seed"] == 7
    assert header["run_dir"] == str(smoke_run_dir.resolve()) and header["checkpoint_step"] == 4
    assert len(header["episode_scores"]) == 3
    assert demo.score == max(header["episode_scores"]) and demo.game == "Pong"
    # Pong's plain reset is one FIRE frame (index 1), then 4 frames per agent step.
    assert demo.actions[0] == 1
    if header["game_over_frame"] is None:  # cut by the cap, not ended by the game
        assert demo.num_frames == 1 + 4 * CAP_AGENT_STEPS
    assert (demo.actions[1:1 + 4 * 10].reshape(10, 4) == demo.actions[1:41:4, None]).all()
    verified = run_module("jax_reset.demo", "verify", str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(demo.checkpoint_frames)}/{len(demo.checkpoint_frames)}" in verified.stdout


def test_from_run_bad_input_is_one_line(smoke_run_dir: Path, tmp_path: Path) -> None:
    for args, message in [
        (("--run-dir", str(tmp_path / "nothing")), "not a run directory"),
        (("--run-dir", str(smoke_run_dir), "--checkpoint", "99"), "no checkpoint at step 99"),
        (("--run-dir", str(smoke_run_dir), "--episodes", "0"), "--episodes must be at least 1"),
    ]:
        done = run_module("jax_reset.demo", "from-run", *args, "--out", str(tmp_path / "x.npz"))
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x.npz").exists()
