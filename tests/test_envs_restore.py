"""Restores follow the recorded game, `demo_observations` equals them, frame accounting
(`step_frames`, `reset_frames`; also in test_envs_demo / test_envs_robust), the ROM check."""

from __future__ import annotations

from pathlib import Path

import ale_py
import numpy as np
import pytest

from jax_reset import demos
from jax_reset.envs import AtariPool, DemoResetConfig, EnvConfig, demo_observations, preprocess
from jax_reset.envs.demo_obs import DemoRenderer, DemoReplay, make_scratch, restore_stack
from jax_reset.envs.demo_states import build_state_chunk

GRAVITAR_MD5 = "4767356fa0ed3ebe21437b4473d4ee28"  # the ROM the Gravitar demo was recorded on


def _reference(demo: demos.Demo, config: EnvConfig, frames: np.ndarray):
    """(obs uint8 [B, stack * C, H, W], RAM uint8 [B, 128]) at `frames` with `Demo.restore` and
    plain stepping only. The screen of frame t > first checkpoint: restore t - 1 (the latest
    checkpoint and a replay: the recorded game) and act once. Up to the first checkpoint: one
    replay from the first `reset_game()` of a fresh emulator with seed 0, as the pool (seed 0)
    and `DemoRenderer` make it: PrivateEye's reset depends on the emulator's random stream (on
    some later resets of the same emulator the replay differs), so that is the one defined."""
    ale = demo.make_ale()
    action_set = ale.getMinimalActionSet()
    grab = ale.getScreenGrayscale if config.gray_scale else ale.getScreenRGB
    first = int(demo.checkpoint_frames[0])
    ale.reset_game()
    screens: dict[int, np.ndarray] = {0: grab()}
    for f in range(first):
        ale.act(action_set[int(demo.actions[f])])
        screens[f + 1] = grab()

    def screen(t: int) -> np.ndarray:
        if t not in screens:
            demo.restore(ale, t - 1)
            ale.act(action_set[int(demo.actions[t - 1])])
            screens[t] = grab()
        return screens[t]

    c, skip = config.channels, config.frame_skip
    scratch = np.zeros((config.img_height, config.img_width, 3), np.uint8)
    scratch = scratch[..., 0].copy() if config.gray_scale else scratch
    obs = np.zeros((len(frames), *config.obs_shape), np.uint8)
    ram = np.zeros((len(frames), 128), np.uint8)
    for b, f in enumerate(frames.tolist()):
        for j in range(config.stack_num):
            t = max(f - skip * (config.stack_num - 1 - j), 0)
            pool = config.max_pool and config.frame_skip > 1 and t > 0
            src = np.maximum(screen(t - 1), screen(t)) if pool else screen(t)
            preprocess.resize_chw(src, obs[b, j * c : (j + 1) * c], scratch,
                                  config.inter_area_resize)
        if f >= first:  # (before it, the RAM of the replay above; not compared)
            demo.restore(ale, f)
            ram[b] = ale.getRAM()
    return obs, ram


def test_pool_restores_after_the_first_checkpoint_follow_the_recorded_game() -> None:
    """Regression: a restore replaying across the first checkpoint (frame 100) from a dense
    state before it must re-sync there (PrivateEye's frames 101-130 followed today's reset
    replay instead). Through the real pool: frame stacks and RAM."""
    path = "demos/PrivateEye.npz"
    demo = demos.load(path)
    first = int(demo.checkpoint_frames[0])
    frames = np.arange(first, first + 31)  # every frame the bug reached, with stride 16
    config = EnvConfig()
    want_obs, want_ram = _reference(demo, config, frames)
    n = 8
    got_obs, got_ram, replayed = [], [], []
    with AtariPool(None, n, 2, config=config, demo=DemoResetConfig(path)) as pool:
        for lo in range(0, len(frames), n):
            batch = frames[lo : lo + n]
            out = pool.restore(np.arange(len(batch)), batch)
            np.testing.assert_array_equal(out.frame, batch)
            got_obs.append(out.obs)
            got_ram.append(pool.ram(np.arange(len(batch))))
            replayed.append(out.reset_frames)
            assert not out.step_frames.any()  # a restore is no experience
        # Playing the demo on: full skips, counted exactly, no reset frames.
        for _ in range(3):
            out = pool.step(np.full(n, -1))
            assert not out.ended.any()
            assert out.step_frames.tolist() == [4] * n and not out.reset_frames.any()
    got_obs, got_ram = np.concatenate(got_obs), np.concatenate(got_ram)
    for b, f in enumerate(frames.tolist()):
        assert np.array_equal(got_ram[b], want_ram[b]), f"RAM at frame {f}"
        assert np.array_equal(got_obs[b], want_obs[b]), f"frame stack at frame {f}"
    # The restore's emulated frames: at most stride + skip * (stack - 1) + 1.
    replayed = np.concatenate(replayed)
    assert replayed.min() > 0 and replayed.max() <= 16 + 4 * 3 + 1


def test_restore_stack_follows_the_recorded_game_on_pong() -> None:
    """The worker's restore code in process, on states built as the pool builds them."""
    demo = demos.load("demos/Pong.npz")
    first = int(demo.checkpoint_frames[0])
    frames = np.arange(first, first + 31)
    config = EnvConfig()
    want_obs, want_ram = _reference(demo, config, frames)
    ale = demo.make_ale()
    action_set = ale.getMinimalActionSet()
    stride = 16
    chunk = build_state_chunk(ale, demo, action_set, 0, first + 40, stride)
    replay = DemoReplay.from_dense_states(demo, action_set, stride, len(chunk),
                                          lambda k: ale_py.ALEState(chunk[k]))
    scratch = make_scratch(config)
    row = np.zeros(config.obs_shape, np.uint8)
    for b, f in enumerate(frames.tolist()):
        n = restore_stack(ale, replay, f, config, row, scratch, ale.getScreenRGB)
        assert 0 < n <= stride + 4 * 3 + 1
        assert np.array_equal(ale.getRAM(), want_ram[b]), f"RAM at frame {f}"
        assert np.array_equal(row, want_obs[b]), f"frame stack at frame {f}"
    # The pool-less observations: the same bytes.
    np.testing.assert_array_equal(demo_observations(demo, config, frames), want_obs)


def test_demo_observations_anywhere() -> None:
    """Any frames, any order, repeats, gray and no max pooling (the pool's restores are
    compared with the same function's frames in tests/test_train_warmup.py)."""
    demo = demos.load("demos/PrivateEye.npz")
    t = demo.num_frames
    rng = np.random.default_rng(1)
    frames = np.concatenate([[t, 0, 1, 5, 99, 100, 101, 5000, 5000], rng.integers(0, t + 1, 3)])
    for config in (EnvConfig(gray_scale=True, img_height=84, img_width=84, max_pool=False,
                             frame_skip=3, stack_num=3), EnvConfig(stack_num=2)):
        renderer = DemoRenderer(demo, config)
        want, _ = _reference(demo, config, frames)
        np.testing.assert_array_equal(renderer.observations(frames), want)
    # Slots over a range in one replay are the slots of each frame alone (past the first
    # checkpoint: before it each call's reset_game() would draw on the emulator's random
    # stream anew, which changes PrivateEye's replay on some resets; see `_reference`).
    slots = renderer.slots(np.arange(101, 112))
    for k, f in enumerate(range(101, 112)):
        np.testing.assert_array_equal(slots[k], renderer.slots([f])[0])
    with pytest.raises(ValueError, match="sorted"):
        renderer.slots([5, 4])


def test_wrong_rom_file_is_a_one_line_error_naming_the_md5(tmp_path: Path) -> None:
    rom = tmp_path / "gravitar.bin"
    rom.write_bytes(bytes(8192))  # a file of the right size and the wrong content
    with pytest.raises(demos.DemoError) as err:
        AtariPool(None, 1, 1, demo=DemoResetConfig("demos/Gravitar.npz", rom_path=str(rom)))
    message = str(err.value)
    assert "\n" not in message
    assert GRAVITAR_MD5 in message and str(rom) in message


def test_trainer_passes_demo_rom_path_to_the_pool(tmp_path: Path, capsys) -> None:
    """`demo.rom_path` reaches the pool: its wrong md5 is the error (exit code 2, one line)."""
    from jax_reset.train import main

    rom = tmp_path / "gravitar.bin"
    rom.write_bytes(bytes(8192))
    code = main(["--config", "configs/smoke.toml", "--run-dir", str(tmp_path / "run"),
                 "demo.demo_path=demos/Gravitar.npz", f"demo.rom_path={rom}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and GRAVITAR_MD5 in err and str(rom) in err
