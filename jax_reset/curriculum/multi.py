"""Several demos of one game in one run: one curriculum per demo, over its block of environments.

The job's N environments are divided among the D demos (``demo.paths``) in contiguous,
near-equal blocks (``demo_bounds``), so every process knows each environment's demo from its
index alone. Each demo has its own ``CurriculumState`` (starting points, success table,
decisions) over its block, decided from the episodes that started from that demo
(``EpisodeRecords.demo``); ``Curricula`` holds them in demo order. Its ``starting_points`` are
the blocks' concatenated, i.e. the job's environments' in global order.

One demo is the degenerate case: ``to_json`` writes exactly the one state's JSON (today's
checkpoint item, so a checkpoint of a one-demo run restores unchanged) and ``summary`` exactly
its keys. With several, the per-demo keys carry the demo's index
(``curriculum/demo0/max_starting_point``: unique even when two demo files share a name) and the
un-suffixed keys summarise them (see ``summary``). NumPy only, no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jax_reset.curriculum import state as st
from jax_reset.curriculum.controller import (
    MAX_STARTING_POINT,
    MIN_STARTING_POINT,
    summary,
    update,
)
from jax_reset.curriculum.state import (
    CurriculumConfig,
    CurriculumState,
    Decision,
    EpisodeRecords,
)

MULTI_VERSION = 1  # the JSON form of several demos' states ({"demos": [...]})


def demo_bounds(num_envs: int, num_demos: int) -> np.ndarray:
    """int64 [D + 1]: demo d owns the job's environments [bounds[d], bounds[d + 1]).

    Contiguous, near-equal blocks (8 environments over 2 demos: 4 each)."""
    if num_demos < 1:
        raise ValueError("a run needs at least one demo")
    if num_envs < num_demos:
        raise ValueError(f"train.num_envs ({num_envs}) must be at least the number of demos "
                         f"({num_demos}): each demo needs an environment")
    return np.linspace(0, num_envs, num_demos + 1).round().astype(np.int64)


def env_demos(num_envs: int, num_demos: int) -> np.ndarray:
    """int64 [N]: the demo index of each of the job's environments."""
    return np.repeat(np.arange(num_demos, dtype=np.int64),
                     np.diff(demo_bounds(num_envs, num_demos)))


def demo_key(key: str, index: int) -> str:
    """A metric key of demo ``index``: ``curriculum/x`` -> ``curriculum/demo<index>/x``."""
    namespace, _, name = key.rpartition("/")
    return f"{namespace}/demo{index}/{name}" if namespace else f"demo{index}/{name}"


@dataclasses.dataclass(frozen=True, eq=False)
class Curricula:
    """The run's curricula, one per demo in ``demo.paths`` order; treat as read-only."""

    states: tuple[CurriculumState, ...]

    def __post_init__(self) -> None:
        if not self.states:
            raise ValueError("Curricula needs at least one state")
        object.__setattr__(self, "states", tuple(self.states))

    @property
    def num_demos(self) -> int:
        return len(self.states)

    @property
    def starting_points(self) -> np.ndarray:
        """int64 [N]: every environment's starting point, in the job's order."""
        return np.concatenate([s.starting_points for s in self.states])

    @property
    def max_starting_point(self) -> int:
        """The latest maximum over the demos (one demo: its maximum)."""
        return max(s.max_starting_point for s in self.states)

    @property
    def min_starting_point(self) -> int:
        return min(s.min_starting_point for s in self.states)

    @property
    def max_starting_points(self) -> tuple[int, ...]:
        """Each demo's maximum starting point."""
        return tuple(s.max_starting_point for s in self.states)

    @property
    def agent_steps(self) -> int:
        """Agent steps per environment (the same in every demo's state)."""
        return self.states[0].agent_steps

    @property
    def num_envs(self) -> int:
        return sum(s.num_envs for s in self.states)


def as_curricula(state: Curricula | CurriculumState) -> Curricula:
    """A one-demo ``CurriculumState`` as ``Curricula``; ``Curricula`` as is."""
    return state if isinstance(state, Curricula) else Curricula((state,))


def init_curricula(num_envs: int, num_frames: Sequence[int],
                   config: CurriculumConfig) -> Curricula:
    """Each demo's state at launch over its block (``num_frames``: each demo's length T)."""
    bounds = demo_bounds(num_envs, len(num_frames))
    return Curricula(tuple(st.init(int(hi - lo), int(t), config)
                           for lo, hi, t in zip(bounds[:-1], bounds[1:], num_frames,
                                                strict=True)))


def update_curricula(curricula: Curricula, records: EpisodeRecords, agent_steps: int,
                     config: CurriculumConfig) -> tuple[Curricula, tuple[Decision, ...]]:
    """``controller.update`` of each demo's state on the records of its own episodes."""
    if len(records) and (records.demo.min() < 0 or records.demo.max() >= curricula.num_demos):
        raise ValueError(f"episode records name demo {int(records.demo.max())}, the run has "
                         f"{curricula.num_demos}")
    one = curricula.num_demos == 1
    out = [update(s, records if one else records.of_demo(d), agent_steps, config)
           for d, s in enumerate(curricula.states)]
    return Curricula(tuple(s for s, _ in out)), tuple(d for _, d in out)


def summary_all(curricula: Curricula) -> dict[str, float]:
    """The ``curriculum/`` metrics. One demo: ``controller.summary``. Several: each demo's
    under ``demo_key`` and, un-suffixed, the latest maximum starting point, the earliest
    minimum and the other values' means over the demos."""
    if curricula.num_demos == 1:
        return summary(curricula.states[0])
    each = [summary(s) for s in curricula.states]
    out: dict[str, float] = {}
    for key in each[0]:
        values = [e[key] for e in each]
        out[key] = (max(values) if key == MAX_STARTING_POINT else
                    min(values) if key == MIN_STARTING_POINT else float(np.mean(values)))
    for d, e in enumerate(each):
        out.update({demo_key(k, d): v for k, v in e.items()})
    return out


def to_json(curricula: Curricula) -> dict[str, Any]:
    """One demo: that state's JSON (``state.to_json``); several: ``{"demos": [...]}``."""
    if curricula.num_demos == 1:
        return st.to_json(curricula.states[0])
    return {"multi_version": MULTI_VERSION,
            "demos": [st.to_json(s) for s in curricula.states]}


def from_json(data: dict[str, Any]) -> Curricula:
    """Reads ``to_json``'s forms (and so a one-demo checkpoint of any version ``state``
    reads)."""
    if "demos" not in data:
        return Curricula((st.from_json(data),))
    if data.get("multi_version") != MULTI_VERSION:
        raise ValueError(f"curricula version {data.get('multi_version')!r} is not one this code "
                         f"reads ({MULTI_VERSION})")
    return Curricula(tuple(st.from_json(d) for d in data["demos"]))


def equal(a: Curricula | CurriculumState, b: Curricula | CurriculumState) -> bool:
    """Field-by-field equality of every demo's state (either form)."""
    a, b = as_curricula(a), as_curricula(b)
    return a.num_demos == b.num_demos and all(
        st.equal(x, y) for x, y in zip(a.states, b.states, strict=True))
