"""The demo format: conversion, exact replay in today's ALE, and every kind of bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import ale_py
import numpy as np
import pytest

from jax_reset import demos
from jax_reset.demos import ale_state
from jax_reset.demos import format as demo_format
from jax_reset.demos.original import OriginalDemoError, read_original, restricted_loads
from tests.conftest import DEMOS, REPO, SHIPPED_GAMES


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jax_reset.demo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", params=SHIPPED_GAMES)
def demo(request) -> demos.Demo:
    return demos.load(DEMOS / f"{request.param}.npz")


def test_converted_files_are_what_the_converter_writes(originals, tmp_path):
    for game in (*SHIPPED_GAMES, "Gravitar"):
        out = demos.convert(originals / f"{game}.demo", tmp_path / f"{game}.npz")
        shipped, fresh = np.load(DEMOS / f"{game}.npz"), np.load(out)
        assert sorted(shipped.files) == sorted(fresh.files)
        for name in shipped.files:
            np.testing.assert_array_equal(shipped[name], fresh[name], err_msg=f"{game}:{name}")


def test_fields_match_the_original(originals, demo):
    original = read_original(originals / f"{demo.game}.demo")
    np.testing.assert_array_equal(demo.actions, original.actions)
    np.testing.assert_array_equal(demo.rewards, original.rewards)
    np.testing.assert_array_equal(demo.checkpoint_frames, original.checkpoint_frames)
    assert demo.returns[-1] == demo.score == demo.header["score"]
    assert demo.returns[0] == demo.rewards[0]
    assert demo.score_before(0) == 0 and demo.score_before(demo.num_frames) == demo.score
    assert demo.header["ale_py_version"] == ale_py.__version__
    # The converted states name the ROM ale-py ships, and it accepts them.
    assert ale_state.rom_md5_of(demo.checkpoint_state(0)) == demo.rom_md5


def test_random_segments_replay_exactly(demo):
    rng = np.random.default_rng(0)
    k = len(demo.checkpoint_frames)
    segments = sorted({0, k - 1, *rng.choice(k, size=12, replace=False).tolist()})
    results = demos.verify(demo, segments=segments)
    assert [r.index for r in results] == segments
    assert all(r.exact for r in results), [r for r in results if not r.exact]
    assert results[-1].ram_match is None and results[-1].end == demo.num_frames


def test_restore_to_a_random_frame_reproduces_the_demo(demo):
    """Restore at a frame between checkpoints, replay to the next checkpoint: rewards and RAM."""
    rng = np.random.default_rng(1)
    ale = demo.make_ale()
    action_set = ale.getMinimalActionSet()
    for _ in range(3):
        k = int(rng.integers(0, len(demo.checkpoint_frames) - 1))
        nxt = int(demo.checkpoint_frames[k + 1])
        frame = int(rng.integers(demo.checkpoint_frames[k] + 1, nxt))
        demo.restore(ale, frame)
        rewards = [ale.act(action_set[a]) for a in demo.actions[frame:nxt]]
        np.testing.assert_array_equal(rewards, demo.rewards[frame:nxt])
        ram = ale.getRAM().copy()
        ale.restoreState(ale_py.ALEState(demo.checkpoint_state(k + 1)))
        np.testing.assert_array_equal(ram, ale.getRAM())


def test_dense_states_equal_restored_frames():
    demo = demos.load(DEMOS / "Pong.npz")
    frames, states = demo.dense_states(stride=37)
    assert frames[0] == demo.checkpoint_frames[0] and np.all(np.diff(frames) == 37)
    ale = demo.make_ale()
    for i in (1, 50, len(frames) - 1):
        ale.restoreState(ale_py.ALEState(states[i]))
        ram = ale.getRAM().copy()
        demo.restore(ale, int(frames[i]))
        np.testing.assert_array_equal(ram, ale.getRAM())


def test_cli_verify_info_and_convert(tmp_path, originals):
    done = run_cli("verify", "demos/Pong.npz")
    assert done.returncode == 0, done.stderr
    assert "228/228" in done.stdout
    info = run_cli("info", "demos/PrivateEye.npz", "--json")
    assert info.returncode == 0
    header = json.loads(info.stdout.strip().splitlines()[-1])
    assert header["num_frames"] == 8749 and header["score"] == 100400
    done = run_cli("convert", str(originals / "Pong.demo"), str(tmp_path / "p.npz"))
    assert done.returncode == 0 and (tmp_path / "p.npz").is_file()


# --- bad input -------------------------------------------------------------------------------


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"actions": [0], "x": Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        restricted_loads(payload)
    (tmp_path / "evil.demo").write_bytes(payload)
    with pytest.raises(OriginalDemoError, match="refusing"):
        read_original(tmp_path / "evil.demo")
    done = run_cli("convert", str(tmp_path / "evil.demo"), str(tmp_path / "out.npz"),
                   "--game", "Pong")
    assert done.returncode != 0 and "refusing to load global" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.npz").exists()


def test_restricted_unpickler_refuses_object_arrays():
    payload = pickle.dumps(np.array([print], dtype=object), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(payload)


def test_truncated_original_is_refused_and_nothing_is_written(originals, tmp_path):
    data = (originals / "Pong.demo").read_bytes()
    (tmp_path / "Pong.demo").write_bytes(data[: len(data) // 2])
    with pytest.raises(demos.DemoError, match="truncated or corrupted"):
        demos.convert(tmp_path / "Pong.demo", tmp_path / "Pong.npz")
    assert list(tmp_path.iterdir()) == [tmp_path / "Pong.demo"]


def test_missing_demo_is_a_clear_error(tmp_path):
    with pytest.raises(demos.DemoError, match="no such demo file"):
        demos.load(tmp_path / "nothing.npz")
    done = run_cli("verify", str(tmp_path / "nothing.npz"))
    assert done.returncode == 2 and done.stderr.startswith("error:")


def test_wrong_game_is_refused(originals, tmp_path):
    with pytest.raises(demos.DemoError, match="wrong game"):
        demos.convert(originals / "Pong.demo", tmp_path / "x.npz", game="MontezumaRevenge")
    with pytest.raises(demos.DemoError, match="unknown game"):
        demos.convert(originals / "Pong.demo", tmp_path / "x.npz", game="Breakout")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_truncated_demo_file_is_refused(tmp_path, cut):
    data = (DEMOS / "Pong.npz").read_bytes()
    (tmp_path / "Pong.npz").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(demos.DemoError, match="truncated or corrupted"):
        demos.load(tmp_path / "Pong.npz")


def _rewrite(src, dst, *, digest: bool = False, **changes):
    """Copies a demo file with some arrays changed; ``digest``: the header's digest follows."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    if digest:
        header = json.loads(arrays["header"].tobytes())
        header[demo_format.DIGEST_KEY] = demo_format.content_digest(arrays)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


def test_inconsistent_demo_file_is_refused(tmp_path):
    _rewrite(DEMOS / "Pong.npz", tmp_path / "bad.npz", digest=True,
             actions=np.zeros(10, dtype=np.uint8))
    with pytest.raises(demos.DemoError, match="inconsistent"):
        demos.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("array", ["states", "actions", "rewards"])
def test_altered_demo_arrays_are_refused_by_load_info_and_verify(tmp_path, array):
    """One flipped byte of a state, an action or a reward fails the header's digest: every
    command that reads the demo says so in one line (4 of 9 altered demos were rated exact)."""
    with np.load(DEMOS / "Pong.npz") as npz:
        altered = npz[array].copy()
    altered.view(np.uint8)[altered.nbytes // 2] ^= 0x01
    path = tmp_path / "Pong.npz"
    _rewrite(DEMOS / "Pong.npz", path, **{array: altered})
    with pytest.raises(demos.DemoError, match="do not match the digest"):
        demos.load(path, check=False)
    for command in ("info", "verify"):
        done = run_cli(command, str(path))
        assert done.returncode == 2 and "do not match the digest" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_verify_reports_a_state_that_does_not_restore(tmp_path):
    """A demo (with a valid digest) whose sixth state ale-py refuses: verify rates that
    segment a mismatch and goes on, instead of a traceback."""
    demo = demos.load(DEMOS / "Pong.npz", check=False)
    states = [demo.checkpoint_state(k) for k in range(len(demo.checkpoint_frames))]
    states[5] = b"not a state"
    arrays = {"actions": demo.actions, "rewards": demo.rewards, "lives": demo.lives,
              "checkpoint_frames": demo.checkpoint_frames}
    demo_format.save(arrays, demo.header, states, tmp_path / "Pong.npz")
    results = demos.verify(demos.load(tmp_path / "Pong.npz"))
    bad = [r for r in results if not r.exact]
    assert [(r.index, r.error) for r in bad] == [(4, None), (5, "does not restore")]
    assert bad[0].ram_match is False and len(results) == len(states)
    done = run_cli("verify", str(tmp_path / "Pong.npz"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "226/228" in done.stdout and "MISMATCH" in done.stdout, done.stdout


def test_states_of_another_serialisation_are_refused_with_the_fix(originals, tmp_path):
    """A demo whose states the installed ale-py reads differently says how to regenerate."""
    original = read_original(originals / "Pong.demo")
    demo = demos.load(DEMOS / "Pong.npz", check=False)
    arrays = {"actions": demo.actions, "rewards": demo.rewards, "lives": None,
              "checkpoint_frames": demo.checkpoint_frames}
    demo_format.save(arrays, demo.header, original.checkpoints, tmp_path / "old.npz")
    with pytest.raises(demos.DemoError, match=r"jax_reset\.demo convert"):
        demos.load(tmp_path / "old.npz")
    assert demos.load(tmp_path / "old.npz", check=False).game == "Pong"


def test_format_version_is_checked(tmp_path):
    demo = demos.load(DEMOS / "Pong.npz", check=False)
    header = dict(demo.header, format_version=99)
    _rewrite(DEMOS / "Pong.npz", tmp_path / "v99.npz",
             header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with pytest.raises(demos.DemoError, match="format version 99"):
        demos.load(tmp_path / "v99.npz")


def test_gravitar_needs_the_users_rom(tmp_path):
    with pytest.raises(demos.DemoError, match=r"4767356fa0ed3ebe21437b4473d4ee28.*--rom"):
        demos.load(DEMOS / "Gravitar.npz")
    wrong = tmp_path / "gravitar.bin"
    wrong.write_bytes(b"\0" * 8192)
    with pytest.raises(demos.DemoError, match="needs md5 4767356fa0ed3ebe21437b4473d4ee28"):
        demos.load(DEMOS / "Gravitar.npz", rom_path=wrong)
    done = run_cli("verify", "demos/Gravitar.npz", "--rom", str(wrong))
    assert done.returncode == 2 and "4767356fa0ed3ebe21437b4473d4ee28" in done.stderr


def test_out_of_range_frame_is_refused():
    demo = demos.load(DEMOS / "PrivateEye.npz")
    ale = demo.make_ale()
    for frame in (-1, demo.num_frames + 1):
        with pytest.raises(demos.DemoError, match="outside this PrivateEye demo"):
            demo.restore(ale, frame)


def test_writes_are_atomic(tmp_path, originals):
    """An interrupted or failed conversion never leaves a half-written demo behind."""
    target = tmp_path / "Pong.npz"
    target.write_bytes(b"previous good file")
    (tmp_path / "bad.demo").write_bytes(b"\x80\x02}q\x00.")  # an empty dict: fields missing
    with pytest.raises(demos.DemoError, match="missing keys"):
        demos.convert(tmp_path / "bad.demo", target, game="Pong")
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Pong.npz", "bad.demo"]


def test_demo_files_hold_no_pickles():
    for game in (*SHIPPED_GAMES, "Gravitar"):
        # allow_pickle=False raises on any pickled member; check the dtypes too.
        with np.load(DEMOS / f"{game}.npz", allow_pickle=False) as npz:
            assert all(not npz[name].dtype.hasobject for name in npz.files)
