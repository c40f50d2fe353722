"""Rule "episodes": the 20% question asked over the environments' slots, not the frames.

``episodes_rule_max`` weighs each finished episode that started inside the spread by its slot
(1 / (n_j (K - 1))) and returns the first start frame at which the good episodes' cumulative
weight reaches the threshold; ``update_episodes`` decides when that runs (enough episodes and
steps since the last decision, within the throttle), falls back ``fallback_frames`` later when
no frame reaches it, adapts the spread and lays the environments out evenly again. The package
docstring (``jax_reset.curriculum``) gives the rule in full.
"""

from __future__ import annotations

import numpy as np

from jax_reset.curriculum.reference import success_table
from jax_reset.curriculum.state import (
    CurriculumConfig,
    CurriculumState,
    Decision,
    even_starting_points,
)


def episodes_rule_max(points: np.ndarray, starts: np.ndarray, good: np.ndarray,
                      threshold: float) -> tuple[int | None, int]:
    """Rule "episodes": (new maximum or None if no frame reaches ``threshold``, episodes used).

    Args:
      points: int [N], the environments' starting points (the K distinct ones are the slots).
      starts: int [E], the episodes' start frames; good: bool [E], tied or beat the demo.

    Only episodes with min(points) <= start <= max(points) count. An episode in slot j (its
    start in [p_j, p_{j+1})) weighs 1 / (n_j (K - 1)); the result is the first start frame at
    which the cumulative weight of the good episodes reaches ``threshold``. The sums run per
    frame, as the reference's table does, so a dense spread gives the reference's numbers.
    """
    slots = np.unique(points)
    inside = (starts >= slots[0]) & (starts <= slots[-1])
    starts, good = starts[inside], good[inside]
    if not len(starts):
        return None, 0
    frames, index, counts = np.unique(starts, return_inverse=True, return_counts=True)
    wins = np.bincount(index, weights=good.astype(np.float64), minlength=len(frames))
    slot = np.searchsorted(slots, frames, side="right") - 1
    per_slot = np.bincount(slot, weights=counts.astype(np.float64), minlength=len(slots))
    share = np.cumsum(wins / per_slot[slot]) / max(len(slots) - 1, 1)
    reached = np.flatnonzero(share >= threshold)
    return (int(frames[reached[0]]) if reached.size else None), len(starts)


def update_episodes(state: CurriculumState,
                     config: CurriculumConfig) -> tuple[CurriculumState, Decision]:
    """Rule "episodes" on a state whose pending records and step counter are up to date.

    Due once ``min_episodes`` pending episodes started inside the spread, ``min_decision_steps``
    agent steps passed since the last decision, and the throttle allows it; never once the
    maximum is 0 (finished: the pending records are dropped, nothing else changes).
    """
    old_max = state.max_starting_point
    no = Decision(old_max=old_max, new_max=old_max)
    if old_max == 0:
        return state.replace(pending_start=np.zeros(0, dtype=np.int64),
                             pending_good=np.zeros(0, dtype=bool)), no
    moved = state.origin - old_max
    if (state.agent_steps - state.last_decision_step < config.min_decision_steps
            or state.agent_steps <= moved / config.max_frames_per_step):
        return state, no
    lo = state.min_starting_point
    inside = int(np.count_nonzero((state.pending_start >= lo) & (state.pending_start <= old_max)))
    if inside < config.min_episodes:
        return state, no
    found_max, used = episodes_rule_max(state.starting_points, state.pending_start,
                                        state.pending_good, config.success_threshold)
    narrowest, widest = config.spread_bounds()
    spread = state.spread
    # The spread changes only with the maximum, so that "the maximum moved" is the one signal
    # that the environments' starting points changed (the trainer relies on it).
    if found_max is None:  # failed: move later by the bounded fallback, narrow the spread
        new_max = min(old_max + config.fallback_frames, state.ceiling)
        if new_max != old_max:
            spread = max(spread // 2, narrowest)
    else:  # found_max <= old_max by construction: only a failure moves it later
        new_max = found_max
        if new_max < old_max and 2 * (old_max - new_max) >= spread - 1:  # broad success: widen
            spread = min(spread * 2, widest)
    state = state.replace(
        success=success_table(state.success, state.pending_start, state.pending_good),
        starting_points=even_starting_points(state.num_envs, new_max, spread),
        spread=spread,
        pending_start=np.zeros(0, dtype=np.int64),
        pending_good=np.zeros(0, dtype=bool),
        decisions=state.decisions + 1,
        last_decision_step=state.agent_steps,
    )
    return state, Decision(decided=True, old_max=old_max, new_max=new_max, episodes=used,
                           found=found_max is not None)
