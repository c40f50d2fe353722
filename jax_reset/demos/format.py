"""The project's demo file: a versioned ``.npz`` (no pickle) with a JSON header.

Arrays in the file:

* ``header``: uint8, UTF-8 JSON (see ``Demo.header``).
* ``actions``: uint8 [T], one per emulator frame, index into the game's minimal action set.
* ``rewards``: float64 [T], ``rewards[i]`` is the reward of executing ``actions[i]``.
* ``lives``: int32 [T + 1], lives before frame i (absent where the original has none: Pong).
* ``checkpoint_frames``: int64 [K]; checkpoint k is the state after ``actions[:frame]``.
* ``state_offsets``: int64 [K + 1] and ``states``: uint8 [sum of lengths], the emulator states
  in today's ALE serialisation (bytes accepted by ``ale_py.ALEState(bytes)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ale_py
import numpy as np

from jax_reset.config_tree import atomic_write
from jax_reset.demos import roms

FORMAT_NAME = "jax-reset-demo"
FORMAT_VERSION = 2
"""2: the header carries ``content_sha256`` (1 had no digest: an altered state went unseen)."""
DIGEST_KEY = "content_sha256"
CHECKPOINT_INTERVAL_FRAMES = 100
"""Frames between two stored states: the 2018 demos' interval, kept for every new demo."""
REGENERATE_HINT = ("regenerate the demos from the originals with "
                   "`python -m jax_reset.demo convert demos/original demos/` (a demo of your "
                   "own: make it again with `demo from-actions` or `demo record`)")


class DemoError(ValueError):
    """A demo file is missing, malformed, or unusable with the installed ale-py."""


@dataclass(frozen=True, eq=False)
class Demo:
    """One human demonstration of one game, with emulator states to start from.

    Attributes:
      header: the file's JSON header: format, format_version, game, rom_id, rom_md5 (the ROM the
        states name), recorded_rom_md5 (the 2018 ROM), ale_py_version (that wrote the states),
        num_frames, score, source_sha256, content_sha256 (of every other array, checked on load).
      actions: uint8 [T] frame actions (index into the minimal action set).
      rewards: float64 [T] frame rewards.
      lives: int32 [T + 1] or None.
      checkpoint_frames: int64 [K].
      rom_path: the ROM file to load (the user's own for Gravitar), or None for ale-py's own.
    """

    header: dict[str, Any]
    actions: np.ndarray
    rewards: np.ndarray
    lives: np.ndarray | None
    checkpoint_frames: np.ndarray
    _states: tuple[bytes, ...] = field(repr=False)
    rom_path: Path | None = None
    path: Path | None = None

    @property
    def game(self) -> str:
        return self.header["game"]

    @property
    def rom_id(self) -> str:
        return self.header["rom_id"]

    @property
    def rom_md5(self) -> str:
        return self.header["rom_md5"]

    @property
    def num_frames(self) -> int:
        return len(self.actions)

    @property
    def returns(self) -> np.ndarray:
        """float64 [T]: ``returns[i]`` is the demo's score after frame i."""
        return np.cumsum(self.rewards)

    @property
    def score(self) -> float:
        return float(self.rewards.sum())

    def score_before(self, frame: int) -> float:
        """The demo's score at the state after ``actions[:frame]`` (0 at frame 0)."""
        return float(self.rewards[:frame].sum())

    def checkpoint_state(self, index: int) -> bytes:
        """Emulator state of checkpoint ``index``, in today's ALE serialisation."""
        return self._states[index]

    def rom_file(self) -> Path:
        """The ROM file these states need (raises ``roms.RomError`` when none matches)."""
        return roms.resolve_rom(self.rom_id, self.rom_md5, self.rom_path)

    def make_ale(self, rom_path: str | os.PathLike | None = None,
                 **settings: Any) -> ale_py.ALEInterface:
        """An ``ALEInterface`` with this demo's ROM, frame skip 1, no sticky actions."""
        rom = roms.resolve_rom(self.rom_id, self.rom_md5, rom_path or self.rom_path)
        return roms.make_ale(rom, **settings)

    def check_frame(self, frame: int) -> int:
        frame = int(frame)
        if not 0 <= frame <= self.num_frames:
            raise DemoError(
                f"frame {frame} is outside this {self.game} demo (0..{self.num_frames})")
        return frame

    def restore(self, ale: ale_py.ALEInterface, frame: int) -> None:
        """Puts ``ale`` in the state after ``actions[:frame]``.

        Restores the latest checkpoint at or before ``frame`` and emulates the demo's actions up
        to it. Before the first checkpoint there is no recorded state: the game is reset and the
        actions replayed, which today's ALE does not reproduce exactly (its reset takes a
        different number of frames than 2018's); ``verify`` reports how that entry compares.
        """
        frame = self.check_frame(frame)
        k = int(np.searchsorted(self.checkpoint_frames, frame, side="right")) - 1
        if k < 0:
            ale.reset_game()
            start = 0
        else:
            ale.restoreState(ale_py.ALEState(self._states[k]))
            start = int(self.checkpoint_frames[k])
        action_set = ale.getMinimalActionSet()
        for a in self.actions[start:frame]:
            ale.act(action_set[a])

    def dense_states(self, stride: int, rom_path: str | os.PathLike | None = None,
                     ) -> tuple[np.ndarray, list[bytes]]:
        """States every ``stride`` frames from the first checkpoint on, made by replay.

        Returns (frames int64 [M], M state byte strings). A continuous replay from the first
        checkpoint is exact for every shipped demo (``verify``), so these equal the recorded
        game at every frame they name.
        """
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        ale = self.make_ale(rom_path)
        first = int(self.checkpoint_frames[0])
        frames = np.arange(first, self.num_frames + 1, stride, dtype=np.int64)
        states = []
        ale.restoreState(ale_py.ALEState(self._states[0]))
        action_set = ale.getMinimalActionSet()
        frame = first
        for target in frames:
            for a in self.actions[frame:target]:
                ale.act(action_set[a])
            frame = int(target)
            states.append(bytes(ale.cloneState().__getstate__()))
        return frames, states


def save(demo_arrays: dict[str, Any], header: dict[str, Any], states: list[bytes],
         path: str | os.PathLike) -> Path:
    """Writes a demo file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    offsets = np.zeros(len(states) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in states])
    arrays = {
        "actions": np.asarray(demo_arrays["actions"], dtype=np.uint8),
        "rewards": np.asarray(demo_arrays["rewards"], dtype=np.float64),
        "checkpoint_frames": np.asarray(demo_arrays["checkpoint_frames"], dtype=np.int64),
        "state_offsets": offsets,
        "states": np.frombuffer(b"".join(states), dtype=np.uint8),
    }
    if demo_arrays.get("lives") is not None:
        arrays["lives"] = np.asarray(demo_arrays["lives"], dtype=np.int32)
    header = {**header, DIGEST_KEY: content_digest(arrays)}
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def content_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of every array but the header, each with its name, dtype and shape: a changed
    byte of the actions, rewards, lives, checkpoint frames or emulator states changes it."""
    digest = hashlib.sha256()
    for name in sorted(set(arrays) - {"header"}):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DemoError(f"{path}: no such demo file")
    with path.open("rb") as f:  # an .npz is a zip: it starts with a local file header
        is_zip = f.read(4) == b"PK\x03\x04"
    if not is_zip:  # else numpy reads it as a pickle and advises unpickling it
        raise DemoError(f"{path}: not a demo file (a demo is an .npz archive written by "
                        "`python -m jax_reset.demo convert`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise DemoError(f"{path}: truncated or corrupted demo file ({err})") from None


def load(path: str | os.PathLike, *, rom_path: str | os.PathLike | None = None,
         check: bool = True) -> Demo:
    """Loads a demo file, refusing one whose arrays do not match the digest in its header.

    With ``check`` (the default) one checkpoint is restored in the installed ale-py and replayed
    to the next, and its RAM compared with the next checkpoint's: a demo whose states the
    installed ale-py reads differently is refused with the command that regenerates them.
    Raises ``DemoError`` (with a one-line message) on every kind of bad input.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    try:
        header = json.loads(arrays["header"].tobytes().decode())
        if header.get("format") != FORMAT_NAME:
            raise DemoError(f"{path}: not a {FORMAT_NAME} file")
        if header.get("format_version") != FORMAT_VERSION:
            raise DemoError(f"{path}: format version {header.get('format_version')} is not "
                            f"{FORMAT_VERSION}; {REGENERATE_HINT}")
        if header.get(DIGEST_KEY) != content_digest(arrays):
            raise DemoError(f"{path}: its arrays do not match the digest in its header "
                            f"(altered or corrupted since it was written); {REGENERATE_HINT}")
        roms.game_info(header["game"])
        actions, rewards = arrays["actions"], arrays["rewards"]
        frames, offsets, blob = (arrays["checkpoint_frames"], arrays["state_offsets"],
                                 arrays["states"].tobytes())
        lives = arrays.get("lives")
    except KeyError as err:
        raise DemoError(f"{path}: missing field {err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DemoError(f"{path}: corrupted header") from None
    except roms.RomError as err:
        raise DemoError(f"{path}: {err}") from None
    num_frames = len(actions)
    consistent = (
        actions.ndim == 1 and rewards.shape == actions.shape and num_frames == header["num_frames"]
        and (lives is None or lives.shape == (num_frames + 1,))
        and len(frames) >= 1 and offsets.shape == (len(frames) + 1,)
        and offsets[0] == 0 and offsets[-1] == len(blob) and np.all(np.diff(offsets) > 0)
        and np.all(np.diff(frames) > 0) and frames[0] > 0 and frames[-1] <= num_frames
    )
    if not consistent:
        raise DemoError(f"{path}: inconsistent array sizes (truncated or corrupted demo file)")
    states = tuple(blob[offsets[i]:offsets[i + 1]] for i in range(len(frames)))
    demo = Demo(header, actions, rewards, lives, frames, states,
                Path(rom_path) if rom_path is not None else None, path)
    if check:
        check_states(demo)
    return demo


def check_states(demo: Demo) -> None:
    """Restores checkpoint 0, replays to checkpoint 1 and compares RAM. Raises ``DemoError``."""
    try:
        ale = demo.make_ale()
    except roms.RomError as err:
        raise DemoError(f"{demo.path}: {err}") from None
    written, installed = demo.header.get("ale_py_version"), ale_py.__version__
    versions = f"states written by ale-py {written}, installed ale-py {installed}"
    try:
        ale.restoreState(ale_py.ALEState(demo.checkpoint_state(0)))
    except Exception as err:
        raise DemoError(f"{demo.path}: the installed ale-py cannot restore this demo's states "
                        f"({versions}: {err}); {REGENERATE_HINT}") from None
    if len(demo.checkpoint_frames) > 1:
        demo.restore(ale, int(demo.checkpoint_frames[1]))
        replayed = ale.getRAM().copy()
        ale.restoreState(ale_py.ALEState(demo.checkpoint_state(1)))
        if not np.array_equal(replayed, ale.getRAM()):
            raise DemoError(f"{demo.path}: the installed ale-py does not reproduce this demo "
                            f"({versions}); {REGENERATE_HINT}")
