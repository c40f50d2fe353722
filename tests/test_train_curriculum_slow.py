"""Slow: the curriculum really moves back on Pong, started at the demo's last frames, on a CPU.

``test_pong_curriculum_moves_back``: the smoke-sized network (the learner's update on a
reference-sized one takes minutes on a CPU), the reference's curriculum rules (20% threshold,
throttle) with a decision every 128 agent steps: with 8 environments the spread is 7 frames,
and the rule moves at most about the spread per decision (the reference had 320 frames of
spread at 1,024 steps per decision).

``test_pong_cpu_job_moves_30_frames_per_1000_agent_steps``: the default CPU job with rule
"episodes", against issue 11's bar.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jax_reset import curriculum as cur
from jax_reset import demos
from jax_reset import metrics as m
from jax_reset.metrics import read_jsonl
from tests.conftest import REPO

UPDATES = 160
MIN_MOVED = 100  # frames; the measured value is printed (and recorded in docs/benchmarks.md)


@pytest.mark.slow
def test_pong_curriculum_moves_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "jax_reset.train", "--config", "configs/smoke.toml",
           "--run-dir", str(run_dir), f"train.total_updates={UPDATES}", "train.num_envs=8",
           "ppo.rollout_steps=32", "ppo.burn_in_steps=16", "curriculum.decision_interval=128",
           "train.checkpoint_every=1000"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(run_dir / "metrics.jsonl")
    start = rows[0]["curriculum/max_starting_point"]
    end = rows[-1]["curriculum/max_starting_point"]
    seconds = rows[-1]["time"] - rows[0]["time"]
    print(f"\nPong: max starting point {start:.0f} -> {end:.0f} ({start - end:.0f} frames) in "
          f"{len(rows)} updates, {rows[-1]['train/agent_steps']:.0f} agent steps, "
          f"{seconds:.0f} s")
    assert start - end >= MIN_MOVED


# The default CPU job (configs/pong.toml with its CPU overlay) under rule "episodes": issue 11's
# bar is 30 frames moved back per 1,000 agent steps (all environments) in 150 updates; the bench's
# simulated agent moves 34 (docs/results.md).
JOB_UPDATES = 150
MIN_FRAMES_PER_1K_AGENT_STEPS = 30.0


@pytest.mark.slow
def test_pong_cpu_job_moves_30_frames_per_1000_agent_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # No --full-size: on a machine without a GPU the trainer applies configs/cpu.toml.
    cmd = [sys.executable, "-m", "jax_reset.train", "--config", "configs/pong.toml",
           "--run-dir", str(run_dir), f"train.total_updates={JOB_UPDATES}",
           "curriculum.rule=episodes"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(run_dir / m.JSONL_NAME)
    assert rows[-1]["update"] == JOB_UPDATES
    start = demos.load(REPO / "demos" / "Pong.npz").num_frames - 1  # the run starts there
    moved = start - rows[-1][cur.MAX_STARTING_POINT]
    agent_steps = rows[-1][m.AGENT_STEPS]
    per_1k = 1000.0 * moved / agent_steps
    seconds = rows[-1]["time"] - rows[0]["time"]
    print(f"\nPong CPU job, rule episodes: moved {moved:.0f} frames back in {JOB_UPDATES} "
          f"updates, {agent_steps:.0f} agent steps ({per_1k:.1f} per 1,000), {seconds:.0f} s")
    assert per_1k >= MIN_FRAMES_PER_1K_AGENT_STEPS
