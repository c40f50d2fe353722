"""Demonstrations: the project's demo format, conversion from the 2018 pickles, verification.

    >>> from jax_reset import demos
    >>> demo = demos.load("demos/Pong.npz")
    >>> demo.game, demo.num_frames, demo.score
    ('Pong', 22869, 5.0)
    >>> ale = demo.make_ale(); demo.restore(ale, 12_345)   # ale is now at frame 12,345
"""

from jax_reset.demos.convert import SegmentResult, convert, verify
from jax_reset.demos.format import Demo, DemoError, load
from jax_reset.demos.roms import GAMES, RomError

__all__ = ["GAMES", "Demo", "DemoError", "RomError", "SegmentResult", "convert",
           "load", "verify"]
