"""Interrupts, hangs and bad values on the real trainer (issue 13, rows 7-10): real processes
receive real signals; every wait is on an event (a process appears, a metrics line is written,
the job exits), never a bare sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from jax_reset.envs import AtariPool, PoolError
from tests.conftest import REPO, SMOKE, processes_tagged, train_cmd, wait_for_update


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def workers_of(pid: int) -> list[int]:
    """The pool's worker processes among ``pid``'s children (not the resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                found.append(child)
    return found


def wait_until(condition, timeout_s: float, job: subprocess.Popen | None = None):
    """Polls ``condition()`` until it is truthy (returned) or ``job`` ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        if job is not None and job.poll() is not None:
            break
        time.sleep(0.02)
    out = job.communicate()[1][-3000:] if job is not None and job.poll() is not None else ""
    pytest.fail(f"condition not met within {timeout_s} s {out}")


def test_ctrl_c_while_the_workers_start_is_one_line(tmp_path: Path,
                                                    env: dict[str, str]) -> None:
    """Row 7: SIGINT to the whole process group (what a terminal's Ctrl-C does) the moment the
    first worker exists: the workers ignore it, the trainer stops with no traceback."""
    tag = uuid.uuid4().hex
    job = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(tmp_path / "run")),
                           cwd=REPO, env={**env, "JAX_RESET_TEST_TAG": tag},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        wait_until(lambda: workers_of(job.pid), 120, job)
        os.killpg(job.pid, signal.SIGINT)
        out, err = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert job.returncode in (0, 130), (job.returncode, err)
    assert len(err.strip().splitlines()) <= 1, err
    if job.returncode == 0:  # the stop flag caught it: a clean stop at update 0
        assert "stopped by SIGINT after update 0" in out, out
    assert not processes_tagged(tag)


def test_a_stopped_worker_is_reported_in_seconds() -> None:
    """Row 8, the pool: a SIGSTOPped worker is a PoolError naming the hang within about
    heartbeat_s (the timeout on a command stays at its 120 s)."""
    with AtariPool("Pong", 2, 2, heartbeat_s=2.0) as pool:
        pool.step(np.zeros(2, np.int32))
        victim = pool._workers.procs[1].pid
        os.kill(victim, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(PoolError, match=r"worker 1 .* hangs: no heartbeat .*state T"):
                pool.step(np.zeros(2, np.int32))
            assert time.monotonic() - t0 < 10
        finally:
            with contextlib.suppress(ProcessLookupError):  # the pool killed it
                os.kill(victim, signal.SIGCONT)


@pytest.mark.slow
def test_sigterm_during_a_hang_reports_the_hang(tmp_path: Path, env: dict[str, str]) -> None:
    """Row 8, the trainer: a worker stopped mid-run, then SIGTERM: exit 1 with one line naming
    the hang, seconds later (not a clean stop after the 120 s timeout)."""
    run_dir = tmp_path / "run"
    tag = uuid.uuid4().hex
    job = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                     "train.total_updates=1000"),
                           cwd=REPO, env={**env, "JAX_RESET_TEST_TAG": tag},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = []
    try:
        wait_for_update(job, run_dir, 2, timeout_s=300)
        stopped = workers_of(job.pid)[:1]
        os.kill(stopped[0], signal.SIGSTOP)
        t0 = time.monotonic()
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
        seconds = time.monotonic() - t0
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1, err
    assert "game: Pong, demo demos/Pong.npz (22,869 frames, score 5)" in out  # row 10
    assert "hangs: no heartbeat" in err and "state T (stopped)" in err, err
    assert seconds < 30, seconds
    assert not processes_tagged(tag)


@pytest.mark.parametrize("args,message", [
    (["ppo.learning_rate=-1"], "learning_rate must be positive"),
    (["train.total_updates=0"], "total_updates must be at least 1"),
    (["--profile-steps", "50:60"], "the run ends at update 6"),
    (["demo.game=Pong", "demo.demo_path=demos/PrivateEye.npz"],
     "is a demo of PrivateEye, but demo.game is Pong"),
])
def test_nonsense_is_refused_in_one_line(tmp_path: Path, env: dict[str, str], args: list[str],
                                         message: str) -> None:
    """Rows 9 and 10: exit 2, one line, nothing written."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir), *args),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not run_dir.exists()


def test_messages_of_the_demo_and_evaluate_commands(tmp_path: Path, env: dict[str, str]) -> None:
    """Row 12: a garbage demo is "not a demo file" (no numpy advice to unpickle it); piped
    output has no leading blank line and is not cut at 80 columns; scores round to 2 places."""
    from jax_reset import demos
    from jax_reset.evaluate import _number

    garbage = tmp_path / "Pong.npz"
    garbage.write_bytes(b"\x80\x04not a zip archive" * 50)
    with pytest.raises(demos.DemoError, match="not a demo file") as err:
        demos.load(garbage)
    assert "pickle" not in str(err.value)
    proc = subprocess.run([*train_cmd()[:2], "jax_reset.demo", "info", "demos/Pong.npz"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() and proc.stdout[0] != "\n"
    sha = demos.load(REPO / "demos" / "Pong.npz", check=False).header["source_sha256"]
    assert sha in proc.stdout  # whole, on one line
    assert (_number(-20.96875), _number(822.5), _number(-21.0), _number(3)) == (
        "-20.97", "822.5", "-21", "3")


@pytest.mark.parametrize("delay_s", [0.4, 0.6, 1.2])
def test_ctrl_c_during_the_start_up_stops_the_run_with_one_line(tmp_path: Path, env, delay_s):
    """A Ctrl-C from the command's first instruction on: before the stop flag is installed the
    run ends with one line and 130 (it used to be a traceback during the imports, and to be lost
    inside a JAX garbage-collector callback between ~0.5 and 1.2 s: the run trained to its end,
    rc 0); after, the run stops at its first update with a checkpoint (rc 0). (Before the
    interpreter reaches that first instruction, tens of milliseconds, Python's own handler
    applies: not tested, its timing depends on the machine's load.)"""
    run_dir = tmp_path / "run"
    job = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                     "train.total_updates=200", "train.progress=false"),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    time.sleep(delay_s)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=120)
    lines = err.strip().splitlines()
    if job.returncode == 130:
        assert lines == ["error: interrupted; last checkpoint: none"], err[-3000:]
    else:
        assert job.returncode == 0 and not lines, err[-3000:]
        assert "stopped by SIGINT after update" in out, out[-2000:]
    assert "done:" not in out, out[-2000:]


def test_a_second_ctrl_c_during_a_save_is_130_and_one_true_line(tmp_path: Path, env) -> None:
    """Two Ctrl-Cs 20 ms apart while the run saves every update: the second one lands in a
    save (or its wait). The run ends with 130 and one line naming a checkpoint that is on
    disk, whole (it used to be 1, Orbax's traceback, and a false "checkpoint N does not read
    back"); the save it interrupted finished first."""
    run_dir = tmp_path / "run"
    job = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                     "train.total_updates=100000", "train.checkpoint_every=1",
                                     "train.progress=false"),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_for_update(job, run_dir, 4, timeout_s=240)
        job.send_signal(signal.SIGINT)
        time.sleep(0.02)
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    lines = err.strip().splitlines()
    assert job.returncode == 130 and len(lines) == 1, err[-3000:]
    last = int(lines[0].removeprefix("error: interrupted; last checkpoint: "))
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert last == steps[-1], (lines, steps)  # the newest on disk, and it reads:
    from jax_reset.run.checkpoint import Checkpoints

    with Checkpoints(run_dir / "checkpoints", keep_last=3, read_only=True) as checkpoints:
        assert checkpoints.read_meta(last)["config"]["train"]["checkpoint_every"] == 1
