"""Stall handling: lower the learning rate and entropy coefficient when the curriculum stops.

The authors' advice for a run that stops making progress ("lower the learning rate and the
entropy coefficient") done by the trainer: when the maximum starting point has not moved back
past its lowest point so far for ``patience_decisions`` curriculum decisions (with several
demos: while no demo's maximum has moved back past its own lowest point), both are
multiplied by ``factor`` (never below ``min_scale`` times the configured values); when it moves
back again, the scale returns to 1 (``on_move="restore"``) or stays (``"keep"``). Off by
default: the 2018 reference kept both constant.

A frozen ``StallState`` and pure functions of it, like ``jax_reset.curriculum``: every process
of a job reaches the same scale from the same decisions. ``to_json``/``from_json`` are its
checkpoint item. Pure Python (no JAX), so the config schema can import ``StallConfig`` before
JAX loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

STATE_VERSION = 1

OnMove = Literal["restore", "keep"]


@dataclasses.dataclass(frozen=True)
class StallConfig:
    """When and how far the learning rate and entropy coefficient are lowered."""

    # Lower them when the curriculum stalls; False (the reference): constant, as configured.
    enabled: bool = False
    # Curriculum decisions in a row without a move back past the lowest maximum starting point
    # so far before the scale is lowered (and again after as many more).
    patience_decisions: int = 20
    # The scale is multiplied by this at each stall (0 < factor < 1).
    factor: float = 0.5
    # The scale never goes below this (the floor), as a share of the configured values.
    min_scale: float = 0.125
    # When the maximum starting point moves back again: "restore" the scale to 1, or "keep" it.
    on_move: OnMove = "restore"

    def __post_init__(self) -> None:
        _check(self.patience_decisions >= 1, "patience_decisions must be at least 1")
        _check(0.0 < self.factor < 1.0, "factor must be in (0, 1)")
        _check(0.0 < self.min_scale <= 1.0, "min_scale must be in (0, 1]")
        _check(self.on_move in ("restore", "keep"), "on_move must be 'restore' or 'keep'")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class StallState:
    """Where the stall controller stands.

    Attributes:
      decisions_without_move: curriculum decisions since the last move back or the last
        lowering.
      scale: the multiplier in force on the configured learning rate and entropy coefficient.
      best_max: the lowest maximum starting point (demo frame) reached so far; a move counts
        only past it (the fallback moves the point later, and coming back there is no progress).
    """

    decisions_without_move: int
    scale: float
    best_max: int
    # Several demos: each demo's lowest maximum (best_max is then their minimum); () for one.
    best_maxes: tuple[int, ...] = ()


def init(max_starting_point: int | Sequence[int]) -> StallState:
    """The state at the start of a run: scale 1, measured from the current starting point
    (several demos: each demo's maximum starting point, in demo order)."""
    if isinstance(max_starting_point, int) or len(max_starting_point) == 1:
        best = (int(max_starting_point) if isinstance(max_starting_point, int)
                else int(max_starting_point[0]))
        return StallState(decisions_without_move=0, scale=1.0, best_max=best)
    bests = tuple(int(x) for x in max_starting_point)
    return StallState(decisions_without_move=0, scale=1.0, best_max=min(bests),
                      best_maxes=bests)


def stall_update(state: StallState, decision_decided: bool, old_max: int, new_max: int,
                 config: StallConfig) -> tuple[StallState, bool]:
    """One update's curriculum outcome -> (new state, whether the scale changed).

    Args:
      decision_decided: the curriculum ran its rule this update (``Decision.decided``); updates
        without a decision change nothing.
      old_max, new_max: the maximum starting point before and after that decision.

    A decision that brings the maximum starting point below both ``best_max`` and ``old_max``
    is a move: the count restarts and, with ``on_move="restore"``, the scale returns to 1.
    Otherwise the count grows; at ``patience_decisions`` the scale is multiplied by ``factor``
    (not below ``min_scale``) and the count restarts, so a longer stall lowers it again.
    Disabled: the state comes back unchanged.
    """
    if not config.enabled or not decision_decided:
        return state, False
    if new_max < min(state.best_max, old_max):
        return _moved(state, StallState(0, state.scale, int(new_max)), config)
    return _not_moved(state, config)


def stall_update_demos(state: StallState, decided: Sequence[bool], old_max: Sequence[int],
                       new_max: Sequence[int], config: StallConfig) -> tuple[StallState, bool]:
    """``stall_update`` of a run of one or several demos: each demo's curriculum decision this
    update (``decided``, ``old_max``, ``new_max``, in demo order). One demo: ``stall_update``.
    Several: an update in which some demo decided counts as one decision; it is a move when
    some demo's maximum went below both its own lowest so far and its old maximum, so the scale
    is lowered only while no demo's curriculum moves back."""
    if len(decided) == 1 and not state.best_maxes:
        return stall_update(state, decided[0], old_max[0], new_max[0], config)
    if not config.enabled or not any(decided):
        return state, False
    moves = [d and n < min(b, o)
             for d, b, o, n in zip(decided, state.best_maxes, old_max, new_max, strict=True)]
    if any(moves):
        bests = tuple(int(n) if mv else b
                      for mv, b, n in zip(moves, state.best_maxes, new_max, strict=True))
        return _moved(state, StallState(0, state.scale, min(bests), bests), config)
    return _not_moved(state, config)


def _moved(state: StallState, new: StallState, config: StallConfig) -> tuple[StallState, bool]:
    """A move back: ``new`` (count 0, the new lowest maxima) with the scale restored or kept."""
    scale = 1.0 if config.on_move == "restore" else state.scale
    return dataclasses.replace(new, scale=scale), scale != state.scale


def _not_moved(state: StallState, config: StallConfig) -> tuple[StallState, bool]:
    """One more decision without a move: lowered once ``patience_decisions`` are reached."""
    count = state.decisions_without_move + 1
    if count < config.patience_decisions:
        return dataclasses.replace(state, decisions_without_move=count), False
    scale = max(state.scale * config.factor, config.min_scale)
    return dataclasses.replace(state, decisions_without_move=0, scale=scale), \
        scale != state.scale


def hyperparams(base_lr: float, base_ent: float, state: StallState) -> tuple[float, float]:
    """(learning rate, entropy coefficient) in force: the configured values times the scale."""
    return base_lr * state.scale, base_ent * state.scale


# The metric keys of ``summary``.
STALL_SCALE = "curriculum/stall_scale"
STALL_DECISIONS = "curriculum/stall_decisions"


def summary(state: StallState) -> dict[str, float]:
    """``curriculum/`` metrics of the controller: the scale in force, and the decisions since
    the last move back or lowering."""
    return {STALL_SCALE: float(state.scale),
            STALL_DECISIONS: float(state.decisions_without_move)}


def to_json(state: StallState) -> dict[str, Any]:
    out = {"version": STATE_VERSION,
           "decisions_without_move": state.decisions_without_move,
           "scale": state.scale,
           "best_max": state.best_max}
    if state.best_maxes:  # several demos only: a one-demo state is written as before
        out["best_maxes"] = list(state.best_maxes)
    return out


def from_json(data: dict[str, Any]) -> StallState:
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"stall state version {data.get('version')!r} is not {STATE_VERSION}, "
                         "the one this code reads")
    scale = float(data["scale"])
    if not (math.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ValueError(f"stall state: scale must be in (0, 1], got {scale}")
    return StallState(decisions_without_move=int(data["decisions_without_move"]),
                      scale=scale, best_max=int(data["best_max"]),
                      best_maxes=tuple(int(x) for x in data.get("best_maxes", [])))
