"""When a run's curriculum passed each of its demo's scoring frames.

A curriculum's speed through frames where the demo's score is already held measures the rule; the
agent steps it takes to move past each frame where the demo scores measure learning (the agent
must win that point about as fast as the demonstrator). ``python -m jax_reset.plot`` prints this
table for a run and writes it as ``milestones.json`` beside the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jax_reset import curriculum as cur
from jax_reset import metrics

JSON_NAME = "milestones.json"  # written beside the plots
START = 1  # "below frame 1": the maximum starting point reached the game's start (frame 0)


def scoring_frames(rewards: np.ndarray) -> list[int]:
    """The demo frames whose action earned a reward, latest first, then ``START``.
    rewards: float [T] -> frames."""
    frames = [int(f) for f in np.flatnonzero(np.asarray(rewards) != 0)[::-1] if f > START]
    return [*frames, START]


def passes(steps: Sequence[float], seconds: Sequence[float] | None,
           max_starting_points: Sequence[float], frames: Sequence[int]) -> list[dict[str, Any]]:
    """For each frame: the agent steps (and training seconds) of the first metrics line whose
    maximum starting point is below it, and of the line from which on it stays below ("for
    good"); None where not reached. All sequences are per metrics line, in order: [n]."""
    sp = np.asarray(max_starting_points, float)
    out = []
    for frame in frames:
        below = sp < frame
        first = int(np.argmax(below)) if below.any() else None
        # The last line at or above the frame; for good starts on the line after it.
        above = np.flatnonzero(~below)
        for_good = (int(above[-1]) + 1 if len(above) else 0) if below[-1] else None
        out.append({
            "frame": int(frame),
            "first_agent_steps": None if first is None else float(steps[first]),
            "for_good_agent_steps": None if for_good is None else float(steps[for_good]),
            "first_training_s": None if first is None or seconds is None
            else float(seconds[first]),
            "for_good_training_s": None if for_good is None or seconds is None
            else float(seconds[for_good]),
        })
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """``passes`` as text, down to the first frame not yet passed."""
    def cell(value: float | None, unit: str) -> str:
        if value is None:
            return "not yet"
        return f"{value:,.0f}" if unit == "steps" else f"{value / 60:,.1f} min"

    lines = [f"{'below frame':>12} {'first (agent steps)':>20} {'for good (agent steps)':>23} "
             f"{'first (training)':>17} {'for good (training)':>20}"]
    shown = next((i + 1 for i, r in enumerate(rows) if r["first_agent_steps"] is None),
                 len(rows))  # up to the first frame not yet passed
    for r in rows[:shown]:
        lines.append(f"{r['frame']:>12,} {cell(r['first_agent_steps'], 'steps'):>20} "
                     f"{cell(r['for_good_agent_steps'], 'steps'):>23} "
                     f"{cell(r['first_training_s'], 's'):>17} "
                     f"{cell(r['for_good_training_s'], 's'):>20}")
    if shown < len(rows):
        lines.append(f"{'':>12} ({len(rows) - shown} earlier scoring frames, down to frame "
                     f"{rows[-1]['frame']}, not yet passed)")
    return "\n".join(lines)


def for_run(rows: list[dict[str, Any]], rewards: np.ndarray, time_key: str,
            sp_key: str = cur.MAX_STARTING_POINT) -> list[dict[str, Any]]:
    """``passes`` over a run's metrics lines (those with agent steps and ``sp_key``)."""
    lines = [r for r in rows if metrics.AGENT_STEPS in r and r.get(sp_key) is not None]
    seconds = [r.get(time_key) for r in lines]
    return passes([r[metrics.AGENT_STEPS] for r in lines],
                  None if any(s is None for s in seconds) else seconds,
                  [r[sp_key] for r in lines], scoring_frames(rewards))

