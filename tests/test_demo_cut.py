"""``python -m jax_reset.demo cut``: a demo's prefix as a verified demo of its own, with its
source named in its header; one-line errors for a frame outside the demo, one before its first
state and a bad file; the shipped Montezuma prefix is that cut; files get the umask's mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jax_reset import config as cfg
from jax_reset import demos
from jax_reset.config_tree import atomic_write
from tests.conftest import DEMOS, REPO


def cut(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jax_reset.demo", "cut", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_cut_is_the_sources_prefix_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "mr.npz"
    done = cut(str(DEMOS / "MontezumaRevenge.npz"), "--end-frame", "1655", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "score 600 of 71500" in done.stdout and "+100 at frame 1,654" in done.stdout
    assert "16 states" in done.stdout and "segments exact 16/16" in done.stdout
    source, prefix = demos.load(DEMOS / "MontezumaRevenge.npz"), demos.load(out)
    assert prefix.num_frames == 1655 and prefix.score == 600.0
    np.testing.assert_array_equal(prefix.actions, source.actions[:1655])
    np.testing.assert_array_equal(prefix.rewards, source.rewards[:1655])
    np.testing.assert_array_equal(prefix.lives, source.lives[:1656])
    np.testing.assert_array_equal(prefix.checkpoint_frames, np.arange(100, 1601, 100))
    assert prefix.checkpoint_state(15) == source.checkpoint_state(15)
    assert prefix.header["cut_from"] == {
        "file": "MontezumaRevenge.npz", "content_sha256": source.header["content_sha256"],
        "num_frames": source.num_frames, "score": 71500.0, "end_frame": 1655}
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("args,message", [
    (["--end-frame", "0"], "--end-frame 0 is outside this MontezumaRevenge demo: a prefix ends "
                           "at a frame from 1 to 53,060"),
    (["--end-frame", "53061"], "--end-frame 53061 is outside this MontezumaRevenge demo"),
    (["--end-frame", "99"], "--end-frame 99 keeps no emulator state: this demo's first is at "
                            "frame 100; cut there or later"),
])
def test_bad_end_frames_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.npz"
    done = cut(str(DEMOS / "MontezumaRevenge.npz"), *args, "--out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {message}\n" or (
        done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1)
    assert not out.exists()


def test_a_bad_source_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes((DEMOS / "Pong.npz").read_bytes()[:5000])  # truncated
    done = cut(str(bad), "--end-frame", "500", "--out", str(tmp_path / "x.npz"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "truncated or corrupted demo file" in done.stderr
    done = cut(str(tmp_path / "missing.npz"), "--end-frame", "500", "--out", "x.npz")
    assert done.returncode == 2 and "no such demo file" in done.stderr


FIRST_ROOMS_EVENTS = [(360, 100), (763, 300), (1046, 100), (1654, 100), (2300, 3000)]


@pytest.mark.parametrize(("demo", "end_frame", "events", "jobs"), [
    ("MontezumaRevenge_first_rooms.npz", 2301, FIRST_ROOMS_EVENTS,
     ("montezuma_first_rooms", "montezuma_first_rooms_nodemo")),
    ("MontezumaRevenge_5900.npz", 5049,
     [*FIRST_ROOMS_EVENTS, (3942, 300), (4335, 1000), (5048, 1000)], ("montezuma_5900",)),
])
def test_the_shipped_montezuma_prefixes_are_cuts_of_the_whole_demo(
        demo: str, end_frame: int, events: list[tuple[int, int]], jobs: tuple[str, ...]) -> None:
    source = demos.load(DEMOS / "MontezumaRevenge.npz", check=False)
    prefix = demos.load(DEMOS / demo)
    assert prefix.header["cut_from"]["end_frame"] == end_frame
    assert prefix.header["cut_from"]["content_sha256"] == source.header["content_sha256"]
    assert [(int(i), prefix.rewards[i]) for i in np.flatnonzero(prefix.rewards)] == events
    assert all(r.exact for r in demos.verify(prefix))
    for stem in jobs:
        config = cfg.load(REPO / "configs" / f"{stem}.toml", on_cpu=True)
        assert config.demo.demo_path == f"demos/{demo}"
        assert config.demo.game == "MontezumaRevenge"


def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda f: f.write("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's private 0600
