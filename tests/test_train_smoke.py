"""`python -m jax_reset.train` end to end on the smoke config: real emulator, real checkpoints.

One fresh run (acting and learning alternating), a resume that continues the counters with the
actor thread overlapping the learner and is stopped by SIGTERM in the middle (it must leave a
checkpoint at the update it reached and no worker process), and a resume from that checkpoint.
The runs share a JAX compilation cache so that only the first compiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from jax_reset.config import load
from jax_reset.config_tree import save_json
from jax_reset.metrics import read_jsonl
from jax_reset.run.checkpoint import Checkpoints
from tests.conftest import REPO, SMOKE, processes_tagged, train_cmd, wait_for_update

STEPS_PER_UPDATE = 4 * 16  # smoke: num_envs x rollout_steps



@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {**os.environ, "PYTHONPATH": str(REPO),
            "JAX_RESET_TEST_TAG": tag}



def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                    "ppo.learning_rat=1"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown key 'ppo.learning_rat'" in proc.stderr
    assert not run_dir.exists()
    proc = subprocess.run(train_cmd("--run-dir", str(run_dir), "--resume"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no run to resume" in proc.stderr
    # A directory that holds a run: a new run there is refused, and so is a resume that
    # changes the network.
    save_json(load(SMOKE), run_dir / "config.json")
    proc = subprocess.run(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir)),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    proc = subprocess.run(train_cmd("--run-dir", str(run_dir), "--resume",
                                    "network.core_size=32"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot change network.core_size" in proc.stderr
    assert [p.name for p in run_dir.iterdir()] == ["config.json"]


def test_run_resume_and_sigterm(tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.run(
        # Acting and learning alternate here; the resume below overlaps them (the default).
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "train.total_updates=4",
                  "train.overlap=false"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/agent_steps"] == 4 * STEPS_PER_UPDATE
    for key in ("train/loss", "train/approx_kl", "train/clip_fraction",
                "train/explained_variance", "train/agent_steps_per_s",
                "curriculum/max_starting_point", "timing/learner_s", "actor/env_step_s"):
        assert key in rows[-1], key
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["num_envs"] == 4
    # the config's relative demo path is saved absolute: the resume below starts elsewhere
    assert saved["demo"]["demo_path"] == str(REPO / "demos" / "Pong.npz")
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    with Checkpoints(run_dir / "checkpoints", keep_last=2) as ckpt:
        assert ckpt.latest_step() == 4

    # Resume with more updates, from another directory, then SIGTERM once it has gone past the
    # checkpoint.
    second = subprocess.Popen(
        train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=100000",
                  "train.overlap=true"),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_update(second, run_dir, 5, timeout_s=240)
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, out[-3000:]
    assert "resumed from update 4" in out and "stopped by SIGTERM" in out
    assert "train.overlap" in out  # the changed setting is reported
    rows = read_jsonl(run_dir / "metrics.jsonl")
    updates = [r["update"] for r in rows]
    assert updates == list(range(1, updates[-1] + 1))  # one continuous run
    assert rows[4]["train/agent_steps"] == 5 * STEPS_PER_UPDATE
    with Checkpoints(run_dir / "checkpoints", keep_last=2) as ckpt:
        last = ckpt.latest_step()
        meta = ckpt.read_meta()
    assert last == updates[-1] >= 5  # the stop saved the last finished update
    assert meta["config"]["train"]["num_envs"] == 4
    time.sleep(0.5)
    assert processes_tagged(env["JAX_RESET_TEST_TAG"]) == []

    # And it resumes from there.
    third = subprocess.run(
        train_cmd("--run-dir", str(run_dir), "--resume", f"train.total_updates={last + 1}"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-3000:]
    assert f"resumed from update {last}" in third.stdout
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert rows[-1]["update"] == last + 1
    assert rows[-1]["train/agent_steps"] == (last + 1) * STEPS_PER_UPDATE
