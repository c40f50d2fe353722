"""Real Orbax checkpoints on disk: round trip, retention, refusals, interrupted saves, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_reset import curriculum as cur
from jax_reset.curriculum import MAX_STARTING_POINT, CurriculumConfig
from jax_reset.metrics import EVAL_SCORE
from jax_reset.run.checkpoint import Checkpoints
from jax_reset.run.checkpoint_meta import (
    CheckpointError,
    CorruptCheckpoint,
    NonFiniteState,
    check_compatible,
    make_meta,
    network_shape,
)
from jax_reset.run.state import _newest_readable
from jax_reset.training.stop import StopFlag

FROZEN = ("network", "env", "train.num_envs", "train.demo")


def make_state(hidden: int = 8, seed: int = 0, step: int = 0) -> dict:
    key = jax.random.PRNGKey(seed)
    params = {
        "torso": {"kernel": jax.random.normal(key, (4, hidden)), "bias": jnp.zeros(hidden)},
        "head": {"kernel": jnp.ones((hidden, 3)) * seed},
    }
    opt_state = optax.adam(1e-3).init(params)
    return {"params": params, "opt_state": opt_state,
            "update": np.asarray(step, np.int64), "agent_steps": np.asarray(2**40 + step, np.int64),
            "rng": jax.random.fold_in(key, step)}


def config_dict(lr: float = 1e-4, hidden: int = 8) -> dict:
    return {"network": {"core_size": hidden}, "ppo": {"learning_rate": lr},
            "train": {"num_envs": 4, "demo": "demos/Pong.npz", "total_updates": 10}}


def assert_trees_equal(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip(tmp_path: Path) -> None:
    state = make_state(seed=1, step=7)
    curriculum = cur.update(cur.init(4, 500, CurriculumConfig(decision_interval=8)),
                            cur.EpisodeRecords.make([499, 498], [True, False]), 8,
                            CurriculumConfig(decision_interval=8))[0]
    meta = make_meta(config_dict(), state["params"], game="Pong")
    with Checkpoints(tmp_path / "ckpt", keep_last=2) as ckpt:
        assert ckpt.save(7, state, cur.to_json(curriculum), meta,
                         metrics={"curriculum/max_starting_point": 499})
        assert not ckpt.save(7, state, cur.to_json(curriculum), meta,
                             metrics={"curriculum/max_starting_point": 499})
    # A new manager over the same folder, as after a restart.
    with Checkpoints(tmp_path / "ckpt", keep_last=2) as ckpt:
        assert ckpt.latest_step() == 7
        step, restored, cur_json, meta_back = ckpt.restore(make_state(seed=5))
    assert step == 7 and meta_back == meta
    assert_trees_equal(restored, state)
    assert type(restored["opt_state"][0]).__name__ == "ScaleByAdamState"
    assert int(restored["agent_steps"]) == 2**40 + 7
    assert cur.equal(cur.from_json(cur_json), curriculum)


def test_array_data_that_fail_their_checksums_are_a_corrupt_checkpoint(tmp_path: Path) -> None:
    """Bytes inverted in the middle of the state's array data: the files still read, and
    without checksums the restore returned the altered weights without a word."""
    state = make_state(hidden=256, seed=1, step=3)
    meta = make_meta(config_dict(), state["params"], game="Pong")
    curriculum = cur.to_json(cur.init(4, 500, CurriculumConfig()))
    with Checkpoints(tmp_path / "ckpt", keep_last=2, async_save=False) as ckpt:
        assert ckpt.save(3, state, curriculum, meta, metrics={MAX_STARTING_POINT: 499})
    data = max((tmp_path / "ckpt" / "3" / "state" / "ocdbt.process_0" / "d").iterdir(),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    data.write_bytes(bytes(raw))
    with Checkpoints(tmp_path / "ckpt", read_only=True) as ckpt, pytest.raises(
            CorruptCheckpoint, match=r"checkpoint 3 .* do not match their checksums"):
        ckpt.restore(make_state(hidden=256))


def test_a_state_with_nan_or_inf_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    state = make_state(step=5)
    bad = {**state, "params": {**state["params"], "head": {"kernel": jnp.full((8, 3), jnp.nan)}}}
    meta = make_meta(config_dict(), state["params"], game="Pong")
    curriculum = cur.to_json(cur.init(4, 500, CurriculumConfig()))
    with Checkpoints(tmp_path / "ckpt", keep_last=2) as ckpt:
        assert ckpt.save(5, state, curriculum, meta, metrics={MAX_STARTING_POINT: 499})
        with pytest.raises(NonFiniteState, match=r"'params/head/kernel'.*last checkpoint: 5"):
            ckpt.save(6, bad, curriculum, meta, metrics={MAX_STARTING_POINT: 499})
        ckpt.wait()
        assert ckpt.steps() == [5]


def test_extra_json_items_are_optional_per_step(tmp_path: Path) -> None:
    """The stall item is saved beside the curriculum's; a step written without it reads None."""
    state = make_state()
    meta = make_meta(config_dict(), state["params"])
    stall_json = {"version": 1, "decisions_without_move": 2, "scale": 0.5, "best_max": 480}
    with Checkpoints(tmp_path, keep_last=3, async_save=False) as ckpt:
        ckpt.save(1, state, {}, meta, {MAX_STARTING_POINT: 5})  # as before the item existed
        ckpt.save(2, state, {}, meta, {MAX_STARTING_POINT: 4}, extra={"stall": stall_json})
        with pytest.raises(ValueError, match="unknown checkpoint items"):
            ckpt.save(3, state, {}, meta, {MAX_STARTING_POINT: 3}, extra={"stal": {}})
    with Checkpoints(tmp_path, keep_last=3) as ckpt:  # a fresh manager, as after a restart
        assert ckpt.steps() == [1, 2]
        assert ckpt.read_item("stall") == stall_json  # the latest
        assert ckpt.read_item("stall", 1) is None
        with pytest.raises(ValueError, match="unknown checkpoint item"):
            ckpt.read_item("curriculum")


def test_meta_drops_retired_config_keys(tmp_path: Path) -> None:
    """A checkpoint written before ``network.obs_layout`` was removed: its config reads without
    the key (its only value, "chw", is today's behaviour); another value is refused."""
    state = make_state()
    old = config_dict()
    old["network"]["obs_layout"] = "chw"
    with Checkpoints(tmp_path / "a") as ckpt:
        ckpt.save(1, state, {}, make_meta(old, state["params"]), {MAX_STARTING_POINT: 1})
    with Checkpoints(tmp_path / "a") as ckpt:
        assert ckpt.read_meta()["config"] == config_dict()
        assert ckpt.restore(make_state())[3]["config"] == config_dict()
    old["network"]["obs_layout"] = "hwc"
    with Checkpoints(tmp_path / "b") as ckpt:
        ckpt.save(1, state, {}, make_meta(old, state["params"]), {MAX_STARTING_POINT: 1})
    with Checkpoints(tmp_path / "b") as ckpt, pytest.raises(CheckpointError) as err:
        ckpt.read_meta()
    assert "network.obs_layout = 'hwc'" in str(err.value) and "\n" not in str(err.value)


def test_keeps_last_k_plus_best(tmp_path: Path) -> None:
    state = make_state()
    meta = make_meta(config_dict(), state["params"])
    sps = [50, 10, 40, 30, 60, 55]
    with Checkpoints(tmp_path, keep_last=2, async_save=False) as ckpt:
        for step, sp in enumerate(sps, start=1):
            ckpt.save(step, state, {}, meta, metrics={"curriculum/max_starting_point": sp})
        assert ckpt.steps() == [2, 5, 6]
        assert ckpt.best_step() == 2
    # After a restart the best is still known and still kept.
    with Checkpoints(tmp_path, keep_last=2, async_save=False) as ckpt:
        assert ckpt.best_step() == 2
        ckpt.save(7, state, {}, meta, metrics={"curriculum/max_starting_point": 70})
        assert ckpt.steps() == [2, 6, 7]
        with pytest.raises(ValueError, match="max_starting_point"):
            ckpt.save(7, state, {}, meta, metrics={})


def test_the_best_checkpoint_is_the_best_evaluated_one(tmp_path: Path) -> None:
    """The best checkpoint is the one whose evaluation from the game's start scored highest,
    whatever the curriculum's position, so a policy that collapses after its best evaluation
    (Montezuma's first rooms, seed 1: 3,600 in 8 of 8 games at update 2,900 with the curriculum
    at frame 208, 0 at update 3,000 at the start) keeps it; a step never evaluated ranks below
    every evaluated one; of equal scores the lower starting point, then the newest."""
    state = make_state()
    meta = make_meta(config_dict(), state["params"])
    saves = [(900, None), (208, 3600.0), (0, None), (0, 100.0), (0, 0.0), (0, None)]
    with Checkpoints(tmp_path, keep_last=2, async_save=False) as ckpt:
        for step, (sp, score) in enumerate(saves, start=1):
            metrics = {MAX_STARTING_POINT: sp, **({} if score is None else {EVAL_SCORE: score})}
            ckpt.save(step, state, {}, meta, metrics=metrics)
        assert ckpt.best_step() == 2 and ckpt.steps() == [2, 5, 6]
    with Checkpoints(tmp_path, keep_last=2, async_save=False) as ckpt:  # after a restart
        assert ckpt.best_step() == 2
        ckpt.save(7, state, {}, meta, metrics={MAX_STARTING_POINT: 0, EVAL_SCORE: 3600.0})
        assert ckpt.best_step() == 7 and ckpt.steps() == [6, 7]  # same score, lower start
    with Checkpoints(tmp_path, read_only=True, score_metric=None) as ckpt:
        assert ckpt.best_step() == 7  # by the starting point alone: the newest at 0


def test_refuses_another_network(tmp_path: Path) -> None:
    state = make_state(hidden=8)
    with Checkpoints(tmp_path) as ckpt:
        ckpt.save(3, state, {}, make_meta(config_dict(hidden=8), state["params"]),
                  metrics={"curriculum/max_starting_point": 1})
    other = make_state(hidden=16)
    with Checkpoints(tmp_path) as ckpt:
        saved = ckpt.read_meta()
        with pytest.raises(CheckpointError, match="different network shape") as err:
            check_compatible(saved, make_meta(config_dict(hidden=16), other["params"]), FROZEN)
        assert "\n" not in str(err.value) and "head/kernel" in str(err.value)
        # Restoring into a differently shaped state is refused before Orbax touches it.
        shape_error = r"'params/head/kernel' has shape \(8, 3\) in the checkpoint"
        with pytest.raises(CheckpointError, match=shape_error) as err:
            ckpt.restore(other)
        assert "\n" not in str(err.value)
        missing = make_state()
        del missing["rng"]
        with pytest.raises(CheckpointError, match="'rng'"):
            ckpt.restore(missing)
        with pytest.raises(CheckpointError, match="no checkpoint at step 9"):
            ckpt.restore(state, step=9)
    with Checkpoints(tmp_path / "empty") as ckpt, pytest.raises(CheckpointError, match="no check"):
        ckpt.read_meta()


def test_config_changes_frozen_or_allowed() -> None:
    params = make_state()["params"]
    saved = make_meta(config_dict(), params)
    # A lower learning rate on resume is allowed and reported.
    assert check_compatible(saved, make_meta(config_dict(lr=3e-5), params), FROZEN) == [
        "ppo.learning_rate"]
    changed = config_dict()
    changed["train"]["num_envs"] = 8
    with pytest.raises(CheckpointError, match=r"train.num_envs \(4 -> 8\)"):
        check_compatible(saved, make_meta(changed, params), FROZEN)
    changed = config_dict()
    changed["network"]["core_size"] = 9  # same params here, but the config says otherwise
    with pytest.raises(CheckpointError, match=r"network\.core_size"):
        check_compatible(saved, make_meta(changed, params), FROZEN)
    assert network_shape(params)["torso/kernel"] == [[4, 8], "float32"]


def test_killed_during_a_save_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """A process killed while Orbax writes leaves the previous checkpoint restorable."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from jax_reset.run.checkpoint import Checkpoints
        ckpt = Checkpoints({str(tmp_path)!r}, keep_last=1)
        small = {{"w": np.ones(4, np.float32), "update": np.asarray(1, np.int64)}}
        ckpt.save(1, small, {{"at": 1}}, {{"format": 1}}, {{"curriculum/max_starting_point": 5}})
        ckpt.wait()
        big = {{"w": np.ones(4, np.float32), "update": np.asarray(2, np.int64),
                "pad": np.random.default_rng(0).random(40_000_000)}}
        ckpt.save(2, big, {{"at": 2}}, {{"format": 1}}, {{"curriculum/max_starting_point": 4}})
        os._exit(3)  # as a crash: no wait, no close
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    target = {"w": np.zeros(4, np.float32), "update": np.asarray(0, np.int64)}
    with Checkpoints(tmp_path, keep_last=1) as ckpt:
        assert ckpt.steps() == [1]
        step, state, curriculum, _ = ckpt.restore(target)
    assert step == 1 and int(state["update"]) == 1 and curriculum == {"at": 1}
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_main_thread_only(tmp_path: Path) -> None:
    state = make_state()
    with Checkpoints(tmp_path) as ckpt:
        errors: list[BaseException] = []

        def save_from_thread() -> None:
            try:
                ckpt.save(1, state, {}, {}, {"curriculum/max_starting_point": 1})
            except RuntimeError as err:
                errors.append(err)

        t = threading.Thread(target=save_from_thread)
        t.start()
        t.join()
        assert errors and "main thread" in str(errors[0])
        assert ckpt.steps() == []


def test_stop_flag_catches_signals_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as flag:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal: the user insists
    assert signal.getsignal(signal.SIGTERM) is before


def test_interrupted_save_folders_are_removed_on_open(tmp_path: Path) -> None:
    """A save interrupted at any point leaves only a temporary folder; opening removes it."""
    with Checkpoints(tmp_path, keep_last=2) as ckpt:
        ckpt.save(1, {"w": np.ones(2, np.float32)}, {"at": 1}, {"format": 1},
                  {"curriculum/max_starting_point": 3})
    stale = tmp_path / "2.orbax-checkpoint-tmp-1700000000"
    (stale / "state").mkdir(parents=True)
    (stale / "state" / "partial").write_bytes(b"\0" * 64)
    with Checkpoints(tmp_path, keep_last=2) as ckpt:
        assert not stale.exists()
        assert ckpt.steps() == [1]


def test_orbax_closed_loop_race_is_quiet_and_other_thread_errors_are_not() -> None:
    """A failed restore's event-loop thread may call into its closed loop: that traceback is
    left out (the failure was named in one line); any other thread error still goes through."""
    import sys
    import threading

    from jax_reset.run import disk

    seen: list[str] = []
    saved = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda args: seen.append(str(args.exc_value))
    try:
        disk.quiet_closed_loop_races()  # wraps whatever hook is in place

        def boom(message: str) -> None:
            raise RuntimeError(message)

        for message in ("Event loop is closed", "something else"):
            t = threading.Thread(target=boom, args=(message,))
            t.start()
            t.join()
    finally:
        threading.excepthook, sys.unraisablehook = saved
    assert seen == ["something else"]


def test_read_failures_of_a_passed_over_checkpoint_are_not_logged_again() -> None:
    """Every array read of a corrupt checkpoint fails; the first is named in one line, the
    others' tracebacks (asyncio's "Task exception was never retrieved") are dropped; other
    errors are kept."""
    import logging

    from jax_reset.run import disk

    quiet = disk.QuietWriteFailures(only_from=None)

    def record(message: str) -> logging.LogRecord:
        err = Exception(message)
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                 "Task exception was never retrieved", None,
                                 (Exception, err, None))

    assert not quiet.filter(record("Encountered error while reading array index: (slice(0, 3))"))
    assert quiet.filter(record("something else went wrong"))


def test_listing_a_folder_whose_steps_are_deleted_meanwhile(tmp_path: Path) -> None:
    """A reader beside a trainer: Orbax lists the step folders, then reads each one's time; a
    step the trainer's retention deletes in between is no error for the reader (it failed an
    ``evaluate`` in CI), opening and re-reading the folder list what is there."""
    state = make_state()
    meta = make_meta(config_dict(), state["params"], game="Pong")
    folder = tmp_path / "ckpt"
    with Checkpoints(folder, keep_last=100, async_save=False) as ckpt:
        for step in range(1, 41):
            ckpt.save(step, state, cur.to_json(cur.init(1, 10, CurriculumConfig())), meta,
                      metrics={"curriculum/max_starting_point": 10})
    stop = threading.Event()

    def delete_steps() -> None:  # the trainer's retention, oldest first
        for step in range(1, 41):
            if stop.is_set():
                return
            subprocess.run(["rm", "-rf", str(folder / str(step))], check=True)

    deleter = threading.Thread(target=delete_steps)
    deleter.start()
    try:
        while deleter.is_alive():
            reader = Checkpoints(folder, read_only=True)
            reader.reload()
            assert set(reader.steps()) <= set(range(1, 41))
            reader.close()
    finally:
        stop.set()
        deleter.join()


def test_a_half_deleted_step_is_a_corrupt_checkpoint_not_another_network(tmp_path: Path) -> None:
    """A step whose removal is under way (a trainer's retention, beside a reader) or was
    stopped part way has lost its commit file and the state's index first; Orbax then reports
    no state tree at all, which was refused as "written by a different network" (a one-line
    error that failed an ``evaluate`` in CI) instead of a damaged step a caller passes over."""
    state = make_state(step=3)
    meta = make_meta(config_dict(), state["params"], game="Pong")
    with Checkpoints(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(3, state, cur.to_json(cur.init(1, 10, CurriculumConfig())), meta,
                  metrics={MAX_STARTING_POINT: 10})
    (tmp_path / "ckpt" / "3" / "_CHECKPOINT_METADATA").unlink()
    (tmp_path / "ckpt" / "3" / "state" / "_METADATA").unlink()
    with Checkpoints(tmp_path / "ckpt", read_only=True) as ckpt, pytest.raises(
            CorruptCheckpoint, match=r"checkpoint 3 .* array index is missing; .* being deleted"):
        ckpt.restore(make_state())


def test_a_walk_over_a_folder_that_changed_starts_again_over_what_is_there() -> None:
    """The reader listed step 14 alone; the trainer then saved 16 and began deleting 14, whose
    read fails while its folder is still listed. The walk starts again over 16 and 14 and
    reads 16; it used to end with "no checkpoint restores" as 14 was still there."""
    on_disk = [14]

    def read(step: int) -> int:
        if step == 14:
            on_disk.insert(0, 16)
            raise CorruptCheckpoint("checkpoint 14 cannot be read (half deleted)")
        return step

    passed_over: list[str] = []
    assert _newest_readable([14], read, "run", passed_over.append,
                            relist=lambda: list(on_disk)) == 16
    assert passed_over == []  # not damaged, so not named
    # A folder that did not change: the damaged newest is named and the next older read.
    def read_old(step: int) -> int:
        if step == 4:
            raise CorruptCheckpoint("checkpoint 4 cannot be read")
        return step

    assert _newest_readable([4, 2], read_old, "run", passed_over.append,
                            relist=lambda: [4, 2]) == 2
    assert passed_over == ["checkpoint 4 cannot be read: trying checkpoint 2"]
