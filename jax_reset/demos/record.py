"""The recording core: a headless state machine over the real emulator, with rewind and save.

Actions in (indices into the game's minimal action set), frame, score, lives and frame index
out. Rewinding goes back through cloned states: one is kept every ``SNAPSHOT_FRAMES`` frames and
the kept actions are replayed from the nearest one (exact: frame skip 1, no sticky actions), so
an hour of play holds ~3,600 states instead of 216,000. The saved demo is the path actually kept
after the rewinds, replayed from ``reset_game()`` by ``from_actions.write_demo``.

    rec = Recorder("Pong")
    rec.step(2); rec.step(2); rec.back(1); rec.back_seconds(5.0)
    rec.save("my.npz")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import ale_py
import numpy as np

from jax_reset.demos import roms
from jax_reset.demos.format import DemoError
from jax_reset.demos.from_actions import Replay, write_demo

FRAMES_PER_S = 60
"""The Atari's frame rate: ``back_seconds`` and the window's speed 1 count in it."""
SNAPSHOT_FRAMES = 60
"""Frames between two states kept for rewinding; a rewind replays at most this many frames."""


@dataclass(frozen=True)
class FrameInfo:
    """What the player sees after a step or a rewind.

    Attributes:
      frame: frames kept so far (the length of the path a save would write).
      score: the kept path's summed reward.
      lives: the game's lives counter.
      game_over: the game has ended; ``step`` does nothing until a rewind.
    """

    frame: int
    score: float
    lives: int
    game_over: bool


class Recorder:
    """One recording of ``game`` from ``reset_game()``; see the module docstring."""

    def __init__(self, game: str) -> None:
        try:
            self.info = roms.game_info(game)
        except roms.RomError as err:
            raise DemoError(str(err)) from None
        self.game = game
        self.ale = roms.make_ale(roms.shipped_rom_path(self.info.rom_id))
        self.ale.reset_game()
        self.action_set = self.ale.getMinimalActionSet()
        self._actions: list[int] = []
        self._returns: list[float] = [0.0]  # score after each kept frame (0 before any)
        self._snapshots: list[ale_py.ALEState] = [self.ale.cloneState()]  # at k * SNAPSHOT

    @property
    def num_actions(self) -> int:
        """The size of the minimal action set: valid actions are 0 .. num_actions - 1."""
        return len(self.action_set)

    @property
    def actions(self) -> np.ndarray:
        """uint8 [T]: the kept path, minimal-set indices."""
        return np.asarray(self._actions, dtype=np.uint8)

    def status(self) -> FrameInfo:
        return FrameInfo(len(self._actions), self._returns[-1], int(self.ale.lives()),
                         bool(self.ale.game_over()))

    def screen(self) -> np.ndarray:
        """uint8 [210, 160, 3]: the current frame, RGB."""
        return self.ale.getScreenRGB()

    def step(self, action: int) -> FrameInfo:
        """Plays one frame of ``action`` (a minimal-set index); nothing after the game's end."""
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} is not in 0..{self.num_actions - 1}")
        if self.ale.game_over():
            return self.status()
        reward = self.ale.act(self.action_set[action])
        self._actions.append(int(action))
        self._returns.append(self._returns[-1] + reward)
        if len(self._actions) % SNAPSHOT_FRAMES == 0:
            self._snapshots.append(self.ale.cloneState())
        return self.status()

    def back(self, frames: int = 1) -> FrameInfo:
        """Rewinds ``frames`` frames (not before the game's start): those actions are dropped."""
        target = max(0, len(self._actions) - max(0, int(frames)))
        k = target // SNAPSHOT_FRAMES
        del self._actions[target:], self._returns[target + 1:], self._snapshots[k + 1:]
        self.ale.restoreState(self._snapshots[k])
        for a in self._actions[k * SNAPSHOT_FRAMES:]:
            self.ale.act(self.action_set[a])
        return self.status()

    def back_seconds(self, seconds: float) -> FrameInfo:
        """Rewinds ``seconds`` of play (at ``FRAMES_PER_S``)."""
        return self.back(round(seconds * FRAMES_PER_S))

    def save(self, out: str | os.PathLike) -> tuple[Path, Replay]:
        """Writes the kept path as a demo (replayed from the reset and checked, see
        ``write_demo``) and checks that replay ends in this emulator's RAM."""
        path, result = write_demo(self.game, self.actions, out, {"source": "record"})
        if not np.array_equal(result.rams[-1], self.ale.getRAM()):
            path.unlink(missing_ok=True)
            raise DemoError("the saved path's replay does not end where the recording is: "
                            "nothing written")
        return path, result
