"""The controller's entry points: ``update`` (one step of either rule) and ``summary``.

``update`` adds the gathered episode records and the agent steps to the state and, when a
decision is due, runs the configured rule (``reference`` or ``episodes``); ``summary`` turns a
state into the ``curriculum/`` metrics, whose keys are defined here so that the package
imports nothing but NumPy.
"""

from __future__ import annotations

import numpy as np

from jax_reset.curriculum.episodes import update_episodes
from jax_reset.curriculum.reference import next_max_starting_point, success_table
from jax_reset.curriculum.state import (
    CurriculumConfig,
    CurriculumState,
    Decision,
    EpisodeRecords,
    shift,
)


def update(state: CurriculumState, records: EpisodeRecords, agent_steps: int,
           config: CurriculumConfig) -> tuple[CurriculumState, Decision]:
    """Adds the gathered records and ``agent_steps`` more steps per environment; decides if due.

    Rule "reference": a decision is due whenever the step counter crosses a multiple of
    ``decision_interval`` (exactly the reference's ``counter % 1024 == 0`` when the rollout
    length divides it) and the counter exceeds the frames moved so far divided by
    ``max_frames_per_step``. Rule "episodes": see ``episodes.update_episodes``. The records
    must be the same (in any order) on every host.
    """
    if agent_steps < 0:
        raise ValueError(f"agent_steps must be non-negative, got {agent_steps}")
    before, after = state.agent_steps, state.agent_steps + int(agent_steps)
    pending_start = np.concatenate([state.pending_start, records.start.astype(np.int64)])
    pending_good = np.concatenate([state.pending_good, records.as_good_as_demo.astype(bool)])
    state = state.replace(agent_steps=after, pending_start=pending_start,
                          pending_good=pending_good)
    if config.rule == "episodes":
        return update_episodes(state, config)
    crossed = after // config.decision_interval > before // config.decision_interval
    moved = state.origin - state.max_starting_point
    if not crossed or after <= moved / config.max_frames_per_step:
        return state, Decision(old_max=state.max_starting_point, new_max=state.max_starting_point)
    success = success_table(state.success, pending_start, pending_good)
    old_max = state.max_starting_point
    new_max, found = next_max_starting_point(success, state.spread_frames, old_max,
                                             state.ceiling, config)
    state = state.replace(
        success=success,
        starting_points=shift(state.starting_points, old_max - new_max),
        pending_start=np.zeros(0, dtype=np.int64),
        pending_good=np.zeros(0, dtype=bool),
        decisions=state.decisions + 1,
        last_decision_step=after,
    )
    return state, Decision(decided=True, old_max=old_max, new_max=state.max_starting_point,
                           episodes=len(pending_start), found=found)


# The metric keys of ``summary`` (defined here so that this module imports nothing but NumPy;
# the trainer logs them with ``jax_reset.metrics``).
MAX_STARTING_POINT = "curriculum/max_starting_point"
MIN_STARTING_POINT = "curriculum/min_starting_point"
PROGRESS = "curriculum/progress"
SUCCESS_TABLE_AT_SP = "curriculum/success_table_at_sp"
SHARE_AT_MAX = "curriculum/share_at_max"
PENDING_EPISODES = "curriculum/pending_episodes"
DECISIONS = "curriculum/decisions"
SPREAD_FRAMES = "curriculum/spread_frames"


def summary(state: CurriculumState) -> dict[str, float]:
    """``curriculum/`` metrics: position, progress, success near the starting points."""
    lo, hi = state.min_starting_point, state.max_starting_point
    end = max(state.num_frames - 1, 1)
    share = float(np.cumsum(state.success)[hi] / state.spread_frames)
    return {
        MAX_STARTING_POINT: float(hi),
        MIN_STARTING_POINT: float(lo),
        # 0 at the demo's end, 1 when the agent plays from the game's start.
        PROGRESS: float((end - hi) / end),
        # The success table over the current starting points (as of the last decision).
        SUCCESS_TABLE_AT_SP: float(state.success[lo:hi + 1].mean()),
        SHARE_AT_MAX: share,
        PENDING_EPISODES: float(len(state.pending_start)),
        DECISIONS: float(state.decisions),
        # Frames the layout covers (rule "episodes" adapts it; constant for the reference).
        SPREAD_FRAMES: float(state.spread),
    }
