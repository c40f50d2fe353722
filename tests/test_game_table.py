"""The game table: the five 2018 demo games' own rows, any other game derived from ale-py."""

from __future__ import annotations

import ale_py
import pytest
from ale_py import roms as ale_roms

from jax_reset.demos import roms


def test_the_five_demo_games_keep_their_rows() -> None:
    expected = {
        "MontezumaRevenge": ("montezuma_revenge", "3347a6dd59049b15a38394aa2dafa585", False, False),
        "Pong": ("pong", "60e0ea3cbe0913d39803477945e9e5ec", False, True),
        "PrivateEye": ("private_eye", "ef3a4f64b6494ba770862768caf04b86", False, False),
        "Pitfall": ("pitfall", "f73d2d0eff548e8fc66996f27acf2b4b", True, False),
        "Gravitar": ("gravitar", "4767356fa0ed3ebe21437b4473d4ee28", False, False),
    }
    for game, (rid, md5, patch, fire) in expected.items():
        info = roms.game_info(game)
        assert (info.rom_id, info.recorded_md5, info.patch_md5_to_shipped, info.fire_reset) == (
            rid, md5, patch, fire), game


def test_every_game_ale_py_ships_has_a_row() -> None:
    ids = ale_roms.get_all_rom_ids()
    assert len(roms.ale_games()) == len(ids)
    assert sorted(roms.ale_games().values()) == sorted(ids)
    # Names are EnvPool's task names; the odd one keeps its id.
    assert roms.ale_games()["TicTacToe3d"] == "tic_tac_toe_3d"
    assert roms.game_name("montezuma_revenge") == "MontezumaRevenge"


@pytest.mark.parametrize(("game", "fire"), [("Breakout", True), ("SpaceInvaders", True),
                                            ("MsPacman", False), ("Seaquest", True)])
def test_derived_rows_use_the_shipped_rom_and_the_fire_wrapper_rule(game: str, fire: bool) -> None:
    info = roms.game_info(game)
    path = roms.shipped_rom_path(info.rom_id)
    assert info.recorded_md5 == roms.file_md5(path)
    ale = roms.make_ale(path)
    actions = list(ale.getMinimalActionSet())
    # The FireReset wrappers' rule, checked here against the action set itself.
    assert fire == (len(actions) >= 3 and actions[1] == ale_py.Action.FIRE)
    assert info.fire_reset is fire


def test_unknown_game_is_one_line_with_a_hint() -> None:
    with pytest.raises(roms.RomError, match="did you mean MontezumaRevenge"):
        roms.game_info("montezuma_revenge")
    with pytest.raises(roms.RomError, match=r"unknown game 'NoSuchGame': ale-py .* ships \d+"):
        roms.game_info("NoSuchGame")
