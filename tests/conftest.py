from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# One compilation cache for the whole session, this process and every trainer it starts (they
# inherit the environment): the tests compile the same small programs (the smoke job's network,
# update and warm-up) in dozens of processes and fixtures, and XLA's compile is most of their
# CPU time on a 2-core machine. Set before anything imports JAX, which reads it at import; a
# fresh folder per session, so timings stay those of a fresh clone. A cache the user set wins.
# Tests that start trainers pass os.environ on, never a cache of their own (each would compile
# everything again); an entry left unfinished by a killed trainer only reads as a miss (JAX
# warns and compiles). pytest-xdist's workers inherit the controller's folder.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="jax-reset-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
else:
    _SESSION_CACHE = None

# The tests compile hundreds of small programs and run each for milliseconds: LLVM's -O0 in
# XLA's CPU backend cuts the suite's compile time by about a fifth (the same HLO, unoptimised
# machine code). Passed on to the trainers the tests start; add a device count with
# ``xla_flags``.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # (pytest-xdist's workers inherit it)
    os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()


def xla_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a process with ``devices`` fake CPU devices, compiled as the tests'."""
    return f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
DEMOS = REPO / "demos"
SMOKE = REPO / "configs" / "smoke.toml"  # the tiny job most tests train
ORIGINALS = DEMOS / "original"  # the 2018 pickles (MIT), shipped with the repository
SHIPPED_GAMES = ("MontezumaRevenge", "Pitfall", "Pong", "PrivateEye")  # exact on ale-py's ROMs


@pytest.fixture(scope="session")
def originals() -> Path:
    missing = [g for g in (*SHIPPED_GAMES, "Gravitar") if not (ORIGINALS / f"{g}.demo").is_file()]
    if missing:
        pytest.fail(f"{ORIGINALS}: the original demos {missing} are missing from the checkout")
    return ORIGINALS


def train_cmd(*args: str) -> list[str]:
    """The trainer's command line in this interpreter."""
    return [sys.executable, "-m", "jax_reset.train", *args]


def processes_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``JAX_RESET_TEST_TAG=tag`` (a trainer and its
    workers): what a test checks is gone after a run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"JAX_RESET_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_envpool_child(tag: str, job: subprocess.Popen, timeout_s: float = 120.0,
                       sig: int = signal.SIGSEGV) -> int:
    """Sends ``sig`` (the emulator's known crash, a segmentation fault) to the first process
    tagged ``tag`` that has EnvPool loaded, once one exists, while ``job`` runs: the evaluation's
    child (``jax_reset.evaluation.isolated``; no other process of a run loads EnvPool). Returns
    its pid; fails if none appeared."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None:
        for pid in processes_tagged(tag):
            try:
                loaded = b"envpool" in Path(f"/proc/{pid}/maps").read_bytes()
            except OSError:
                continue
            if loaded:
                os.kill(pid, sig)
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no EnvPool process appeared (job exit code {job.poll()})")


def wait_for_update(job: subprocess.Popen, run_dir: Path, update: int,
                    timeout_s: float) -> list[dict]:
    """Waits until ``run_dir/metrics.jsonl`` has logged ``update`` while ``job`` runs; returns
    the rows. Fails with the job's output if it ended first (or the time ran out)."""
    from jax_reset.metrics import read_jsonl

    rows: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None:
        rows = read_jsonl(run_dir / "metrics.jsonl")
        if rows and rows[-1]["update"] >= update:
            break
        time.sleep(0.2)
    assert job.poll() is None, job.stdout.read()[-3000:] if job.stdout else job.returncode
    return rows


def run_module(module: str, *args: str, timeout: int = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository's root, output captured (``env``: the
    process's whole environment, else this one's)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_module_killing_its_emulator(module: str, *args: str, kill_within_s: float = 120.0,
                                    ) -> subprocess.CompletedProcess:
    """``run_module``, with the first EnvPool child the command starts killed by SIGSEGV
    (ALE's known crash; ``kill_envpool_child``) as soon as it exists. Fails if a process of the
    command is left afterwards."""
    tag = uuid.uuid4().hex
    job = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "JAX_RESET_TEST_TAG": tag})
    kill_envpool_child(tag, job, timeout_s=kill_within_s)
    out, err = job.communicate(timeout=300)
    assert processes_tagged(tag) == [], (out + err)[-3000:]
    return subprocess.CompletedProcess(job.args, job.returncode, out, err)


@pytest.fixture(scope="session")
def smoke_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four updates of the smoke config, checkpoints 2 and 4: a real run directory that no test
    changes (copy it with ``copy_run``); one trainer start for the whole session."""
    path = tmp_path_factory.mktemp("smoke_run") / "run"
    done = run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(path),
                      "train.total_updates=4", "train.checkpoint_every=2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(int(p.name) for p in (path / "checkpoints").iterdir()) == [2, 4]
    return path


def copy_run(base: Path, dest: Path) -> Path:
    """A copy of the run directory ``base`` at ``dest`` (returned)."""
    shutil.copytree(base, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def smoke_run_dir(smoke_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``smoke_run_template`` shared by the tests that only read the run (evaluation,
    plots, demos from a run); they may add their outputs to it."""
    return copy_run(smoke_run_template, tmp_path_factory.mktemp("smoke_run_read") / "run")
