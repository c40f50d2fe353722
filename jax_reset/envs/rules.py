"""Why an episode ended, and the per-frame episode rules of the demo curriculum.

Rules (`docs/algorithm.md`, "Ending an episode"), checked after every emulator frame by the
worker through `frame_rules`: a life loss ends the episode; once the score reaches the demo's
final score R[T-1], a budget of extra frames counts down and its end cuts the episode; below
that score, reaching frame f > lag with a score below R[min(T-1, f - lag)] ends it (lagging the
demo by more than `lag` frames). The entropy boost is a per-frame rule too (`entropy_boost`).

Adding an end rule: a member of `EndReason` (with `is_done` / `is_cut`) and its check here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence

import numpy as np


class EndReason(enum.IntEnum):
    """`PoolStep.end_reason`; 0 while the episode goes on."""

    NONE = 0
    GAME_OVER = 1  # done: the game itself ended
    LIFE_LOSS = 2  # done: lives decreased and are still > 0
    LAG = 3  # done: the score lags the demo's by more than the allowed frames
    DEMO_SCORE_CUT = 4  # cut: the extra-frames budget after reaching the demo's score ran out
    TIME_LIMIT = 5  # cut: max_episode_steps agent steps since the game's reset

    @property
    def is_done(self) -> bool:
        """A real terminal: no value is bootstrapped across it."""
        return self in (EndReason.GAME_OVER, EndReason.LIFE_LOSS, EndReason.LAG)

    @property
    def is_cut(self) -> bool:
        """An end that is not a terminal: nothing is learned across it."""
        return self in (EndReason.DEMO_SCORE_CUT, EndReason.TIME_LIMIT)


# Lookup tables indexed by int(EndReason), for the worker's hot path (a tuple index is several
# times cheaper than the enum's property).
IS_DONE: tuple[bool, ...] = tuple(EndReason(r).is_done for r in range(max(EndReason) + 1))
IS_CUT: tuple[bool, ...] = tuple(EndReason(r).is_cut for r in range(max(EndReason) + 1))

FrameRules = Callable[[int, float, int, int, int], "tuple[int, int]"]


def frame_rules(returns: Sequence[float], allowed_lag_frames: int) -> FrameRules:
    """The curriculum's end rules after one emulator frame, bound to one demo.

    returns: R[f], the demo's cumulative score after frame f, [T]. The result is
    `rules(frame, score, lives, prev_lives, extra_frames) -> (reason, extra_frames)`: frame is
    the index reached by the frame just emulated, score the episode's unclipped score after it,
    lives / prev_lives the lives after / before it, extra_frames the budget left after reaching
    the demo's score (counted down here). reason: an int EndReason, 0 (NONE) to go on.
    """
    # Plain floats in a list and closure cells: this runs for every emulated frame.
    r = [float(x) for x in returns]
    last = len(r) - 1
    final_score = r[last]
    lag = int(allowed_lag_frames)
    life_loss, cut, lagging = int(EndReason.LIFE_LOSS), int(EndReason.DEMO_SCORE_CUT), int(
        EndReason.LAG)

    def rules(frame: int, score: float, lives: int, prev_lives: int, extra: int) -> tuple[int, int]:
        if 0 < lives < prev_lives:
            return life_loss, extra
        if score >= final_score:
            extra -= 1
            return (cut if extra <= 0 else 0), extra
        if frame > lag and score < r[min(last, frame - lag)]:
            return lagging, extra
        return 0, extra

    return rules


def entropy_boost(frame: int, starting_point: int, boost_frames: int) -> bool:
    """The per-frame entropy-boost rule: frame < sp + boost_frames (frame: the index reached by
    an emulated frame; sp: the env's current starting point).

    The reference (`ReplayResetEnv.step` in atari_reset/wrappers.py) applies it after every
    emulator frame and ORs it over the skip, so an agent step's flag is the rule at its *first*
    frame. An episode's first observation, which no agent step produced, takes it at its start
    frame."""
    return frame < starting_point + boost_frames


def draw_start_frame(
    rng: np.random.Generator, starting_point: int, num_frames: int, p_at_starting_point: float
) -> int:
    """Start frame of an episode: sp with probability p, else uniform in [sp, T); in [0, T]."""
    sp = min(max(int(starting_point), 0), num_frames)
    if sp >= num_frames or rng.random() < p_at_starting_point:
        return sp
    return int(rng.integers(sp, num_frames))


def draw_extra_frames(rng: np.random.Generator, log_max: float) -> int:
    """int(exp(log_max * U)), U ~ U[0, 1): 1 to ~1,100 frames for log_max = 7."""
    return int(math.exp(log_max * rng.random()))


def start_score(returns: np.ndarray, frame: int) -> float:
    """The demo's score at the state after `frame` frames: R[frame - 1], 0 at frame 0.

    (The reference started at R[frame], one frame ahead when r[frame] != 0: the **improve**.)
    """
    return float(returns[frame - 1]) if frame > 0 else 0.0
