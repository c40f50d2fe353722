"""Evaluation under each protocol on EnvPool, the video, and the plots."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from jax_reset import curriculum as cur
from jax_reset import metrics, milestones, networks
from jax_reset.envs.config import EnvConfig
from jax_reset.evaluation.envs import PROTOCOLS, protocol_env_config
from jax_reset.evaluation.errors import EmulatorCrash, EvalError
from jax_reset.evaluation.play import NetworkPolicy, run_protocol
from jax_reset.evaluation.video import record_episode
from jax_reset.networks import NetworkConfig
from jax_reset.plot import X_TIME, PlotError, compared_curves, plot_run, read_metrics
from tests.conftest import REPO

# Small frames and a small network: a Pong game is ~1,000 agent steps of inference on the CPU.
ENV = EnvConfig(img_height=42, img_width=42, gray_scale=True, stack_num=2)
NET = NetworkConfig(conv_channels=(8, 8, 8), conv_kernels=(4, 3, 3), conv_strides=(2, 2, 1),
                    dense_size=32, core="lstm", core_size=16)
PONG_ACTIONS = 6


@pytest.fixture(scope="module")
def policy() -> NetworkPolicy:
    network = networks.make_network(NET, PONG_ACTIONS)
    params = networks.init_params(network, jax.random.PRNGKey(0), ENV.obs_shape)
    return NetworkPolicy(NET, params, PONG_ACTIONS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocol_plays_full_games(policy, protocol):
    result = run_protocol("Pong", ENV, policy, protocol, episodes=3, num_envs=2, seed=1)
    summary = result.summary()
    assert summary["episodes"] == 3 == len(result.scores)
    # A full game of Pong ends when one side reaches 21 points.
    assert all(-21 <= s <= 21 for s in result.scores)
    assert min(result.scores) <= -15 or max(result.scores) >= 15
    assert summary["score_min"] <= summary["score_median"] <= summary["score_max"]
    assert all(n > 700 for n in result.lengths), result.lengths  # ≥ 21 points of play
    json.dumps(summary)


def test_protocol_settings():
    assert protocol_env_config(ENV, "sticky").repeat_action_probability == 0.25
    assert protocol_env_config(ENV, "noop").noop_max == 30
    plain = protocol_env_config(EnvConfig(reward_clip=True, episodic_life=True), "plain")
    assert not plain.reward_clip and not plain.episodic_life and plain.noop_max == 1
    with pytest.raises(EvalError, match="unknown protocol"):
        protocol_env_config(ENV, "greedy")


def test_no_games_in_parallel_is_one_line(policy):
    """``evaluate --envs 0`` raised ZeroDivisionError."""
    with pytest.raises(EvalError, match="--envs must be at least 1, got 0"):
        run_protocol("Pong", ENV, policy, "plain", episodes=2, num_envs=0)


def test_same_seed_same_games_and_protocols_differ(policy):
    a = run_protocol("Pong", ENV, policy, "plain", episodes=1, num_envs=1, seed=3)
    b = run_protocol("Pong", ENV, policy, "plain", episodes=1, num_envs=1, seed=3)
    c = run_protocol("Pong", ENV, policy, "sticky", episodes=1, num_envs=1, seed=3)
    assert (a.scores, a.lengths) == (b.scores, b.lengths)
    assert a.lengths != c.lengths


def test_video_decodes_with_one_frame_per_agent_step(policy, tmp_path):
    path = tmp_path / "game.mp4"
    score, frames = record_episode("Pong", ENV, policy, path, protocol="plain", seed=3)
    decoded = list(iio.imiter(path))
    assert len(decoded) == frames
    assert decoded[0].shape == (28 + 210 * 3, 160 * 3, 3)
    # The same seed and protocol play the same game as the evaluation.
    again = run_protocol("Pong", ENV, policy, "plain", episodes=1, num_envs=1, seed=3)
    assert score == again.scores[0] and frames == again.lengths[0] + 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_video_cut_after_max_agent_steps(policy, tmp_path):
    path = tmp_path / "start.mp4"
    score, frames = record_episode("Pong", ENV, policy, path, protocol="plain", seed=3,
                                   max_agent_steps=40)
    # the first frame, then one per agent step; a game of Pong lasts far longer than 40
    assert frames == 41 and len(list(iio.imiter(path))) == 41 and score == 0


def test_video_refuses_bad_paths(policy, tmp_path):
    with pytest.raises(EvalError, match=r"\.mp4"):
        record_episode("Pong", ENV, policy, tmp_path / "game.gif")


def test_plots_from_metrics(tmp_path):
    # Two sittings: updates 1-9, an hour stopped, then 10-19 (2 s per update throughout).
    rows = [{"update": u, "train/agent_steps": 1024 * u,
             "time": 1.7e9 + 2.0 * u + (3600.0 if u >= 10 else 0.0),
             "curriculum/max_starting_point": 22000 - 40 * u, "curriculum/success_at_sp": 0.3,
             "env/episode_score": float(u % 3), "train/agent_steps_per_s": 500.0,
             "train/learning_rate": 3e-4, "train/approx_kl": 0.004 * (1 + u % 5)}
            for u in range(1, 20)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"update": 20, "agent_ste')
    paths = plot_run(tmp_path)
    assert {p.name for p in paths} == {"starting_point.png", "success_rate.png", "score.png",
                                       "learning_rate.png", "approx_kl.png", "steps_per_s.png"}
    assert all(iio.imread(p).shape[0] > 100 for p in paths)
    # The training time leaves the hour between the sittings out: 18 steps of 2 s.
    assert [r[X_TIME] for r in read_metrics(tmp_path)][-1] == pytest.approx(36.0)


def test_a_one_update_run_plots_without_warnings(tmp_path):
    """One line of metrics (a run stopped after its first update): its first KL can be 0, and
    a log axis over no positive value made matplotlib warn."""
    import warnings

    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"update": 1, "train/agent_steps": 64, "time": 1.7e9, "train/approx_kl": 0.0,
         "curriculum/max_starting_point": 22000, "train/learning_rate": 3e-4}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plot_run(tmp_path)
    assert {p.name for p in paths} == {"starting_point.png", "approx_kl.png",
                                       "learning_rate.png"}


def test_milestones_first_and_for_good():
    """Below 100 first at line 2, back above at line 3, below for good from line 4; below 50 at
    line 5, the last; below 10 never."""
    sp = [150, 90, 120, 80, 40]
    rows = milestones.passes([1000, 2000, 3000, 4000, 5000], [0, 10, 20, 30, 40], sp,
                             [100, 50, 10, 5])
    assert [(r["first_agent_steps"], r["for_good_agent_steps"]) for r in rows] == [
        (2000, 4000), (5000, 5000), (None, None), (None, None)]
    # The table stops at the first frame not yet passed and counts the rest.
    text = milestones.table(rows)
    assert "4,000" in text and text.count("not yet passed") == 1 and "(1 earlier" in text
    assert (rows[0]["first_training_s"], rows[0]["for_good_training_s"]) == (10, 30)
    # Scoring frames: latest first, then the game's start; a reward at frame 0 or 1 is the start.
    assert milestones.scoring_frames(np.array([0, 1, 0, 0, -1, 0, 1.0])) == [6, 4, 1]


def test_plot_errors(tmp_path):
    with pytest.raises(PlotError, match=r"no metrics\.jsonl"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"update": 1}\n')
    with pytest.raises(PlotError, match="none of the plotted metrics"):
        plot_run(tmp_path)


def test_score_at_a_frame(policy):
    """The score once a game has played a given number of frames (a demo's length), or its final
    score if it ended before."""
    early = run_protocol("Pong", ENV, policy, "plain", episodes=2, num_envs=2, seed=1,
                         at_frame=2000)
    assert early.at_frame == 2000 and len(early.scores_at_frame) == 2
    # A near-random policy loses points all game: after 2,000 frames it has lost some, not all.
    for at, final in zip(early.scores_at_frame, early.scores, strict=True):
        assert final <= -15 and final < at <= 0
    summary = early.summary()
    assert summary["at_frame"] == 2000
    assert summary["score_at_frame_mean"] == sum(early.scores_at_frame) / 2
    late = run_protocol("Pong", ENV, policy, "plain", episodes=2, num_envs=2, seed=1,
                        at_frame=10**7)
    assert late.scores_at_frame == late.scores  # every game ended before: its final score
    plain = dataclasses.replace(late, at_frame=None, scores_at_frame=[])
    assert "at_frame" not in plain.summary()


def test_runs_compared_on_shared_axes(tmp_path):
    """``plot`` with ``--run-dir`` twice: one curve per run on the score from the game's start
    and the starting point, into ``--out`` (required); a run without metrics is one line."""
    from jax_reset.plot import main as plot_main

    for name, score in (("demo", -5.0), ("nodemo", -20.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(
            {"update": u, "train/agent_steps": 1024 * u, "time": 1.7e9 + 2.0 * u,
             "curriculum/max_starting_point": 0 if name == "nodemo" else 22000 - 40 * u,
             **({"eval/score_mean": score + u} if u % 5 == 0 else {})}) + "\n"
            for u in range(1, 21)))
    out = tmp_path / "compared"
    assert plot_main(["--run-dir", str(tmp_path / "demo"), "--run-dir",
                      str(tmp_path / "nodemo"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["compare_eval_score.png",
                                                      "compare_starting_point.png"]
    assert all(iio.imread(p).shape[1] > 1000 for p in out.iterdir())
    # The no-demo run is on the score's axes, not on the starting point's (its 0 throughout).
    runs = [(name, read_metrics(tmp_path / name)) for name in ("demo", "nodemo")]
    assert [c[0] for c in compared_curves(runs, metrics.EVAL_SCORE)] == ["demo", "nodemo"]
    assert [c[0] for c in compared_curves(runs, cur.MAX_STARTING_POINT)] == ["demo"]
    assert plot_main(["--run-dir", str(tmp_path / "demo"), "--run-dir",
                      str(tmp_path / "nodemo")]) == 2  # no --out
    assert plot_main(["--run-dir", str(tmp_path / "demo"), "--run-dir",
                      str(tmp_path / "missing"), "--out", str(out)]) == 2


class KillsItsEmulator:
    """A policy that plays ``policy``'s moves and, at its ``at``-th move, kills the EnvPool
    process the games run in with SIGSEGV: the emulator's known crash, on demand."""

    def __init__(self, policy: NetworkPolicy, at: int) -> None:
        self.policy, self.at, self.moves = policy, at, 0

    def reset(self, num_envs: int, seed: int) -> None:
        self.policy.reset(num_envs, seed)

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        self.moves += 1
        if self.moves == self.at:
            (child,) = [p for p in mp.active_children() if p.name.startswith("envpool-")]
            os.kill(child.pid, signal.SIGSEGV)
            child.join(10)
        return self.policy.act(obs, episode_start)


def test_an_emulator_crash_is_one_error_and_this_process_lives_on(policy):
    """EnvPool runs in a child process: its segmentation fault (ALE's, in some games) is an
    EmulatorCrash naming the signal and the games played, and the child is gone after it."""
    with pytest.raises(EmulatorCrash) as crash:
        run_protocol("Pong", ENV, KillsItsEmulator(policy, at=50), "plain", episodes=3,
                     num_envs=2, seed=1)
    message = str(crash.value)
    assert crash.value.signal == signal.SIGSEGV and "\n" not in message
    assert "killed by SIGSEGV while playing Pong under the plain protocol, after 0 of 3 games" \
        in message, message
    assert not [p for p in mp.active_children() if p.name.startswith("envpool-")]
    # and the next evaluation plays as usual
    result = run_protocol("Pong", ENV, policy, "plain", episodes=1, num_envs=1, seed=1)
    assert len(result.scores) == 1


def test_a_script_from_stdin_is_told_why_its_emulator_cannot_start():
    """The emulator's child is spawned and imports the caller's main module again: a script
    piped to ``python -`` cannot be imported, and the error says what to do, in one line."""
    script = ("from jax_reset.envs.config import EnvConfig\n"
              "from jax_reset.evaluation.envs import make_envpool\n"
              "make_envpool('Pong', EnvConfig(), 1, 0)\n")
    done = subprocess.run([sys.executable, "-"], input=script, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jax_reset.evaluation.errors.EvalError: the emulator process "
                           "(Pong-v5, pid "), done.stderr[-2000:]
    assert "exited with code 1 before EnvPool started" in last
    assert 'top level under `if __name__ == "__main__":`' in last
