"""Pool plumbing: asynchronous send/recv, worker failures, clean shutdown (no leaks)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from jax_reset.envs import AtariPool, EnvConfig, PoolError

SHM = Path("/dev/shm")


def _segments(pool: AtariPool) -> list[str]:
    """The pool's shared-memory segments. (Checked by name: other processes on this machine
    may create and remove segments of their own meanwhile.)"""
    return [s.name for s in pool._segments]


def _leaked(names: list[str]) -> list[str]:
    return [n for n in names if (SHM / n.lstrip("/")).exists()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has no resources left.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_async_halves_match_sync_steps() -> None:
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 6, (40, 6)).astype(np.int32)
    half_a, half_b = np.array([0, 2, 4]), np.array([1, 3, 5])
    with AtariPool("Pong", 6, 2, seed=5) as sync, AtariPool("Pong", 6, 2, seed=5) as asyn:
        np.testing.assert_array_equal(sync.reset().obs, asyn.reset().obs)
        asyn.send(actions[0, half_a], half_a)
        for t in range(40):
            ref = sync.step(actions[t])
            asyn.send(actions[t, half_b], half_b)  # B emulates while A's result is used
            got_a = asyn.recv()
            np.testing.assert_array_equal(got_a.env_ids, half_a)
            np.testing.assert_array_equal(got_a.obs, ref.obs[half_a])
            with pytest.raises(RuntimeError, match="unanswered send"):
                asyn.send(actions[t, half_b], half_b)
            with pytest.raises(RuntimeError, match="recv"):
                asyn.ram(half_a)  # its reply would be taken for B's
            if t + 1 < 40:
                asyn.send(actions[t + 1, half_a], half_a)
            got_b = asyn.recv()
            np.testing.assert_array_equal(got_b.obs, ref.obs[half_b])
            np.testing.assert_array_equal(got_b.reward, ref.reward[half_b])
        names = _segments(sync) + _segments(asyn)
    assert names and not _leaked(names)


def test_pool_step_arrays_follow_the_contract() -> None:
    """Every PoolStep array has the dtype and per-env shape its declaration gives, for all envs
    and for a subset of them (the two copy paths of recv)."""
    from jax_reset.envs.contract import OUTPUT_FIELDS, PoolStep

    cfg = EnvConfig(img_height=42, img_width=32, gray_scale=True, stack_num=2)
    names = [f.name for f in dataclasses.fields(PoolStep)]
    assert names == ["env_ids", *OUTPUT_FIELDS]
    with AtariPool("Pong", 3, 2, config=cfg) as pool:
        outs = [pool.reset(), pool.step(np.zeros(2, np.int32), [2, 0])]
    for out, ids in zip(outs, [[0, 1, 2], [2, 0]], strict=True):
        np.testing.assert_array_equal(out.env_ids, ids)
        for name, field in OUTPUT_FIELDS.items():
            arr = getattr(out, name)
            assert arr.dtype == np.dtype(field.dtype), name
            assert arr.shape == field.shape(len(ids), (2, 42, 32)), name
        assert out.obs.any()  # a real screen, not the zeroed segment


def test_killed_worker_is_an_error_within_a_second() -> None:
    pool = AtariPool("Pong", 4, 2)
    names = _segments(pool)
    pids = [p.pid for p in pool._workers.procs]
    pool.reset()
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(PoolError, match=r"worker 1 .* died"):
        for _ in range(100):
            pool.step(np.zeros(4, np.int32))
    assert time.monotonic() - t0 < 1.0
    assert not any(_alive(pid) for pid in pids)  # the pool closed itself
    assert not _leaked(names)
    with pytest.raises(PoolError, match="closed"):
        pool.step(np.zeros(4, np.int32))


def test_worker_exception_is_reported_with_its_traceback() -> None:
    pool = AtariPool("Pong", 2, 2)
    names = _segments(pool)
    pids = [p.pid for p in pool._workers.procs]
    pool._dispatch(ord("?"), np.array([0], np.int32))  # an opcode the worker does not know
    t0 = time.monotonic()
    with pytest.raises(PoolError, match=r"(?s)worker 0 raised.*unknown command opcode"):
        pool.recv()
    assert time.monotonic() - t0 < 1.0
    assert not any(_alive(pid) for pid in pids)
    assert not _leaked(names)


def test_a_pool_that_does_not_wait_finishes_its_start_at_the_first_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait=False``: the constructor returns while the workers start and replay the demos for
    their dense states (the trainer builds its network meanwhile); the first call finishes the
    start and sees what a pool that waited sees. Two demos (here the same file twice): each
    worker was asked for a chunk of both before any is loaded. A worker lost meanwhile raises
    at the first call."""
    from jax_reset.envs import DemoResetConfig, demo_states

    monkeypatch.setattr(demo_states, "_STATE_CACHE", {})  # the states are replayed, not reused
    two = DemoResetConfig(demo_paths=("demos/Pong.npz", "demos/Pong.npz"), start_noop_max=0)
    frames = np.array([9_000, 22_869, 9_000, 22_869])
    with AtariPool(None, 4, 2, demo=two, seed=3, env_demos=[0, 0, 1, 1], wait=False) as pool:
        assert not pool._started and pool.num_actions == 6  # known before the workers answer
        assert [len(r.jobs) for r in pool._states_requests] == [2, 2]
        got, got_ram = pool.restore(None, frames), pool.ram()
        assert pool._started and pool.demo_states_build_s > 0
    one = DemoResetConfig("demos/Pong.npz", start_noop_max=0)
    with AtariPool(None, 4, 2, demo=one, seed=3) as waited:
        assert waited._started
        want, want_ram = waited.restore(None, frames), waited.ram()
    np.testing.assert_array_equal(got.obs, want.obs)
    np.testing.assert_array_equal(got.frame, want.frame)
    np.testing.assert_array_equal(got_ram, want_ram)

    pool = AtariPool(None, 2, 2, demo=one, wait=False)
    names, pids = _segments(pool), [p.pid for p in pool._workers.procs]
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(PoolError, match=r"worker 0 .* died"):
        pool.reset()
    assert not any(_alive(pid) for pid in pids) and not _leaked(names)  # closed itself


def test_close_and_exceptions_stop_workers_and_free_memory() -> None:
    with pytest.raises(KeyboardInterrupt), AtariPool("Pong", 2, 2) as pool:
        pids = [p.pid for p in pool._workers.procs]
        names = _segments(pool)
        pool.reset()
        raise KeyboardInterrupt
    assert not any(_alive(pid) for pid in pids)
    assert not _leaked(names)
    pool.close()  # idempotent


def test_ctrl_c_in_a_real_process_leaves_nothing_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from jax_reset.envs import AtariPool
        if __name__ == "__main__":
            with AtariPool("Pong", 2, 2) as pool:
                print(pool._segments[0].name, *[p.pid for p in pool._workers.procs], flush=True)
                while True:
                    pool.step(np.zeros(2, np.int32))
        """
    )
    path = tmp_path / "run.py"
    path.write_text(script)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    name, *pids = proc.stdout.readline().decode().split()
    pids = [int(x) for x in pids]
    assert len(pids) == 2 and not _leaked([]) and (SHM / name).exists()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
    _, err = proc.communicate(timeout=10)
    assert b"KeyboardInterrupt" in err
    assert b"leaked" not in err  # the resource tracker's warning
    assert not any(_alive(pid) for pid in pids)
    assert not _leaked([name])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EnvConfig(frame_skip=0)
    with pytest.raises(ValueError, match="fork"):
        AtariPool("Pong", 2, 1, start_method="fork")


def test_noop_starts_and_sticky_actions() -> None:
    cfg = EnvConfig(noop_max=30, repeat_action_probability=0.25, fire_reset=False)
    with AtariPool("Pong", 8, 2, config=cfg, seed=2) as pool:
        out = pool.reset()
        assert out.frame.min() >= 1 and out.frame.max() <= 30
        assert len(set(out.frame.tolist())) > 1  # 1..30 NOOP frames, drawn per env
        # Frame accounting: the NOOP frames are reset frames, not experience.
        np.testing.assert_array_equal(out.reset_frames, out.frame)
        assert not out.step_frames.any()
        for _ in range(5):
            out = pool.step(np.ones(8, np.int32))
            assert out.step_frames.tolist() == [4] * 8 and not out.reset_frames.any()
        assert out.obs.shape == (8, *cfg.obs_shape)
