"""The run directory survives: corrupted checkpoints, two trainers, a kill before the first
checkpoint, a full disk, a read-only directory. Real trainers on the smoke config, real Orbax
files, real processes, real (tmpfs, bind) mounts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jax_reset.metrics import read_jsonl
from jax_reset.run.checkpoint import Checkpoints
from jax_reset.run.lock import RunLock, holder
from tests.conftest import REPO, SMOKE, copy_run, train_cmd, wait_for_update
from tests.helpers import mounted


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO),
            "JAX_RESET_TEST_TAG": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def base_run(smoke_run_template: Path) -> Path:
    """Four smoke updates, checkpoints 2 and 4 (the session's): copied by each test that
    changes it."""
    return smoke_run_template



def run(cmd: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# ---- row 1: a corrupted newest checkpoint -------------------------------------------------


def corrupt(run_dir: Path, step: int, how: str) -> None:
    folder = run_dir / "checkpoints" / str(step)
    data = max((folder / "state" / "ocdbt.process_0" / "d").iterdir(),
               key=lambda p: p.stat().st_size)  # the largest array file of the state
    if how == "truncate":  # cut short
        os.truncate(data, 100)
    elif how == "flip":  # 64 bytes in the middle of the array data inverted: the files read
        raw = bytearray(data.read_bytes())
        mid = len(raw) // 2
        raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
        data.write_bytes(bytes(raw))
    elif how == "half_deleted":  # what a removal stopped part way leaves (rmtree's first files)
        (folder / "_CHECKPOINT_METADATA").unlink()
        (folder / "state" / "_METADATA").unlink()
    else:
        (folder / "meta" / "metadata").write_text("garbage{")


@pytest.mark.parametrize("how", ["truncate", "garbage_meta", "flip", "half_deleted"])
def test_resume_falls_back_past_a_corrupted_checkpoint(base_run: Path, tmp_path: Path,
                                                       env: dict[str, str], how: str) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    corrupt(run_dir, 4, how)
    done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=5"), env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    named = [ln for ln in done.stdout.splitlines() if "checkpoint 4" in ln and "cannot" in ln]
    assert len(named) == 1 and named[0].endswith("trying checkpoint 2"), done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert "resumed from update 2" in done.stdout
    # The damaged one is kept aside, and the run went on from 2 to 5.
    assert (run_dir / "checkpoints-set-aside" / "4").is_dir()
    assert [r["update"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
        assert ckpt.steps() == [4, 5]  # the last 2 (keep_last=2), the best among them


@pytest.mark.parametrize("how", ["truncate", "flip", "half_deleted"])
def test_evaluate_falls_back_and_an_explicit_corrupt_one_is_one_line(
        base_run: Path, tmp_path: Path, env: dict[str, str], how: str) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    corrupt(run_dir, 4, how)
    cmd = [sys.executable, "-m", "jax_reset.evaluate", "--run-dir", str(run_dir),
           "--protocol", "plain", "--episodes", "1", "--envs", "1", "--json"]
    done = run(cmd, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"checkpoint": 2' in done.stdout.splitlines()[-1]
    named = [ln for ln in done.stderr.splitlines() if "checkpoint 4" in ln]
    assert len(named) == 1 and "trying checkpoint 2" in named[0]
    done = run([*cmd[:5], "--checkpoint", "4"], env)
    assert done.returncode == 2 and "checkpoint 4" in one_error_line(done)


def test_resume_from_an_explicit_checkpoint_sets_newer_ones_aside(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    done = run(train_cmd("--run-dir", str(run_dir), "--resume", "--checkpoint", "2",
                         "train.total_updates=3"), env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "resumed from update 2" in done.stdout and "checkpoints-set-aside" in done.stdout
    assert (run_dir / "checkpoints-set-aside" / "4" / "state").is_dir()  # kept, whole
    assert [r["update"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    # The rolled-back updates' metrics are kept beside the log, like their checkpoints.
    assert [r["update"] for r in read_jsonl(run_dir / "metrics-set-aside.jsonl")] == [3, 4]
    assert "metrics-set-aside.jsonl" in done.stdout
    with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
        assert ckpt.steps() == [2, 3]
    done = run(train_cmd("--config", str(SMOKE), "--run-dir", str(tmp_path / "new"),
                         "--checkpoint", "2"), env)
    assert done.returncode == 2 and "needs --resume" in one_error_line(done)


# ---- row 2: one trainer per run directory ---------------------------------------------------


def test_a_second_trainer_is_refused_while_one_holds_the_directory(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    with RunLock(run_dir):  # this process holds it, as a running trainer does
        t0 = time.monotonic()
        done = run(train_cmd("--run-dir", str(run_dir), "--resume"), env)
        took = time.monotonic() - t0
        line = one_error_line(done)
        assert done.returncode == 2 and f"pid {os.getpid()}" in line and "in use" in line
        assert took < 10, took  # before JAX starts (well under a second when idle)
        new = run(train_cmd("--config", str(SMOKE), "--run-dir", str(tmp_path / "fresh")), env)
        assert new.returncode == 0 or "in use" not in new.stderr  # other directories: free
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2", "4"]


@pytest.mark.slow
def test_two_real_trainers_on_one_new_run(tmp_path: Path, env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                       "train.total_updates=100000"),
                             cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while holder(run_dir).get("pid") != first.pid and time.monotonic() < deadline:
            assert first.poll() is None
            time.sleep(0.05)  # polling for the event: the holder's pid in the lock file
        second = run(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir)), env)
        assert second.returncode == 2 and f"pid {first.pid}" in one_error_line(second)
        wait_for_update(first, run_dir, 3, timeout_s=240)
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    updates = [r["update"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert updates == list(range(1, updates[-1] + 1))  # one writer
    assert not [p for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]


# ---- row 3: stopped before the first checkpoint ---------------------------------------------


@pytest.mark.parametrize("stop", ["SIGKILL", "two SIGINTs"])
def test_restart_after_a_stop_before_the_first_checkpoint(tmp_path: Path, env: dict[str, str],
                                                          stop: str) -> None:
    run_dir = tmp_path / "run"
    job = subprocess.Popen(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                                     "train.total_updates=1000", "train.checkpoint_every=1000"),
                           cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_update(job, run_dir, 1, timeout_s=240)
        if stop == "SIGKILL":
            job.kill()
        else:  # Ctrl-C twice: the second one does not wait for the save
            job.send_signal(signal.SIGINT)
            job.send_signal(signal.SIGINT)
        job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert (run_dir / "config.json").is_file()
    # What `make train` runs next: --resume, since config.json is there.
    done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=2"), env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    if stop == "SIGKILL" or "resumed from" not in done.stdout:  # two SIGINTs may save
        notes = [ln for ln in done.stdout.splitlines() if "no checkpoint" in ln]
        assert len(notes) == 1 and "starting from update 0" in notes[0], done.stdout
        assert [r["update"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]


def test_a_directory_left_before_config_json_takes_a_new_run(
        tmp_path: Path, env: dict[str, str]) -> None:
    """What a kill during the start-up leaves: the lock file and an empty checkpoints/."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "train.lock").write_text('{"pid": 999999, "host": "gone"}\n')
    done = run(train_cmd("--config", str(SMOKE), "--run-dir", str(run_dir),
                         "train.total_updates=1"), env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


# ---- rows 4 and 5: a full disk, a read-only directory --------------------------------------


def fill(fs: Path, leave_bytes: int) -> None:
    free = shutil.disk_usage(fs).free
    with (fs / "filler").open("wb") as f:
        f.write(os.urandom(max(free - leave_bytes, 0)))


def fill_up(fs: Path) -> None:
    """Fills ``fs`` to the last byte while a trainer writes to it too."""
    with (fs / "filler").open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)


def test_disk_full_is_one_line_before_the_start(base_run: Path, tmp_path: Path,
                                                env: dict[str, str]) -> None:
    with mounted(tmp_path / "fs", "size=4m") as fs:
        run_dir = copy_run(base_run, fs / "run")
        fill(fs, 64 * 1024)  # less than one checkpoint
        t0 = time.monotonic()
        done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=8"),
                   env)
        took = time.monotonic() - t0
        line = one_error_line(done)
        assert done.returncode == 1 and line.startswith("error: disk full writing")
        assert line.endswith("last checkpoint: 4") and took < 10, (line, took)
        with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
            assert ckpt.steps() == [2, 4] and ckpt.read_meta(4)["format"] == 1


@pytest.mark.slow
def test_disk_full_during_the_run_is_one_line(base_run: Path, tmp_path: Path,
                                              env: dict[str, str]) -> None:
    with mounted(tmp_path / "fs", "size=4m") as fs:
        run_dir = copy_run(base_run, fs / "run")
        size = sum(p.stat().st_size for p in (run_dir / "checkpoints" / "4").rglob("*")
                   if p.is_file())
        fill(fs, size * 3 // 2)  # one more checkpoint fits (the check passes), two do not
        done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=400",
                             "train.checkpoint_every=1"), env)
        line = one_error_line(done)
        assert done.returncode == 1 and line.startswith("error: disk full writing"), line
        last = int(line.rsplit(": ", 1)[1])
        assert "Traceback" not in done.stdout + done.stderr
        assert not [p for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]
        with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
            assert ckpt.latest_step() == last and ckpt.read_meta(last)["format"] == 1


def test_read_only_run_directory_is_one_line(base_run: Path, tmp_path: Path,
                                             env: dict[str, str]) -> None:
    source = copy_run(base_run, tmp_path / "run")
    with mounted(tmp_path / "ro", source=str(source)) as ro:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)]).returncode == 0
        for cmd, code in ((train_cmd("--run-dir", str(ro), "--resume"), 1),
                          ([sys.executable, "-m", "jax_reset.plot", "--run-dir", str(ro)], 1)):
            t0 = time.monotonic()
            done = run(cmd, env)
            took = time.monotonic() - t0
            line = one_error_line(done)
            assert done.returncode == code and "read-only file system writing" in line, line
            assert took < 10, took


def test_disk_full_between_checkpoints_ends_the_run_with_one_line(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """The disk fills while the run logs and no checkpoint is due: the metrics writers (the
    JSON lines, TensorBoard's writer thread) fail; the run ends with the one line, in bounded
    time, and the last checkpoint stays (it used to hang for good, deaf to SIGTERM)."""
    with mounted(tmp_path / "fs", "size=4m") as fs:
        run_dir = copy_run(base_run, fs / "run")
        job = subprocess.Popen(
            train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=100000",
                      "train.checkpoint_every=100000"),
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_update(job, run_dir, 6, timeout_s=120)
            fill_up(fs)
            try:
                out, err = job.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                job.send_signal(signal.SIGTERM)
                try:
                    job.communicate(timeout=30)
                    pytest.fail("the run hung on a full disk (SIGTERM ended it)")
                except subprocess.TimeoutExpired:
                    pytest.fail("the run hung on a full disk and ignored SIGTERM")
        finally:
            if job.poll() is None:
                job.kill()
                job.communicate()
        line = one_error_line(subprocess.CompletedProcess(job.args, job.returncode, out, err))
        assert job.returncode == 1 and line.startswith("error: disk full writing"), line
        assert line.endswith("last checkpoint: 4") and "Traceback" not in out + err, line
        with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
            assert ckpt.steps() == [2, 4] and ckpt.read_meta(4)["format"] == 1


def test_a_diverged_update_stops_the_run_and_keeps_the_last_good_checkpoint(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """A learning rate of 1e38 blows the parameters up at the first update after the resume; the
    next one's loss is not finite: the run stops with one line naming the last checkpoint,
    saves nothing more and deletes nothing (it used to train on, saving non-finite checkpoints
    until retention had deleted the good ones)."""
    run_dir = copy_run(base_run, tmp_path / "run")
    done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=40",
                         "train.checkpoint_every=1", "ppo.learning_rate=1e38"), env)
    line = one_error_line(done)
    assert done.returncode == 1 and line.startswith("error: update "), line
    assert "not finite" in line and "last checkpoint: " in line, line
    with Checkpoints(run_dir / "checkpoints", read_only=True) as ckpt:
        steps = ckpt.steps()
        assert steps[:2] == [2, 4] and int(line.split("last checkpoint: ")[1].split()[0]) == (
            steps[-1])
        diverged_at = int(line.split()[2].rstrip(":"))
        assert steps[-1] < diverged_at <= 40, (steps, line)


def test_evaluate_while_a_trainer_saves_and_deletes_checkpoints(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """A trainer saving every other update, keeping one: the checkpoints ``evaluate`` listed are
    deleted under it. That is not corruption: it reads one that is there (it used to fail with
    "no checkpoint restores", 4 times of 4)."""
    run_dir = copy_run(base_run, tmp_path / "run")
    job = subprocess.Popen(
        train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=100000",
                  "train.checkpoint_every=2", "train.keep_last=1"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_update(job, run_dir, 6, timeout_s=120)
        for _ in range(2):
            done = run([sys.executable, "-m", "jax_reset.evaluate", "--run-dir", str(run_dir),
                        "--protocol", "plain", "--episodes", "1", "--envs", "1", "--json"],
                       env)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "cannot be read" not in done.stderr, done.stderr[-3000:]
        assert job.poll() is None  # the trainer was saving all along
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=120)
    assert job.returncode == 0


def test_a_run_whose_config_json_was_lost_resumes_from_its_checkpoints(
        base_run: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """Every checkpoint holds the resolved config; ``config.json`` is a convenience copy (it
    used to be required: no command continued the run without it)."""
    run_dir = copy_run(base_run, tmp_path / "run")
    saved = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").unlink()
    done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=5"), env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "resumed from update 4" in done.stdout
    again = json.loads((run_dir / "config.json").read_text())
    assert again == {**saved, "train": {**saved["train"], "total_updates": 5}}


def test_plot_on_a_full_disk_is_one_line(base_run: Path, tmp_path: Path,
                                         env: dict[str, str]) -> None:
    """The plots' folder takes an empty file (the probe passes) but no PNG: one line, exit 1
    (it was a 53-line traceback from matplotlib)."""
    with mounted(tmp_path / "fs", "size=64k") as fs:
        fill_up(fs)
        done = run([sys.executable, "-m", "jax_reset.plot", "--run-dir", str(base_run),
                    "--out", str(fs / "plots")], env)
        line = one_error_line(done)
        assert done.returncode == 1 and line.startswith("error: disk full writing"), line
        assert "--out" in line


def test_the_resume_check_counts_the_blocks_a_checkpoint_takes(base_run: Path, tmp_path: Path,
                                                               env: dict[str, str]) -> None:
    """Room for a checkpoint's bytes but not for its blocks (many small files, each rounded up
    to whole pages): refused before the start, in one line (the check counted bytes and let the
    run start, to fail at its first save)."""
    with mounted(tmp_path / "fs", "size=4m") as fs:
        run_dir = copy_run(base_run, fs / "run")
        files = [p for p in (run_dir / "checkpoints" / "4").rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        blocks = sum(p.stat().st_blocks * 512 for p in files)
        assert blocks > size * 1.1, (size, blocks)
        fill(fs, (size + blocks) // 2)
        t0 = time.monotonic()
        done = run(train_cmd("--run-dir", str(run_dir), "--resume", "train.total_updates=8"),
                   env)
        line = one_error_line(done)
        assert done.returncode == 1 and "MiB free, a checkpoint of this run takes" in line, line
        assert time.monotonic() - t0 < 10
