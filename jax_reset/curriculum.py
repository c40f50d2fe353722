"""The backward curriculum over demo starting points: a host-side, pure controller.

Two rules, chosen by ``CurriculumConfig.rule``; both are pure functions of a frozen
``CurriculumState`` and the gathered ``EpisodeRecords``: with several hosts, each gathers every
host's records and reaches the same decision (nothing depends on the records' order).

``rule = "reference"`` is the 2018 code's (``docs/algorithm.md``, "The curriculum controller"):
environments start spread over the demo's last ``spread`` frames, one frame apart; a table
``success[s]`` holds, for each frame s that episodes started from, the share of the latest batch
of those episodes that tied or beat the demo; every ``decision_interval`` agent steps (throttled
to at most ``max_frames_per_step`` frames moved per agent step) the maximum starting point moves
to the first frame i with ``cumsum(success)[i] / spread_frames >= success_threshold``, or, if
there is none, ``fallback_frames`` later; every environment's starting point shifts by the same
amount, never below 0, and an environment at 0 never moves again (the reference's
``decrement_starting_point`` skips it: the curriculum freezes at the game's start).

``rule = "episodes"`` asks the same question ("do at least 20% of the rollouts tie or beat the
demo on the rest of the game?") over the environments instead of over the frames of the spread,
so that its answer does not depend on how many environments there are:

* Slots. The environments' distinct starting points p_0 < ... < p_{K-1} are K slots; slot j
  holds the episodes that started in [p_j, p_{j+1}) (the last slot: at p_{K-1}). Only episodes
  that finished since the last decision and started inside [p_0, p_{K-1}] count: the 20% that
  start uniformly later in the demo say nothing about the current task (a throwaway per-episode
  rule without this filter jumped 5,500 frames later on them).
* Shares. Each slot weighs 1 / (K - 1), shared equally by its episodes; an episode's weight is
  1 / (n_j (K - 1)) for the n_j episodes of its slot. The new maximum is the start of the first
  frame at which the cumulative weight of successful episodes, in ascending start order,
  reaches ``success_threshold``. With 8 environments spread over 320 frames (slots ~46 frames
  apart) and every episode succeeding, that is the second-lowest slot: one decision moves
  6/7 of the spread, where the reference moves 6 frames (8 successes / 7 frames of spread).
* Equality with the reference, by construction. When the spread is dense (every frame of
  [p_0, p_{K-1}] is some environment's starting point) slots are frames, n_j is the count of
  episodes at that frame, an episode's weight sums per frame to the reference's
  ``wins / counts`` and K - 1 is ``spread_frames``: the cumulative sums are the same floating
  point numbers (the reference's table adds exact zeros between them), so from the same
  records at the same decision point, with a table that holds nothing earlier than p_0, both
  choose the same new maximum whenever the reference's lies inside the window. Where the
  reference's lies later (its table's stale entries and the uniform later starts), this rule
  falls back instead, see the next point. The equality holds until the spread is clipped at
  frame 0: the reference keeps dividing by the launch spread, this rule by the slots left.
* A failed decision (no frame reaches the threshold) moves the maximum ``fallback_frames``
  later (never past the demo's end); nothing else can move it later, so a failure never throws
  away more than that.
* Cadence, on statistics: a decision is taken once at least ``min_episodes`` episodes inside the
  window have finished since the last one and at least ``min_decision_steps`` agent steps per
  environment have passed (and within the same throttle as the reference). A handful of lucky
  episodes cannot move it; a fast-finishing batch need not wait for a fixed step count.
* Spread. At launch the environments are spread evenly over ``spread`` frames (8 environments
  over 320 frames: ~46 frames apart) and the layout is kept at every decision, shifted as a
  whole. The spread adapts within [spread / spread_factor, spread * spread_factor]: it doubles
  after a broad success (the decision moved the maximum by at least half the spread: the agent
  succeeds over most of it, so cover more ground per decision) and halves after a failed
  decision (the agent struggles near the maximum: put the environments close to it, where the
  practice is needed, with short episodes). ``spread_factor = 1`` keeps it fixed.
* Frame 0. Once every environment starts at 0 (the maximum is 0) the curriculum is finished and
  never moves again, as in the reference: the agent now trains on the task itself, the whole
  game, and moving later would trade that for an easier one. Before that, a failure moves the
  whole layout later, including environments that had been clipped at 0, so the spread keeps
  its shape (the reference's environments at 0 stay there while the others move later).

Each reset's start (80% at the environment's starting point, 20% uniform later) and the extra
frames budget are drawn by the pool's workers, where the resets happen
(``jax_reset.envs.DemoResetConfig``); the controller only sets the starting points.
``python -m jax_reset.bench curriculum`` measures both rules on a synthetic agent.

Deliberate differences from the reference in ``rule = "reference"``, each kept small:
* The throttle counts frames moved since this run's origin (its starting point at launch or
  ``start_at``), not since the demo's end: the reference, started at a given point, refused to
  move for (T - start) / 2 steps.
* A jump found by the 20% rule never goes past the demo's end (the reference's table could, in
  principle, place it on a later uniform start).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

# 2: the spread and the step of the last decision, for rule "episodes"; version 1 still loads.
STATE_VERSION = 2
RULES = ("reference", "episodes")


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """The backward curriculum over demo starting points (``docs/algorithm.md``)."""

    # "reference": the 2018 rule over the frames of the spread; "episodes": the same 20% question
    # over the environments' slots, scale-free (see the module's docstring).
    rule: Literal["reference", "episodes"] = "reference"
    # Frames of the demo's end the environments are spread over at launch (320 in the reference).
    spread: int = 320
    # The maximum starting point moves to the first frame i with cumsum(success)[i] / spread
    # at or above this share ("20% of the rollouts tie or beat the demo on the rest of the game").
    success_threshold: float = 0.2
    # Agent steps per environment between two curriculum decisions (1024 in the reference).
    decision_interval: int = 1024
    # Frames the starting point moves later when no frame reaches the threshold.
    fallback_frames: int = 100
    # Throttle: the curriculum may have moved at most this many frames per agent step so far.
    max_frames_per_step: float = 2.0
    # Start (or restart) the run with this maximum starting point; None: the demo's end.
    start_at: int | None = None
    # Rule "episodes": decide once this many episodes that started inside the spread have
    # finished since the last decision (16: from `python -m jax_reset.bench curriculum`) ...
    min_episodes: int = 16
    # ... and at least this many agent steps per environment have passed since it.
    min_decision_steps: int = 128
    # Rule "episodes": the spread adapts within [spread / factor, spread * factor] frames.
    spread_factor: float = 2.0

    def __post_init__(self) -> None:
        _check(self.spread >= 1, "spread must be at least 1")
        _check(0.0 < self.success_threshold <= 1.0, "success_threshold must be in (0, 1]")
        _check(self.decision_interval >= 1, "decision_interval must be at least 1")
        _check(self.fallback_frames >= 0, "fallback_frames must be non-negative")
        _check(self.max_frames_per_step > 0, "max_frames_per_step must be positive")
        _check(self.start_at is None or self.start_at >= 0, "start_at must be non-negative")
        _check(self.rule in RULES, f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        _check(self.min_episodes >= 1, "min_episodes must be at least 1")
        _check(self.min_decision_steps >= 1, "min_decision_steps must be at least 1")
        _check(self.spread_factor >= 1.0, "spread_factor must be at least 1")

    def spread_bounds(self) -> tuple[int, int]:
        """(narrowest, widest) spread in frames that rule "episodes" adapts within."""
        return (max(int(self.spread / self.spread_factor), 1),
                max(int(self.spread * self.spread_factor), 1))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeRecords:
    """Finished episodes as a struct of arrays, all of length E.

    Attributes:
      start: int64 [E], the frame each episode started from (s, not the environment's sp).
      as_good_as_demo: bool [E], the episode's score reached the demo's final score.
      score: float64 [E], the episode's final (unclipped, running) score.
      final_frame: int64 [E], the absolute frame index the episode reached.
    """

    start: np.ndarray
    as_good_as_demo: np.ndarray
    score: np.ndarray
    final_frame: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.start)
        for name in ("as_good_as_demo", "score", "final_frame"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EpisodeRecords.{name} has {len(getattr(self, name))} entries, "
                                 f"start has {n}")

    @staticmethod
    def make(start: Sequence[int] | np.ndarray, as_good_as_demo: Sequence[bool] | np.ndarray,
             score: Sequence[float] | np.ndarray | None = None,
             final_frame: Sequence[int] | np.ndarray | None = None) -> EpisodeRecords:
        start = np.asarray(start, dtype=np.int64).reshape(-1)
        n = len(start)
        return EpisodeRecords(
            start=start,
            as_good_as_demo=np.asarray(as_good_as_demo, dtype=bool).reshape(-1),
            score=(np.zeros(n) if score is None else np.asarray(score, np.float64).reshape(-1)),
            final_frame=(start.copy() if final_frame is None
                         else np.asarray(final_frame, np.int64).reshape(-1)),
        )

    @staticmethod
    def empty() -> EpisodeRecords:
        return EpisodeRecords.make([], [])

    @staticmethod
    def concatenate(parts: Iterable[EpisodeRecords]) -> EpisodeRecords:
        parts = list(parts)
        if not parts:
            return EpisodeRecords.empty()
        return EpisodeRecords(*(np.concatenate([getattr(p, f.name) for p in parts])
                                for f in dataclasses.fields(EpisodeRecords)))

    def __len__(self) -> int:
        return len(self.start)


@dataclasses.dataclass(frozen=True, eq=False)
class CurriculumState:
    """Everything the controller knows; treat the arrays as read-only.

    Attributes:
      num_frames: T, the demo's length in frames.
      spread_frames: max - min of the starting points at launch (at least 1).
      ceiling: the latest the maximum starting point may be (the launch maximum, T - 1).
      origin: the maximum starting point this run started from (the throttle counts from it).
      starting_points: int64 [N], each environment's starting point sp.
      success: float64 [T], success[s] = share of the latest batch of episodes started at s
        that were as good as the demo (0 where none has been seen).
      agent_steps: agent steps per environment so far (the reference's vector-step counter).
      pending_start, pending_good: records gathered since the last decision.
      decisions: how many times the 20% rule has run.
      spread: rule "episodes": the frames its layout covers now (max - min + 1 unless clipped
        at 0); rule "reference" keeps it at spread_frames + 1 and does not use it.
      last_decision_step: agent_steps at the last decision (0 before the first).
    """

    num_frames: int
    spread_frames: int
    ceiling: int
    origin: int
    starting_points: np.ndarray
    success: np.ndarray
    agent_steps: int
    pending_start: np.ndarray
    pending_good: np.ndarray
    decisions: int = 0
    spread: int = 1
    last_decision_step: int = 0

    @property
    def num_envs(self) -> int:
        return len(self.starting_points)

    @property
    def max_starting_point(self) -> int:
        return int(self.starting_points.max())

    @property
    def min_starting_point(self) -> int:
        return int(self.starting_points.min())

    def replace(self, **changes: Any) -> CurriculumState:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one call of ``update`` did (for logs)."""

    decided: bool = False  # the 20% rule ran
    old_max: int = 0
    new_max: int = 0
    # Records the rule used: all since the last decision ("reference"), those that started
    # inside the spread ("episodes"). Read by ``python -m jax_reset.bench curriculum``.
    episodes: int = 0
    found: bool = False  # a frame reached the threshold (False: fallback move later)


# --------------------------------------------------------------------------------------------


def initial_starting_points(num_envs: int, num_frames: int, spread: int) -> np.ndarray:
    """Environment k starts at T-1 - k // ceil(num_envs / spread) (never below 0), int64 [N]."""
    if num_envs < 1 or num_frames < 1 or spread < 1:
        raise ValueError(f"need num_envs, num_frames and spread >= 1, got {num_envs}, "
                         f"{num_frames}, {spread}")
    per_frame = math.ceil(num_envs / spread)
    k = np.arange(num_envs, dtype=np.int64)
    return np.maximum(num_frames - 1 - k // per_frame, 0)


def even_starting_points(num_envs: int, max_starting_point: int, spread: int) -> np.ndarray:
    """Rule "episodes": env k at max - round(k (spread - 1) / (N - 1)), never below 0, int64 [N].

    The environments cover ``spread`` frames evenly (8 over 320: ~46 frames apart; more
    environments than frames: every frame holds one or more).
    """
    if num_envs < 1 or spread < 1 or max_starting_point < 0:
        raise ValueError(f"need num_envs, spread >= 1 and a maximum >= 0, got {num_envs}, "
                         f"{spread}, {max_starting_point}")
    k = np.arange(num_envs, dtype=np.int64)
    denom = max(num_envs - 1, 1)
    offsets = (2 * k * (spread - 1) + denom) // (2 * denom)  # rounded, in integers
    return np.maximum(max_starting_point - offsets, 0).astype(np.int64)


def init(num_envs: int, num_frames: int, config: CurriculumConfig) -> CurriculumState:
    """The state at launch; with ``config.start_at``, shifted so the maximum is there."""
    if config.rule == "episodes":
        if num_frames < 1:
            raise ValueError(f"need num_frames >= 1, got {num_frames}")
        points = even_starting_points(num_envs, num_frames - 1, config.spread)
    else:
        points = initial_starting_points(num_envs, num_frames, config.spread)
    state = CurriculumState(
        num_frames=num_frames,
        spread_frames=max(int(points.max() - points.min()), 1),
        ceiling=int(points.max()),
        origin=int(points.max()),
        starting_points=points,
        success=np.zeros(num_frames, dtype=np.float64),
        agent_steps=0,
        pending_start=np.zeros(0, dtype=np.int64),
        pending_good=np.zeros(0, dtype=bool),
        spread=config.spread if config.rule == "episodes" else max(
            int(points.max() - points.min()), 1) + 1,
    )
    if config.start_at is not None:
        if not 0 <= config.start_at < num_frames:
            raise ValueError(f"starting point {config.start_at} is outside the demo "
                             f"(0..{num_frames - 1})")
        if config.rule == "episodes":
            points = even_starting_points(num_envs, config.start_at, state.spread)
            state = state.replace(starting_points=points)
        else:
            state = set_max_starting_point(state, config.start_at)
        state = state.replace(origin=state.max_starting_point)
    return state


def shift(points: np.ndarray, frames: int) -> np.ndarray:
    """All starting points ``frames`` earlier (negative: later), never below 0; a point at 0
    stays at 0 (the reference's ``decrement_starting_point`` skips environments at 0)."""
    return np.where(points > 0, np.maximum(points - frames, 0), points).astype(np.int64)


def set_max_starting_point(state: CurriculumState, frame: int) -> CurriculumState:
    """Moves every starting point so that the maximum is ``frame`` (start or resume there)."""
    if not 0 <= frame < state.num_frames:
        raise ValueError(f"starting point {frame} is outside the demo (0..{state.num_frames - 1})")
    points = shift(state.starting_points, state.max_starting_point - int(frame))
    return state.replace(starting_points=points)


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


def update(state: CurriculumState, records: EpisodeRecords, agent_steps: int,
           config: CurriculumConfig) -> tuple[CurriculumState, Decision]:
    """Adds the gathered records and ``agent_steps`` more steps per environment; decides if due.

    Rule "reference": a decision is due whenever the step counter crosses a multiple of
    ``decision_interval`` (exactly the reference's ``counter % 1024 == 0`` when the rollout
    length divides it) and the counter exceeds the frames moved so far divided by
    ``max_frames_per_step``. Rule "episodes": see ``_update_episodes``. The records must be the
    same (in any order) on every host.
    """
    if agent_steps < 0:
        raise ValueError(f"agent_steps must be non-negative, got {agent_steps}")
    before, after = state.agent_steps, state.agent_steps + int(agent_steps)
    pending_start = np.concatenate([state.pending_start, records.start.astype(np.int64)])
    pending_good = np.concatenate([state.pending_good, records.as_good_as_demo.astype(bool)])
    state = state.replace(agent_steps=after, pending_start=pending_start,
                          pending_good=pending_good)
    if config.rule == "episodes":
        return _update_episodes(state, config)
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


def _update_episodes(state: CurriculumState,
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


# The metric keys of ``summary`` (``jax_reset.metrics`` re-exports them: defined here so that
# this module imports nothing but NumPy).
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


# --------------------------------------------------------------------------------------------
# Serialisation (a JSON item of the checkpoint): exact, small (the success table is sparse).


def to_json(state: CurriculumState) -> dict[str, Any]:
    nonzero = np.flatnonzero(state.success)
    return {
        "version": STATE_VERSION,
        "num_frames": state.num_frames,
        "spread_frames": state.spread_frames,
        "ceiling": state.ceiling,
        "origin": state.origin,
        "starting_points": state.starting_points.tolist(),
        "success_frames": nonzero.tolist(),
        "success_values": state.success[nonzero].tolist(),
        "agent_steps": state.agent_steps,
        "pending_start": state.pending_start.tolist(),
        "pending_good": state.pending_good.astype(int).tolist(),
        "decisions": state.decisions,
        "spread": state.spread,
        "last_decision_step": state.last_decision_step,
    }


def from_json(data: dict[str, Any]) -> CurriculumState:
    """Reads versions 1 and 2; a version-1 state gets the reference's spread and counts its
    last decision as now (rule "episodes" then waits ``min_decision_steps`` before deciding)."""
    version = data.get("version")
    if version not in (1, STATE_VERSION):
        raise ValueError(f"curriculum state version {version!r} is not one this code reads "
                         f"(1, {STATE_VERSION})")
    if version == 1:
        data = {**data, "spread": int(data["spread_frames"]) + 1,
                "last_decision_step": int(data["agent_steps"])}
    success = np.zeros(int(data["num_frames"]), dtype=np.float64)
    success[np.asarray(data["success_frames"], dtype=np.int64)] = np.asarray(
        data["success_values"], dtype=np.float64)
    return CurriculumState(
        num_frames=int(data["num_frames"]),
        spread_frames=int(data["spread_frames"]),
        ceiling=int(data["ceiling"]),
        origin=int(data["origin"]),
        starting_points=np.asarray(data["starting_points"], dtype=np.int64),
        success=success,
        agent_steps=int(data["agent_steps"]),
        pending_start=np.asarray(data["pending_start"], dtype=np.int64),
        pending_good=np.asarray(data["pending_good"], dtype=bool),
        decisions=int(data["decisions"]),
        spread=int(data["spread"]),
        last_decision_step=int(data["last_decision_step"]),
    )


def equal(a: CurriculumState, b: CurriculumState) -> bool:
    """Field-by-field equality (the dataclass holds arrays, so ``==`` is not defined)."""
    for f in dataclasses.fields(CurriculumState):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            if va.shape != vb.shape or not np.array_equal(va, vb):
                return False
        elif va != vb:
            return False
    return True
