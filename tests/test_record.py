"""The recorder: the headless core driven by a scripted input with two rewinds on the real
emulator, the key mapping, and the pygame window on SDL's dummy video driver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ale_py
import numpy as np
import pytest

from jax_reset import demos
from jax_reset.demos.record import SNAPSHOT_FRAMES, Recorder
from jax_reset.demos.record_window import keys_to_action
from tests.conftest import REPO


def test_scripted_recording_with_two_rewinds_saves_the_kept_path(tmp_path: Path) -> None:
    rec = Recorder("Pong")
    rng = np.random.default_rng(0)
    script = rng.integers(0, rec.num_actions, size=700)
    kept: list[int] = []
    for a in script[:400]:
        rec.step(int(a))
        kept.append(int(a))
    ram_at_390 = None
    rec.back(10)  # rewind 1: ten frames, one at a time as Backspace does
    del kept[-10:]
    assert rec.status().frame == 390
    ram_at_390 = rec.ale.getRAM().copy()
    for a in script[400:600]:
        rec.step(int(a))
        kept.append(int(a))
    info = rec.back_seconds(2.0)  # rewind 2: 120 frames, across a snapshot boundary
    del kept[-120:]
    assert info.frame == 470 and info.frame % SNAPSHOT_FRAMES != 0
    for a in script[600:]:
        rec.step(int(a))
        kept.append(int(a))
    assert rec.status().frame == len(kept) == 570
    path, _ = rec.save(tmp_path / "rec.npz")
    demo = demos.load(path)
    np.testing.assert_array_equal(demo.actions, np.asarray(kept, dtype=np.uint8))
    assert demo.header["source"] == "record" and demo.score == rec.status().score
    assert all(r.exact for r in demos.verify(demo))
    done = subprocess.run([sys.executable, "-m", "jax_reset.demo", "verify", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "5/5" in done.stdout, done.stdout + done.stderr
    # A rewind lands on the very state a straight replay of the kept actions reaches.
    ale = demo.make_ale()
    demo.restore(ale, 390)
    np.testing.assert_array_equal(ale.getRAM(), ram_at_390)
    # And it trains: a few updates of the smoke job from the recorded demo.
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "-m", "jax_reset.train", "--config", "configs/smoke.toml", "--run-dir",
         str(run_dir), f"demo.demo_path={path}", "train.total_updates=2",
         "train.checkpoint_every=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "570 frames" in trained.stdout and (run_dir / "checkpoints" / "2").is_dir()


def test_rewind_stops_at_the_start_and_game_over_freezes_steps() -> None:
    rec = Recorder("Pong")
    for _ in range(5):
        rec.step(1)
    assert rec.back(100).frame == 0 and rec.actions.size == 0
    with pytest.raises(ValueError, match=r"not in 0\.\.5"):
        rec.step(6)
    for _ in range(30_000):  # NOOP loses Pong 0:21
        if rec.step(0).game_over:
            break
    end = rec.status()
    assert end.game_over and rec.step(0) == end  # frozen until a rewind
    assert not rec.back(1).game_over and rec.status().frame == end.frame - 1


def test_keys_map_onto_the_minimal_set() -> None:
    pong = [ale_py.Action(a) for a in (0, 1, 3, 4, 11, 12)]  # NOOP FIRE RIGHT LEFT RF LF
    assert keys_to_action(False, False, False, False, False, pong) == 0
    assert keys_to_action(False, False, False, True, True, pong) == 4  # RIGHTFIRE
    assert keys_to_action(True, False, False, False, True, pong) == 1  # no UP in Pong: FIRE
    assert keys_to_action(True, False, True, True, False, pong) == 0  # left+right cancel
    full = list(ale_py.Action)
    assert full[keys_to_action(True, False, True, False, True, full)] == ale_py.Action.UPLEFTFIRE


def test_no_display_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    done = subprocess.run([sys.executable, "-m", "jax_reset.demo", "record", "--game", "Pong",
                           "--out", "/tmp/never.npz"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: no display"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_window_on_the_dummy_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Posted key events drive the real window: hold RIGHT+space, Backspace back, R, S, Esc."""
    pygame = pytest.importorskip("pygame", reason="pygame is in the dev extra")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    from jax_reset.demos.record_window import RecorderWindow

    rec = Recorder("Pong")
    window = RecorderWindow(rec, tmp_path / "w.npz", speed=1000.0, rewind_s=0.5)

    def key(kind: int, k: int) -> None:
        pygame.event.post(pygame.event.Event(kind, key=k))

    try:
        key(pygame.KEYDOWN, pygame.K_RIGHT)
        key(pygame.KEYDOWN, pygame.K_SPACE)
        for _ in range(200):
            assert window.tick()
        key(pygame.KEYUP, pygame.K_SPACE)
        for _ in range(100):
            assert window.tick()
        key(pygame.KEYDOWN, pygame.K_BACKSPACE)  # held for 10 ticks: 10 frames back
        for _ in range(10):
            assert window.tick()
        key(pygame.KEYUP, pygame.K_BACKSPACE)
        key(pygame.KEYUP, pygame.K_RIGHT)
        key(pygame.KEYDOWN, pygame.K_r)  # 30 frames back, then this tick plays one NOOP
        assert window.tick()
        key(pygame.KEYUP, pygame.K_r)
        key(pygame.KEYDOWN, pygame.K_s)
        assert window.tick()  # saves, then plays one more NOOP frame (not in the file)
        key(pygame.KEYDOWN, pygame.K_ESCAPE)
        assert not window.tick()
    finally:
        window.close()
    assert window.saved == tmp_path / "w.npz"
    demo = demos.load(window.saved)
    expected = [4] * 200 + [2] * (100 - 10 - 30) + [0]  # RIGHTFIRE, RIGHT, the NOOP after R
    assert demo.actions.tolist() == expected
    assert all(r.exact for r in demos.verify(demo))
