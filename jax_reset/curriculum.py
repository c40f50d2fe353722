"""The backward curriculum over demo starting points: a host-side, pure controller.

The rules are the reference's (``docs/algorithm.md``, "The curriculum controller"):
environments start spread over the demo's last ``spread`` frames; a table ``success[s]`` holds,
for each frame s that episodes started from, the share of the latest batch of those episodes
that tied or beat the demo; every ``decision_interval`` agent steps (throttled to at most
``max_frames_per_step`` frames moved per agent step) the maximum starting point moves to the
first frame i with ``cumsum(success)[i] / spread_frames >= success_threshold``, or, if there is
none, ``fallback_frames`` later; every environment's starting point shifts by the same amount.

Everything here is a pure function of a frozen ``CurriculumState`` and the gathered
``EpisodeRecords``: with several hosts, each gathers every host's records and reaches the same
decision (the success table does not depend on the records' order).

Each reset's start (80% at the environment's starting point, 20% uniform later) and the extra
frames budget are drawn by the pool's workers, where the resets happen
(``jax_reset.envs.DemoResetConfig``); the controller only sets the starting points.

Deliberate differences from the reference, each kept small:
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
from typing import Any

import numpy as np

STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """The backward curriculum over demo starting points (``docs/algorithm.md``)."""

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

    def __post_init__(self) -> None:
        _check(self.spread >= 1, "spread must be at least 1")
        _check(0.0 < self.success_threshold <= 1.0, "success_threshold must be in (0, 1]")
        _check(self.decision_interval >= 1, "decision_interval must be at least 1")
        _check(self.fallback_frames >= 0, "fallback_frames must be non-negative")
        _check(self.max_frames_per_step > 0, "max_frames_per_step must be positive")
        _check(self.start_at is None or self.start_at >= 0, "start_at must be non-negative")


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
    episodes: int = 0  # records the rule used
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


def init(num_envs: int, num_frames: int, config: CurriculumConfig) -> CurriculumState:
    """The state at launch; with ``config.start_at``, shifted so the maximum is there."""
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
    )
    if config.start_at is not None:
        state = set_max_starting_point(state, config.start_at)
        state = state.replace(origin=state.max_starting_point)
    return state


def shift(points: np.ndarray, frames: int) -> np.ndarray:
    """All starting points ``frames`` earlier (negative: later), never below 0."""
    return np.maximum(points - frames, 0).astype(np.int64)


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


def update(state: CurriculumState, records: EpisodeRecords, agent_steps: int,
           config: CurriculumConfig) -> tuple[CurriculumState, Decision]:
    """Adds the gathered records and ``agent_steps`` more steps per environment; decides if due.

    A decision is due whenever the step counter crosses a multiple of ``decision_interval``
    (exactly the reference's ``counter % 1024 == 0`` when the rollout length divides it) and the
    counter exceeds the frames moved so far divided by ``max_frames_per_step``. The records
    must be the same (in any order) on every host.
    """
    if agent_steps < 0:
        raise ValueError(f"agent_steps must be non-negative, got {agent_steps}")
    before, after = state.agent_steps, state.agent_steps + int(agent_steps)
    pending_start = np.concatenate([state.pending_start, records.start.astype(np.int64)])
    pending_good = np.concatenate([state.pending_good, records.as_good_as_demo.astype(bool)])
    state = state.replace(agent_steps=after, pending_start=pending_start,
                          pending_good=pending_good)
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
    )
    return state, Decision(decided=True, old_max=old_max, new_max=state.max_starting_point,
                           episodes=len(pending_start), found=found)


def summary(state: CurriculumState) -> dict[str, float]:
    """``curriculum/`` metrics: position, progress, success near the starting points."""
    lo, hi = state.min_starting_point, state.max_starting_point
    end = max(state.num_frames - 1, 1)
    share = float(np.cumsum(state.success)[hi] / state.spread_frames)
    return {
        "curriculum/max_starting_point": float(hi),
        "curriculum/min_starting_point": float(lo),
        # 0 at the demo's end, 1 when the agent plays from the game's start.
        "curriculum/progress": float((end - hi) / end),
        # The success table over the current starting points (as of the last decision).
        "curriculum/success_table_at_sp": float(state.success[lo:hi + 1].mean()),
        "curriculum/share_at_max": share,
        "curriculum/pending_episodes": float(len(state.pending_start)),
        "curriculum/decisions": float(state.decisions),
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
    }


def from_json(data: dict[str, Any]) -> CurriculumState:
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"curriculum state version {data.get('version')!r} is not "
                         f"{STATE_VERSION}, the one this code reads")
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
