"""An action log from any source -> a verified demo: replayed in today's ALE from ``reset_game()``.

The log is one action per emulator frame (or per agent step at frame skip 4), as ALE's full
action ids 0-17 (what human-play datasets record) or as indices into the game's minimal action
set (what the demo format stores). The replay runs from ``reset_game()`` with no sticky actions,
stores every frame's reward and lives and a state every ``CHECKPOINT_INTERVAL_FRAMES``, and is
run twice: a log is accepted only if both replays give the same rewards, lives and RAM.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ale_py
import numpy as np

from jax_reset.demos import roms
from jax_reset.demos.format import (
    CHECKPOINT_INTERVAL_FRAMES,
    FORMAT_NAME,
    FORMAT_VERSION,
    DemoError,
    save,
)

AGENT_STEP_FRAMES = 4
"""Emulator frames per agent step of a ``--per-agent-step`` log (the reference's frame skip)."""
NUM_ALE_ACTIONS = len(ale_py.Action)  # 18: the full action set


def read_log(path: str | os.PathLike) -> np.ndarray:
    """Reads an action log: ``.npy`` (a 1-D integer array) or ``.txt``/``.csv`` (one integer
    per line; blank lines and ``#`` comments skipped; in a CSV, the first column, after an
    optional header line). Returns int64 [N]. Raises ``DemoError`` (one line) on bad input."""
    path = Path(path)
    if not path.is_file():
        raise DemoError(f"{path}: no such action log")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with path.open("rb") as f:  # else numpy reads it as a pickle and advises unpickling it
            is_npy = f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
        if not is_npy:
            raise DemoError(f"{path}: not a .npy array (no NumPy header; write the log with "
                            "numpy.save, or as text with one action per line)")
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DemoError(f"{path}: not a .npy array ({err})") from None
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise DemoError(f"{path}: an action log is a 1-D integer array, "
                            f"not {raw.dtype} {list(raw.shape)}")
        actions = raw.astype(np.int64)
    elif suffix in (".txt", ".csv"):
        values = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            field = line.split("#", 1)[0].split(",", 1)[0].strip()
            if not field:
                continue
            try:
                values.append(int(field))
            except ValueError:
                if suffix == ".csv" and not values and number == 1:
                    continue  # a CSV header line
                raise DemoError(f"{path}:{number}: {field!r} is not an action id") from None
        actions = np.asarray(values, dtype=np.int64)
    else:
        raise DemoError(f"{path}: an action log is a .txt, .csv or .npy file")
    if len(actions) == 0:
        raise DemoError(f"{path}: the action log is empty")
    return actions


def to_minimal(actions: np.ndarray, minimal_set: list[ale_py.Action], *, minimal: bool,
               game: str, source: str = "the log") -> np.ndarray:
    """Entries of a log -> indices into the minimal action set, uint8 [N].

    ``minimal``: the entries already are such indices. Otherwise they are ALE's full action ids,
    each of which must be in the game's minimal set (the demo format stores only those).
    """
    ids = [int(a.value) for a in minimal_set]
    if minimal:
        bad = np.flatnonzero((actions < 0) | (actions >= len(ids)))
        if len(bad):
            raise DemoError(f"{source}: entry {bad[0]} is {actions[bad[0]]}, not an index into "
                            f"{game}'s minimal action set (0..{len(ids) - 1})")
        return actions.astype(np.uint8)
    lookup = np.full(NUM_ALE_ACTIONS, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    unknown = np.flatnonzero((actions < 0) | (actions >= NUM_ALE_ACTIONS))
    if len(unknown):
        raise DemoError(f"{source}: entry {unknown[0]} is {actions[unknown[0]]}, not an ALE "
                        f"action id (0..{NUM_ALE_ACTIONS - 1})")
    index = lookup[actions]
    outside = np.flatnonzero(index < 0)
    if len(outside):
        a = int(actions[outside[0]])
        names = ", ".join(f"{i} {ale_py.Action(i).name}" for i in ids)
        raise DemoError(f"{source}: entry {outside[0]} is action {a} "
                        f"({ale_py.Action(a).name}), which is not in {game}'s minimal action set "
                        f"({names}); wrong game, or pass --minimal for minimal-set indices")
    return index.astype(np.uint8)


@dataclass(frozen=True)
class Replay:
    """One replay of minimal-set actions from ``reset_game()``.

    Attributes:
      rewards: float64 [T] frame rewards; T is shorter than the log when the game ended.
      lives: int32 [T + 1] lives before frame i.
      checkpoint_frames: int64 [K] (every ``CHECKPOINT_INTERVAL_FRAMES`` frames).
      states: K states in today's ALE serialisation.
      rams: uint8 [K + 1, 128]: the RAM at each checkpoint and at the end.
      game_over_frame: the frame count at which the game ended, or None.
    """

    rewards: np.ndarray
    lives: np.ndarray
    checkpoint_frames: np.ndarray
    states: list[bytes]
    rams: np.ndarray
    game_over_frame: int | None


def replay(rom: Path, actions: np.ndarray, interval: int = CHECKPOINT_INTERVAL_FRAMES) -> Replay:
    """Emulates ``actions`` (minimal-set indices, uint8 [N]) from ``reset_game()`` in a fresh
    ALE (frame skip 1, no sticky actions); stops after the frame that ends the game."""
    ale = roms.make_ale(rom)
    ale.reset_game()
    action_set = ale.getMinimalActionSet()
    rewards = np.zeros(len(actions), dtype=np.float64)
    lives = np.zeros(len(actions) + 1, dtype=np.int32)
    lives[0] = ale.lives()
    frames, states, rams = [], [], []
    game_over = None
    for f, a in enumerate(actions):
        rewards[f] = ale.act(action_set[a])
        lives[f + 1] = ale.lives()
        if (f + 1) % interval == 0:
            frames.append(f + 1)
            states.append(bytes(ale.cloneState().__getstate__()))
            rams.append(ale.getRAM().copy())
        if ale.game_over():
            game_over = f + 1
            break
    end = len(actions) if game_over is None else game_over
    rams.append(ale.getRAM().copy())
    return Replay(rewards[:end], lives[:end + 1], np.asarray(frames, dtype=np.int64), states,
                  np.stack(rams), game_over)


def expand_agent_steps(actions: np.ndarray, frames_per_step: int = AGENT_STEP_FRAMES,
                       ) -> np.ndarray:
    """A log per agent step -> per frame: each action repeated ``frames_per_step`` times."""
    return np.repeat(actions, frames_per_step)


def write_demo(game: str, actions: np.ndarray, out: str | os.PathLike,
               provenance: dict[str, Any] | None = None) -> tuple[Path, Replay]:
    """Replays minimal-set ``actions`` (uint8 [N]) twice, checks both agree, and writes the
    demo (cut at the game's end) to ``out`` with ``provenance`` in its header.

    Raises ``DemoError`` for an unknown game, a log shorter than one checkpoint interval, or a
    replay that is not deterministic.
    """
    try:
        info = roms.game_info(game)
    except roms.RomError as err:
        raise DemoError(str(err)) from None
    rom = roms.shipped_rom_path(info.rom_id)
    first, second = replay(rom, actions), replay(rom, actions)
    same = (np.array_equal(first.rams, second.rams)
            and np.array_equal(first.rewards, second.rewards)
            and np.array_equal(first.lives, second.lives))
    if not same:
        raise DemoError(f"two replays of this {game} log differ: the emulator is not "
                        "deterministic here, so it cannot be a demo")
    if len(first.checkpoint_frames) == 0:
        raise DemoError(f"the replay has {len(first.rewards)} frames; a demo needs at least "
                        f"{CHECKPOINT_INTERVAL_FRAMES} (one checkpoint)")
    md5 = roms.file_md5(rom)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "game": game,
        "rom_id": info.rom_id,
        "rom_md5": md5,
        "recorded_rom_md5": md5,
        "ale_py_version": ale_py.__version__,
        "num_frames": len(first.rewards),
        "score": float(first.rewards.sum()),
        "source_sha256": hashlib.sha256(np.ascontiguousarray(actions).tobytes()).hexdigest(),
        "game_over_frame": first.game_over_frame,
        **(provenance or {}),
    }
    arrays = {"actions": actions[:len(first.rewards)], "rewards": first.rewards,
              "lives": first.lives, "checkpoint_frames": first.checkpoint_frames}
    return save(arrays, header, first.states, out), first


def from_actions(game: str, log: str | os.PathLike, out: str | os.PathLike, *,
                 per_agent_step: bool = False, minimal: bool = False) -> tuple[Path, Replay]:
    """``python -m jax_reset.demo from-actions``: reads ``log``, maps it onto the minimal set,
    and writes the verified demo (see ``write_demo``)."""
    try:
        info = roms.game_info(game)
    except roms.RomError as err:
        raise DemoError(str(err)) from None
    entries = read_log(log)
    minimal_set = list(roms.make_ale(roms.shipped_rom_path(info.rom_id)).getMinimalActionSet())
    actions = to_minimal(entries, minimal_set, minimal=minimal, game=game, source=str(log))
    if per_agent_step:
        actions = expand_agent_steps(actions)
    provenance = {"source": "from-actions", "source_file": Path(log).name,
                  "source_sha256": hashlib.sha256(Path(log).read_bytes()).hexdigest(),
                  "action_ids": "minimal" if minimal else "full",
                  "log_frames_per_entry": AGENT_STEP_FRAMES if per_agent_step else 1}
    return write_demo(game, actions, out, provenance)
