"""The curriculum's data and its plain operations: no decision rule lives here.

``CurriculumConfig`` (the settings of both rules), ``EpisodeRecords`` (finished episodes, as
gathered from every host), the frozen ``CurriculumState`` and the ``Decision`` one update
reports; the launch layouts (``initial_starting_points`` for rule "reference",
``even_starting_points`` for rule "episodes") and ``init``; ``shift`` and
``set_max_starting_point``, which move the layout; and the exact JSON form of the state that the
checkpoint holds (``to_json``, ``from_json``, ``equal``). NumPy only, no JAX.
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
      demo: int64 [E], the index of the run's demo the episode started from (``demo.paths``;
        zeros when not given: a one-demo run).
    """

    start: np.ndarray
    as_good_as_demo: np.ndarray
    score: np.ndarray
    final_frame: np.ndarray
    demo: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.start)
        demo = np.zeros(n, np.int64) if self.demo is None else np.asarray(self.demo, np.int64)
        object.__setattr__(self, "demo", demo.reshape(-1))
        for name in ("as_good_as_demo", "score", "final_frame", "demo"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EpisodeRecords.{name} has {len(getattr(self, name))} entries, "
                                 f"start has {n}")

    @staticmethod
    def make(start: Sequence[int] | np.ndarray, as_good_as_demo: Sequence[bool] | np.ndarray,
             score: Sequence[float] | np.ndarray | None = None,
             final_frame: Sequence[int] | np.ndarray | None = None,
             demo: Sequence[int] | np.ndarray | None = None) -> EpisodeRecords:
        start = np.asarray(start, dtype=np.int64).reshape(-1)
        n = len(start)
        return EpisodeRecords(
            start=start,
            as_good_as_demo=np.asarray(as_good_as_demo, dtype=bool).reshape(-1),
            score=(np.zeros(n) if score is None else np.asarray(score, np.float64).reshape(-1)),
            final_frame=(start.copy() if final_frame is None
                         else np.asarray(final_frame, np.int64).reshape(-1)),
            demo=None if demo is None else np.asarray(demo, np.int64).reshape(-1),
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

    def of_demo(self, index: int) -> EpisodeRecords:
        """The episodes that started from demo ``index``."""
        keep = self.demo == index
        return EpisodeRecords(*(getattr(self, f.name)[keep]
                                for f in dataclasses.fields(EpisodeRecords)))


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
