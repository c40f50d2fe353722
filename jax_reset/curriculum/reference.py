"""Rule "reference": the 2018 code's 20% rule over the frames of the spread.

``success_table`` folds a batch of episode records into the per-frame table ``success[s]`` (the
share of the batch's episodes started at s that tied or beat the demo; other frames kept), and
``next_max_starting_point`` picks the new maximum starting point from it: the first frame whose
cumulative success over ``spread_frames`` reaches the threshold, else ``fallback_frames`` later.
When a decision is due is ``controller.update``'s business; rule "episodes" reuses the table.
"""

from __future__ import annotations

import numpy as np

from jax_reset.curriculum.state import CurriculumConfig


def success_table(success: np.ndarray, records_start: np.ndarray,
                  records_good: np.ndarray) -> np.ndarray:
    """success[s] := share of good episodes among this batch's starts at s; others kept."""
    success = success.copy()
    if len(records_start):
        if records_start.min() < 0 or records_start.max() >= len(success):
            raise ValueError(f"an episode record starts outside the demo (0..{len(success) - 1})")
        frames, counts = np.unique(records_start, return_counts=True)
        wins = np.bincount(np.searchsorted(frames, records_start),
                           weights=records_good.astype(np.float64), minlength=len(frames))
        success[frames] = wins / counts
    return success


def next_max_starting_point(success: np.ndarray, spread_frames: int, current_max: int,
                            ceiling: int, config: CurriculumConfig) -> tuple[int, bool]:
    """The 20% rule: (new maximum starting point, whether a frame reached the threshold)."""
    reached = np.flatnonzero(np.cumsum(success) / spread_frames >= config.success_threshold)
    if reached.size:
        return min(int(reached[0]), ceiling), True
    return min(current_max + config.fallback_frames, ceiling), False
