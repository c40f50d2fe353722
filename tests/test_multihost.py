"""The trainer as several processes of one job (CPU collectives over gloo), on the smoke config.

One test, three runs sharing a run directory (each JAX start costs seconds on a busy CPU):

1. ``--local-processes 2``, a fresh run of 2 updates with two demos (process 0's environments
   restore from one, process 1's from the other, each demo's curriculum decided on the other
   process's records too) and ``train.placement=1+1`` (each process acts on one fake CPU device,
   which the trainer asks XLA for itself, and learns on another: the learning mesh spans one
   device of each process): only process 0 logs; every process holds bit-identical parameters
   and the same curriculum state (starting points included) after each curriculum decision and
   checkpoint (``processes/p<i>.jsonl``); one checkpoint.
2. The job resumed as 2 processes started by hand (as on a cluster, no launcher; the placement
   from the run's config), process 1 killed once both run: process 0 ends with a clear error
   within a bounded time, on its own.
3. Resumed as 1 process (a different number of processes) with ``train.placement=shared``
   (today's arrangement): the counters continue.

The compiled programs are cached between runs in the test session's compilation cache.
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

from jax_reset.metrics import read_jsonl
from jax_reset.parallel.distributed import free_port
from jax_reset.run.checkpoint import Checkpoints
from tests.conftest import REPO, SMOKE, processes_tagged, train_cmd, wait_for_update
from tests.helpers import PONG, PREFIX_FRAMES, make_prefix_demo, paths_override

STEPS_PER_UPDATE = 4 * 16  # smoke: num_envs x rollout_steps, over all processes
TINY = ("train.workers=1",)  # one environment worker per process: 2 busy cores


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    # The test session's compilation cache (conftest) comes with os.environ.
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_RESET_TEST_TAG": uuid.uuid4().hex}




def digests(run_dir: Path, process: int) -> list[dict]:
    path = run_dir / "processes" / f"p{process}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_agree_resume_and_fail_together(tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    prefix = make_prefix_demo(tmp_path / "PongPrefix.npz")

    # 1. Two processes from the local launcher, two demos (2 environments each).
    first = subprocess.run(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "--local-processes", "2",
                  "train.total_updates=2", paths_override(PONG, prefix), "train.placement=1+1",
                  *TINY),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-4000:]
    assert "[p0] placement 1+1: acting on cpu:" in out and "(2 learning devices in the job)" in out
    assert "[p0] process 0 of 2: environments 0 to 1 of 4" in out
    assert "[p1] process 1 of 2: environments 2 to 3 of 4" in out
    assert "[p0] done: 2 updates" in out and "[p1] done" not in out
    assert not any(line.startswith("[p1] update") for line in out.splitlines())
    rows = read_jsonl(run_dir / "metrics.jsonl")  # process 0's alone: one row per update
    assert [r["update"] for r in rows] == [1, 2]
    assert rows[-1]["train/agent_steps"] == 2 * STEPS_PER_UPDATE
    p0, p1 = digests(run_dir, 0), digests(run_dir, 1)
    assert [r["update"] for r in p0] == [r["update"] for r in p1]
    assert 2 in [r["update"] for r in p0]  # the decision at update 2 (and the checkpoint)
    for a, b in zip(p0, p1, strict=True):
        assert a["processes"] == b["processes"] == 2
        assert (a["params"], a["curriculum"]) == (b["params"], b["curriculum"]), (a, b)
        assert a["starting_points"] == b["starting_points"] and len(a["starting_points"]) == 4
        # Environments 0-1 on the long demo, 2-3 on the 3,000-frame one.
        assert min(a["starting_points"][:2]) > PREFIX_FRAMES
        assert max(a["starting_points"][2:]) < PREFIX_FRAMES
    with Checkpoints(run_dir / "checkpoints", keep_last=2) as ckpt:
        assert ckpt.latest_step() == 2
    assert "curriculum/demo1/max_starting_point" in rows[-1]

    # 2. Resumed as two processes started by hand; process 1 is killed once both run.
    base = {**env, "JAX_RESET_COORDINATOR": f"127.0.0.1:{free_port()}",
            "JAX_RESET_NUM_PROCESSES": "2"}
    procs = [subprocess.Popen(
        train_cmd("--run-dir", str(run_dir), "--resume", "--heartbeat-timeout", "5",
                  "train.total_updates=1000", *TINY),
        cwd=REPO, env={**base, "JAX_RESET_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        rows = wait_for_update(procs[0], run_dir, 3, timeout_s=180)
        assert rows[2]["update"] == 3 and rows[2]["train/agent_steps"] == 3 * STEPS_PER_UPDATE
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out0, _ = procs[0].communicate(timeout=90)
        ended = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs[0].returncode == 1, out0[-3000:]
    assert "resumed from update 2" in out0
    assert "error (process 0 of 2): lost contact with another process" in out0, out0[-3000:]
    assert ended < 30, ended  # gloo notices at once; the heartbeat (5 s) at the latest

    # 3. The checkpoint resumes as one process: the counters continue.
    with Checkpoints(run_dir / "checkpoints", keep_last=2) as ckpt:
        last = ckpt.latest_step()
    assert last >= 2
    third = subprocess.run(
        train_cmd("--run-dir", str(run_dir), "--resume", f"train.total_updates={last + 1}",
                  "train.placement=shared", *TINY),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-3000:]
    assert f"resumed from update {last}" in third.stdout
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["update"] for r in rows] == list(range(1, last + 2))
    assert rows[-1]["train/agent_steps"] == (last + 1) * STEPS_PER_UPDATE
    time.sleep(0.5)
    assert processes_tagged(env["JAX_RESET_TEST_TAG"]) == []  # no stray environment workers


def test_bad_splits_and_flags_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    bad = subprocess.run(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "--local-processes", "2",
                  "--distributed"), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not combine" in bad.stderr
    bad = subprocess.run(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "--local-processes", "2",
                  "ppo.learning_rat=1"), cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60)
    assert bad.returncode == 2 and "unknown key 'ppo.learning_rat'" in bad.stderr
    assert bad.stdout == "" and not run_dir.exists()  # refused before any process started
    # A batch that does not split over the processes: each process says so, nothing is written.
    bad = subprocess.run(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "--local-processes", "2",
                  "train.num_envs=3", *TINY), cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120)
    assert bad.returncode == 2, bad.stdout[-2000:]
    assert ("[p0] error (process 0 of 2): train.num_envs=3 does not split over 2 processes"
            in bad.stdout)
    assert not run_dir.exists()


@pytest.mark.slow
def test_ctrl_c_on_the_launcher_stops_every_process_cleanly(tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    """Ctrl-C: the processes agree on the stop at the next update, save one checkpoint, exit 0."""
    run_dir = tmp_path / "run"
    job = subprocess.Popen(
        train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), "--local-processes", "2",
                  "train.total_updates=100000", "train.overlap=false", *TINY),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_update(job, run_dir, 3, timeout_s=180)
        job.send_signal(signal.SIGINT)
        out, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-3000:]
    assert "[p0] stopped by SIGTERM after update" in out
    with Checkpoints(run_dir / "checkpoints", keep_last=2) as ckpt:
        last = ckpt.latest_step()
    assert last == read_jsonl(run_dir / "metrics.jsonl")[-1]["update"] >= 3
    p0, p1 = digests(run_dir, 0), digests(run_dir, 1)
    assert p0[-1]["update"] == last and p0 == [{**r, "process": 0} for r in p1]
    time.sleep(0.5)
    assert processes_tagged(env["JAX_RESET_TEST_TAG"]) == []
