"""The game table (ROM id, FIRE rule), which ROM each demo needs, and loading it into ALE.

Any game ale-py ships is a game of this project: its name is the CamelCase of ale-py's ROM id
(``montezuma_revenge`` -> ``MontezumaRevenge``, EnvPool's task name), and its row is derived
from ale-py (``derived_game_info``). The five 2018 demo games have rows of their own (``GAMES``),
kept as the reference used them. ale-py ships the ROMs of all five demo games. Two demos were
recorded on other ROM revisions:

* Pitfall: the 2018 ROM (md5 ``f73d2d0e…``) differs from the shipped one in 62 bytes of graphics
  data; with the shipped ROM's md5 written into the converted states, every segment of the demo
  replays exactly, so the converted demo names the shipped ROM.
* Gravitar: recorded on a different build (md5 ``4767356f…``, 3,235 of 8,192 bytes differ). With
  the shipped ROM the RAM diverges, so the converted demo keeps the original md5, and the user must
  point the project at their own copy of that ROM file (checked by md5). No ROM file is shipped.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import ale_py
from ale_py import roms as ale_roms


class RomError(ValueError):
    """A ROM cannot be found or is not the one a demo needs."""


@dataclass(frozen=True)
class GameInfo:
    """Facts about one demo game.

    Attributes:
      game: the name used by the original demos and by EnvPool task ids (``f"{game}-v5"``).
      rom_id: ale-py's ROM id.
      recorded_md5: md5 of the ROM the 2018 demo was recorded on (for the other games: of the
        ROM ale-py ships).
      patch_md5_to_shipped: write the shipped ROM's md5 into converted states (exact, measured).
      fire_reset: the reference's FIRE-on-reset rule: plain resets (from the game's start, not
        from a demo state) end with one FIRE frame. ``EnvConfig.fire_reset`` overrides it.
    """

    game: str
    rom_id: str
    recorded_md5: str
    patch_md5_to_shipped: bool = False
    fire_reset: bool = False


# The 2018 demo games, as the reference ran them (its FIRE rule: Pong only). Any other game
# ale-py ships needs no row: ``game_info`` derives it.
GAMES: dict[str, GameInfo] = {
    g.game: g
    for g in (
        GameInfo("MontezumaRevenge", "montezuma_revenge", "3347a6dd59049b15a38394aa2dafa585"),
        GameInfo("Pong", "pong", "60e0ea3cbe0913d39803477945e9e5ec", fire_reset=True),
        GameInfo("PrivateEye", "private_eye", "ef3a4f64b6494ba770862768caf04b86"),
        GameInfo("Pitfall", "pitfall", "f73d2d0eff548e8fc66996f27acf2b4b",
                 patch_md5_to_shipped=True),
        GameInfo("Gravitar", "gravitar", "4767356fa0ed3ebe21437b4473d4ee28"),
    )
}


def rom_id_of(game: str) -> str:
    """ale-py's ROM id of a game name: "MontezumaRevenge" -> "montezuma_revenge"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def game_name(rom_id: str) -> str:
    """The game name of an ale-py ROM id: "montezuma_revenge" -> "MontezumaRevenge"."""
    return "".join(part[:1].upper() + part[1:] for part in rom_id.split("_"))


@functools.cache
def ale_games() -> dict[str, str]:
    """Every game ale-py ships: game name -> ROM id."""
    return {game_name(rid): rid for rid in ale_roms.get_all_rom_ids()}


@functools.cache
def derived_game_info(game: str) -> GameInfo:
    """The row of a game ale-py ships, derived from ale-py: its ROM, and the FIRE rule of the
    usual FireReset wrappers (the game's minimal action set has FIRE at index 1 and at least
    3 actions: the game waits for FIRE to start)."""
    rid = ale_games()[game]
    path = shipped_rom_path(rid)
    actions = list(make_ale(path).getMinimalActionSet())
    fire = len(actions) >= 3 and actions[1] == ale_py.Action.FIRE
    return GameInfo(game, rid, file_md5(path), fire_reset=fire)


def game_info(game: str) -> GameInfo:
    """The game's row: the 2018 demo games' own, else derived from ale-py for any game it
    ships. Raises ``RomError`` naming close names for an unknown game."""
    if game in GAMES:
        return GAMES[game]
    if game in ale_games():
        return derived_game_info(game)
    lower = {g.lower(): g for g in ale_games()}
    guess = lower.get(game.lower().replace("_", "")) or lower.get(game_name(game).lower())
    hint = (f"did you mean {guess}?" if guess else
            f"ale-py {ale_py.__version__} ships {len(ale_games())} games, e.g. "
            f"{', '.join(sorted(ale_games())[:4])}, ...")
    raise RomError(f"unknown game {game!r}: {hint}")


def file_md5(path: str | os.PathLike) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def shipped_rom_path(rom_id: str) -> Path:
    """Path of the ROM file ale-py ships for ``rom_id``."""
    try:
        return Path(ale_roms.get_rom_path(rom_id))
    except Exception as err:  # ale-py raises different types across versions
        raise RomError(f"ale-py {ale_py.__version__} ships no ROM {rom_id!r}: {err}") from None


def resolve_rom(rom_id: str, md5: str, rom_path: str | os.PathLike | None = None) -> Path:
    """The ROM file with the given md5: the user's ``rom_path`` if given, else ale-py's own.

    Raises ``RomError`` naming the expected md5 when neither matches.
    """
    if rom_path is not None:
        path = Path(rom_path)
        if not path.is_file():
            raise RomError(f"ROM file {path} does not exist")
        found = file_md5(path)
        if found != md5:
            raise RomError(f"ROM file {path} has md5 {found}, but this demo needs md5 {md5}")
        return path
    path = shipped_rom_path(rom_id)
    found = file_md5(path)
    if found != md5:
        raise RomError(
            f"this demo needs the {rom_id} ROM with md5 {md5}, but ale-py ships md5 {found}; "
            f"pass your own copy of that ROM file with --rom PATH (config key demo.rom_path)"
        )
    return path


def make_ale(rom: str | os.PathLike, *, seed: int = 0,
             repeat_action_probability: float = 0.0) -> ale_py.ALEInterface:
    """An ``ALEInterface`` with ``rom`` loaded, frame skip 1 and no sticky actions by default."""
    # The logger is global and must be quiet before construction, which prints the banner.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", int(seed) & 0x7FFFFFFF)  # ALE takes a non-negative int32
    ale.setInt("frame_skip", 1)
    ale.setFloat("repeat_action_probability", float(repeat_action_probability))
    ale.loadROM(str(rom))
    return ale
