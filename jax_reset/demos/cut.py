"""A demo's first frames as a demo of their own (``python -m jax_reset.demo cut``): the fast test
bed of a long game, e.g. Montezuma's first rooms through its +3,000 at frame 2,300.

The prefix keeps the actions, rewards and lives of frames ``[0, end_frame)`` and every emulator
state at or before ``end_frame`` (the trainer renders its observations from them); its header
keeps the source's and adds ``cut_from``: the source's file name, digest, length and score, and
the end frame. Written atomically, then every segment is verified by replay.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jax_reset.demos.convert import SegmentResult, verify
from jax_reset.demos.format import DIGEST_KEY, Demo, DemoError, load, save


def cut(demo: Demo, end_frame: int, out: str | os.PathLike) -> tuple[Demo, list[SegmentResult]]:
    """Writes ``demo``'s frames ``[0, end_frame)`` to ``out``; returns the written demo (loaded
    back with its checks) and its verification, segment by segment. ``DemoError`` (one line)
    for a frame outside the demo or one before its first emulator state."""
    t = demo.num_frames
    if not 1 <= end_frame < t:
        raise DemoError(f"--end-frame {end_frame} is outside this {demo.game} demo: a prefix "
                        f"ends at a frame from 1 to {t - 1:,} (the demo has {t:,})")
    kept = demo.checkpoint_frames <= end_frame
    if not kept.any():
        raise DemoError(f"--end-frame {end_frame} keeps no emulator state: this demo's first is "
                        f"at frame {int(demo.checkpoint_frames[0]):,}; cut there or later")
    source = demo.header
    header: dict[str, Any] = {k: v for k, v in source.items() if k != DIGEST_KEY}
    rewards = demo.rewards[:end_frame]
    header.update(num_frames=int(end_frame), score=float(rewards.sum()), cut_from={
        "file": demo.path.name if demo.path is not None else None,
        "content_sha256": source.get(DIGEST_KEY), "num_frames": t, "score": demo.score,
        "end_frame": int(end_frame)})
    arrays = {
        "actions": demo.actions[:end_frame], "rewards": rewards,
        "lives": None if demo.lives is None else demo.lives[:end_frame + 1],
        "checkpoint_frames": demo.checkpoint_frames[kept],
    }
    states = [demo.checkpoint_state(i) for i in np.flatnonzero(kept)]
    path = save(arrays, header, states, out)
    prefix = load(path, rom_path=demo.rom_path)
    return prefix, verify(prefix)
