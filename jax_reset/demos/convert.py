"""Converting the 2018 demos into the project's format, and verifying converted demos."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ale_py
import numpy as np

from jax_reset.demos import ale_state, roms
from jax_reset.demos.format import FORMAT_NAME, FORMAT_VERSION, Demo, DemoError, save
from jax_reset.demos.original import OriginalDemoError, read_original


def convert(src: str | os.PathLike, dst: str | os.PathLike, game: str | None = None) -> Path:
    """Converts one original ``.demo`` pickle into a ``.npz`` demo file at ``dst``.

    ``game`` defaults to the source file's stem (``MontezumaRevenge.demo``). The ROM each state
    names is checked against the game's known recording ROM, so a demo of another game is refused.
    """
    src = Path(src)
    game = game or src.stem
    try:
        if game not in roms.GAMES:  # any other game has no 2018 demo to convert
            raise roms.RomError(f"unknown game {game!r} for a 2018 demo; they are of: "
                                f"{', '.join(roms.GAMES)}")
        info = roms.game_info(game)
        original = read_original(src)
    except (roms.RomError, OriginalDemoError) as err:
        raise DemoError(str(err)) from None
    shipped_md5 = roms.file_md5(roms.shipped_rom_path(info.rom_id))
    # Today's random-generator text and paddle range are taken from a state of today's ALE.
    template = bytes(roms.make_ale(roms.shipped_rom_path(info.rom_id)).cloneState().__getstate__())
    fields = ale_state.split_new(template)
    rng_text = ale_state.rng_text_of(template)
    target_md5 = shipped_md5 if info.patch_md5_to_shipped else info.recorded_md5
    states = []
    for k, old in enumerate(original.checkpoints):
        try:
            new = ale_state.convert_old_state(old, rng_text, fields["paddle_min"],
                                              fields["paddle_max"], rom_md5=target_md5)
        except ale_state.StateFormatError as err:
            raise DemoError(f"{src}: checkpoint {k}: {err}") from None
        recorded = old[24 + 4: 24 + 4 + 32].decode("ascii", "replace")
        if recorded != info.recorded_md5:
            raise DemoError(f"{src}: checkpoint {k} was recorded on ROM md5 {recorded}, but "
                            f"{game} demos are recorded on {info.recorded_md5}: wrong game?")
        states.append(new)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "game": game,
        "rom_id": info.rom_id,
        "rom_md5": target_md5,
        "recorded_rom_md5": info.recorded_md5,
        "ale_py_version": ale_py.__version__,
        "num_frames": len(original.actions),
        "score": float(original.rewards.sum()),
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
    }
    arrays = {"actions": original.actions, "rewards": original.rewards,
              "lives": original.lives, "checkpoint_frames": original.checkpoint_frames}
    return save(arrays, header, states, dst)


@dataclass(frozen=True)
class SegmentResult:
    """Replay of the demo from checkpoint ``index`` (frame ``start``) to frame ``end``.

    ``ram_match`` compares the RAM reached with the next checkpoint's (None for the last
    segment, which ends at the demo's end and has no checkpoint to compare with).
    """

    index: int
    start: int
    end: int
    reward_mismatches: int
    lives_mismatches: int
    ram_match: bool | None
    error: str | None = None  # the checkpoint's state does not restore (nothing replayed)

    @property
    def exact(self) -> bool:
        return (self.error is None and self.reward_mismatches == 0 and self.lives_mismatches == 0
                and self.ram_match is not False)


def _replay(ale: ale_py.ALEInterface, demo: Demo, start: int, end: int) -> tuple[int, int]:
    """Emulates the demo's actions [start, end); returns (reward, lives) mismatch counts."""
    action_set = ale.getMinimalActionSet()
    reward_bad = lives_bad = 0
    for f in range(start, end):
        reward = ale.act(action_set[demo.actions[f]])
        reward_bad += reward != demo.rewards[f]
        if demo.lives is not None:
            lives_bad += ale.lives() != demo.lives[f + 1]
    return reward_bad, lives_bad


def _restores(ale: ale_py.ALEInterface, demo: Demo, index: int) -> bool:
    """Restores checkpoint ``index``; False if ale-py refuses its bytes."""
    try:
        ale.restoreState(ale_py.ALEState(demo.checkpoint_state(index)))
    except Exception:  # ale-py raises RuntimeError or ValueError, by version
        return False
    return True


def verify(demo: Demo, segments: list[int] | None = None,
           progress: Callable[[int], None] | None = None) -> list[SegmentResult]:
    """Restores each checkpoint (or those in ``segments``), replays the demo to the next one,
    and compares every frame's reward and lives, and the RAM at the next checkpoint."""
    ale = demo.make_ale()
    frames = [*map(int, demo.checkpoint_frames), demo.num_frames]
    indices = range(len(demo.checkpoint_frames)) if segments is None else segments
    results = []
    for k in indices:
        start, end = frames[k], frames[k + 1]
        if not _restores(ale, demo, k):
            results.append(SegmentResult(k, start, end, 0, 0, None, "does not restore"))
        else:
            reward_bad, lives_bad = _replay(ale, demo, start, end)
            ram_match = None
            if k + 1 < len(demo.checkpoint_frames):
                ram = ale.getRAM().copy()
                # an unrestorable next state is that segment's error; here it only differs
                ram_match = _restores(ale, demo, k + 1) and bool(np.array_equal(ram, ale.getRAM()))
            results.append(SegmentResult(k, start, end, reward_bad, lives_bad, ram_match))
        if progress is not None:
            progress(k)
    return results

