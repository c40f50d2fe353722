"""Each update's windows of the demo for the imitation term (``jax_reset.ppo.imitation``).

A window imitates the demo's ``rollout_steps`` agent steps from a start frame drawn uniformly
from its demo's current spread of starting points [min, max] (``ppo.imitation_span =
"spread"``: where the environments start, so the term teaches the stretch the agent is
learning) or from the lowest starting point to the demo's end (``"rest"``: every stretch the
agent still plays, so a curriculum at the game's start still imitates the whole demo), after
``burn_in_steps`` steps of the demo before it that rebuild the recurrent state from zeros. Its
steps are ``frame_skip`` demo frames apart; the label of a step is the demo's action at its
first frame. The draws depend only on the run's seed and the update's number (not on the
processes or a resume), so a resumed run imitates the windows the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jax_reset import curriculum as cur
from jax_reset.envs.demo_history import DemoHistory
from jax_reset.ppo.config import IMITATION_SPANS, check_choice
from jax_reset.ppo.imitation import DemoBatch

_STREAM = 0x1A17  # the windows' own random stream beside the run's others


def window_frames(start: np.ndarray, burn_in_steps: int, rollout_steps: int,
                  frame_skip: int) -> np.ndarray:
    """int64 [S, M]: the demo frame of each step of windows whose first imitated step is at
    ``start`` int [M] (S = burn_in_steps + rollout_steps; burn-in frames may be negative)."""
    steps = np.arange(burn_in_steps + rollout_steps, dtype=np.int64) - burn_in_steps
    return np.asarray(start, np.int64)[None, :] + frame_skip * steps[:, None]


def build_windows(history: DemoHistory, actions: np.ndarray, start: np.ndarray,
                  burn_in_steps: int, rollout_steps: int, carry: Any) -> DemoBatch:
    """The windows of one demo (NumPy ``DemoBatch`` leaves ``[S, M, ...]``).

    Args:
      history: the demo's observations, built at least from
        ``history.needed_from(start.min(), burn_in_steps)`` on.
      actions: int [T] the demo's action at each frame (indices into the game's action set).
      start: int [M] each window's first imitated frame, in [0, T].
      carry: zeros, leaves ``[M, core_size]``.
    """
    t = len(actions)
    frames = window_frames(start, burn_in_steps, rollout_steps, history.skip)  # [S, M]
    inside = frames >= 0
    # The state resets at each window's first step inside the demo (the steps before it, which
    # reach back before the game's start, are padding whose state the reset discards).
    first = np.argmax(inside, axis=0)  # [M]
    episode_start = np.zeros(frames.shape, bool)
    episode_start[first, np.arange(frames.shape[1])] = True
    obs = history.stacked(np.clip(frames, 0, t).reshape(-1))
    action = np.where(inside & (frames < t), actions[np.clip(frames, 0, t - 1)], 0)
    mask = (frames < t) & (np.arange(frames.shape[0]) >= burn_in_steps)[:, None]
    return DemoBatch(obs=obs.reshape(*frames.shape, *obs.shape[1:]),
                     episode_start=episode_start, action=action.astype(np.int32),
                     mask=mask, carry=carry)


class DemoWindows:
    """This process's block of each update's windows, from every demo of the run.

    The job's ``windows`` are divided among the demos in contiguous blocks, as the
    environments are (``curriculum.env_demos``); process p of P builds windows
    [p * windows / P, (p + 1) * windows / P). Each demo's observations are its own
    ``DemoHistory`` (not the actor's: that one may be extended from the actor's thread).
    """

    def __init__(self, paths: Sequence[str], env: Any, rom_path: str | None, windows: int,
                 burn_in_steps: int, rollout_steps: int, carry: Any, seed: int,
                 process_index: int = 0, num_processes: int = 1,
                 span: str = "spread") -> None:
        if windows % num_processes:
            raise ValueError(f"ppo.imitation_windows ({windows}) must be divisible by the "
                             f"number of processes ({num_processes})")
        check_choice("imitation_span", span, IMITATION_SPANS)
        self.windows, self.seed, self.span = windows, seed, span
        self.burn_in_steps, self.rollout_steps = burn_in_steps, rollout_steps
        local = windows // num_processes
        self.lo, self.hi = process_index * local, (process_index + 1) * local
        self.demo_of = cur.env_demos(windows, len(paths))  # [windows]
        self.histories = [DemoHistory(p, env, rom_path, lo=10**12) for p in paths]  # empty
        self.actions = [np.asarray(h.demo.actions, np.int64) for h in self.histories]
        self.carry = carry  # zeros, leaves [local, core_size]
        # Span "rest": each demo's last start whose imitated steps all lie inside the demo.
        self.last_start = np.array([len(a) - h.skip * rollout_steps
                                    for a, h in zip(self.actions, self.histories, strict=True)],
                                   np.int64)

    def starts(self, update: int, spreads: Sequence[tuple[int, int]]) -> np.ndarray:
        """int64 [windows]: every window's first imitated frame at update ``update``, uniform
        in its demo's [min, max] starting point (``spreads[d]``), or with span "rest" in
        [min, the last start whose window ends inside the demo]."""
        rng = np.random.default_rng([self.seed, _STREAM, update])
        lo = np.array([spreads[d][0] for d in self.demo_of], np.int64)
        if self.span == "rest":
            hi = np.maximum(lo, self.last_start[self.demo_of])  # never below lo
        else:
            hi = np.array([spreads[d][1] for d in self.demo_of], np.int64)
        return lo + (rng.random(self.windows) * (hi - lo + 1)).astype(np.int64)

    def build(self, update: int, curricula: cur.Curricula) -> DemoBatch:
        """This process's windows for update ``update`` (0-based: the update about to run),
        NumPy leaves ``[S, local windows, ...]``."""
        spreads = [(s.min_starting_point, s.max_starting_point) for s in curricula.states]
        start = self.starts(update, spreads)[self.lo:self.hi]
        demo_of = self.demo_of[self.lo:self.hi]
        parts = []
        for d in np.unique(demo_of).tolist():
            own = start[demo_of == d]
            history = self.histories[d]
            history.ensure(history.needed_from(int(own.min()), self.burn_in_steps))
            n = len(own)
            carry = jax.tree.map(lambda c: c[:n], self.carry)  # noqa: B023 (used at once)
            parts.append(build_windows(history, self.actions[d], own, self.burn_in_steps,
                                       self.rollout_steps, carry))
        if len(parts) == 1:
            return parts[0]
        # Demos in contiguous blocks, in order: concatenating the parts keeps the windows' order.
        steps = lambda *xs: np.concatenate(xs, axis=1)  # noqa: E731
        return DemoBatch(
            obs=steps(*(p.obs for p in parts)),
            episode_start=steps(*(p.episode_start for p in parts)),
            action=steps(*(p.action for p in parts)), mask=steps(*(p.mask for p in parts)),
            carry=jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *(p.carry for p in parts)))
