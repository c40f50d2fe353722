"""Byte-level conversion of emulator states from the 2018 ALE serialisation to today's.

Both use Stella's serializer: little-endian int32, a string is an int32 length then its bytes,
a bool is the int32 pattern 0xFAB1FAB2 (true) or 0xBAD1BAD2 (false).

Today's state (ale-py 0.12, ``ALEState.__getstate__()``)::

    int left_paddle, int right_paddle, int frame_number, int episode_frame_number,
    int mode, int difficulty, string inner, int paddle_min, int paddle_max
    inner = string md5, string "System", int cycles, string rng_text, <sections...>,
            bool rng_included

The 2018 state::

    int left_paddle, int right_paddle, int frame_number, int episode_frame_number,
    string inner
    inner = bool false, string md5, string "System", int cycles, <sections...>

Every section after ``cycles`` (CPU, RIOT with RAM, TIA, sound, cartridge, RomSettings) has the
same layout in both, which is what makes this conversion exact (see
``docs/demo-format.md`` and ``python -m jax_reset.demo verify``).
"""

from __future__ import annotations

import struct

FALSE_BOOL = struct.pack("<I", 0xBAD1BAD2)
MD5_HEX_LEN = 32


class StateFormatError(ValueError):
    """A byte string is not an emulator state of the expected serialisation."""


def _read_int(data: bytes, offset: int) -> tuple[int, int]:
    if offset + 4 > len(data):
        raise StateFormatError(f"state truncated at byte {offset} (reading an int)")
    return struct.unpack_from("<i", data, offset)[0], offset + 4


def _read_str(data: bytes, offset: int) -> tuple[bytes, int]:
    length, offset = _read_int(data, offset)
    if length < 0 or offset + length > len(data):
        raise StateFormatError(f"state truncated at byte {offset} (string of length {length})")
    return data[offset : offset + length], offset + length


def _pack_str(value: bytes) -> bytes:
    return struct.pack("<i", len(value)) + value


def rng_text_of(new_state: bytes) -> bytes:
    """The system random generator's text inside a state made by today's ALE."""
    inner = split_new(new_state)["inner"]
    _, o = _read_str(inner, 0)  # md5
    _, o = _read_str(inner, o)  # "System"
    _, o = _read_int(inner, o)  # cycles
    rng, _ = _read_str(inner, o)
    return rng


def split_new(state: bytes) -> dict:
    """Parses the outer fields of a state in today's serialisation."""
    o = 0
    fields = {}
    for name in ("left_paddle", "right_paddle", "frame_number", "episode_frame_number", "mode",
                 "difficulty"):
        fields[name], o = _read_int(state, o)
    fields["inner"], o = _read_str(state, o)
    fields["paddle_min"], o = _read_int(state, o)
    fields["paddle_max"], o = _read_int(state, o)
    if o != len(state):
        raise StateFormatError(f"{len(state) - o} unexpected trailing bytes after a state")
    return fields


def rom_md5_of(state: bytes) -> str:
    """The md5 of the ROM a state in today's serialisation was made with."""
    md5, _ = _read_str(split_new(state)["inner"], 0)
    return md5.decode("ascii")


def convert_old_state(old: bytes, rng_text: bytes, paddle_min: int, paddle_max: int,
                      rom_md5: str | None = None) -> bytes:
    """Converts one 2018 checkpoint into today's serialisation.

    Args:
      old: the 2018 state bytes.
      rng_text: the random generator text of any state made by today's ALE (see ``rng_text_of``).
      paddle_min, paddle_max: today's paddle range fields, copied from such a state.
      rom_md5: when given, the ROM md5 written into the state instead of the recorded one (for a
        ROM revision whose code is identical but for data the game never reads differently).
    """
    o = 0
    ints = []
    for _ in range(4):
        value, o = _read_int(old, o)
        ints.append(value)
    inner, o = _read_str(old, o)
    if o != len(old):
        raise StateFormatError(f"{len(old) - o} unexpected trailing bytes after a 2018 state")
    if inner[:4] != FALSE_BOOL:
        raise StateFormatError("not a 2018 ALE state: its inner part does not start with a bool")
    i = 4
    md5, i = _read_str(inner, i)
    if len(md5) != MD5_HEX_LEN:
        raise StateFormatError(f"not a 2018 ALE state: ROM md5 field has length {len(md5)}")
    system, i = _read_str(inner, i)
    if system != b"System":
        raise StateFormatError(f"not a 2018 ALE state: expected 'System', found {system[:16]!r}")
    cycles, i = _read_int(inner, i)
    if rom_md5 is not None:
        md5 = rom_md5.encode("ascii")
    new_inner = (_pack_str(md5) + _pack_str(b"System") + struct.pack("<i", cycles)
                 + _pack_str(rng_text) + inner[i:] + FALSE_BOOL)
    left, right, frame, episode_frame = ints
    return (struct.pack("<6i", left, right, frame, episode_frame, 0, 0) + _pack_str(new_inner)
            + struct.pack("<2i", paddle_min, paddle_max))

