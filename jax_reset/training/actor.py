"""Acting: the ``Actor`` steps the pool with the policy and collects rollouts (how they reach
the learner, in turn or overlapped: ``jax_reset.training.rollout_source``).

The pool belongs to whichever thread acts; starting points set from the learner's thread are
applied at the start of the rollout they name (the pool only accepts them between steps).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jax_reset import curriculum as cur
from jax_reset import metrics as m
from jax_reset.envs.demo_history import DemoHistory
from jax_reset.networks import init_carry
from jax_reset.ppo.data import Transition, zeros_transition


class Stopped(Exception):
    """A stop was requested before the rollout was complete."""


@dataclasses.dataclass
class Rollout:
    """One rollout of T steps for this process's B environments, for ``assemble_batch``."""

    transition: Transition  # leaves [T, B, ...] (NumPy)
    bootstrap_value: np.ndarray  # float32 [B]
    tail_carry: Any  # the recurrent state before the last burn_in_steps steps
    records: cur.EpisodeRecords  # the episodes that ended in it
    frames: int  # emulator frames stepped
    metrics: dict[str, float]  # actor/ keys (``jax_reset.metrics``)
    policy_version: int  # updates that made the acting parameters


def group_bounds(num_envs: int, env_groups: int) -> list[slice]:
    """``env_groups`` contiguous, near-equal slices of ``num_envs`` environments, in order.

    Contiguous and ascending: each worker then receives its environments' commands in the
    same order as with one group (one step of all, then the next), so its random draws, and
    the order of the episode records, do not depend on the grouping."""
    if not 1 <= env_groups <= num_envs:
        raise ValueError(f"train.env_groups ({env_groups}) must be in [1, {num_envs}] (this "
                         "process's environments)")
    bounds = np.linspace(0, num_envs, env_groups + 1).round().astype(int).tolist()
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _concat_carry(carries: list[Any]) -> Any:
    """The groups' recurrent states as one tree of leaves [B, ...] (one group: unchanged)."""
    if len(carries) == 1:
        return carries[0]
    return jax.tree.map(lambda *c: np.concatenate([np.asarray(x) for x in c]), *carries)


@dataclasses.dataclass(frozen=True)
class WarmUp:
    """How an episode that starts from a demo state warms the recurrent state up: a scan of
    ``fn`` (``ppo.warmup.make_warmup_fn(network)``) over the ``steps`` agent steps of demo
    before its start, read from ``histories`` (one ``DemoHistory`` per demo, in ``demo.paths``
    order: each environment warms up on its own demo's, ``pool.env_demo``). No histories or
    0 steps: episodes start from zeros."""

    histories: Sequence[DemoHistory] = ()
    fn: Any = None
    steps: int = 0


class Actor:
    """Steps the pool with the policy; keeps the acting state (observations, recurrent state,
    the action already computed for the next step) between rollouts. Owned by one thread at a
    time.

    With ``env_groups`` G > 1 the environments are split into G contiguous groups and, when
    ``pipelined``, stepped EnvPool's asynchronous way: one group's actions go out with the
    pool's ``send`` and, while its workers emulate, the policy infers for the next group; the
    oldest group's results come back with ``recv``. Each environment samples with its own key
    (``fold_in(step key, env index)``), so the transitions are those of the lock-step path with
    the same groups, byte for byte; against one group they differ only by the float order of
    smaller inference batches (XLA:CPU's results depend on the batch size in the last bits).

    Args:
      pool: an ``AtariPool`` of B environments in demo mode.
      act_fn: ``ppo.acting.make_act_fn(network)``.
      network_config: for the recurrent state's shape.
      rollout_steps, burn_in_steps: T, and the steps before the end whose entering state is the
        next update's burn-in (``ppo.data.assemble_batch``).
      act_key: the acting key; rollout i draws from ``fold_in(act_key, i)`` (resumable).
      warmup: how episodes that start from a demo state warm the recurrent state up
        (``WarmUp``; None: they start from zeros).
      env_groups: G, the groups inference and stepping are split into (``train.env_groups``).
      pipelined: with G > 1, overlap a group's emulation with the next group's inference;
        False: infer every group, then step all environments at once (for tests and benches).
    """

    def __init__(self, pool: Any, act_fn: Any, network_config: Any, rollout_steps: int,
                 burn_in_steps: int, act_key: jax.Array,
                 warmup: WarmUp | None = None, env_groups: int = 1,
                 pipelined: bool = True) -> None:
        self.pool, self.act_fn = pool, act_fn
        self.t, self.k = rollout_steps, burn_in_steps
        self.act_key = act_key
        self.groups = group_bounds(pool.num_envs, env_groups)
        self.pipelined = pipelined and len(self.groups) > 1
        # Host arrays of the environments' indices: the per-environment sampling keys, and the
        # pool's ids for a group's send (None: all environments, the pool's fast path).
        self._env_ids = [np.arange(g.start, g.stop, dtype=np.int32) for g in self.groups]
        self._send_ids = [None if len(self.groups) == 1 else ids for ids in self._env_ids]
        self._carries = [init_carry(network_config, g.stop - g.start) for g in self.groups]
        self._carry_shapes = init_carry(network_config, pool.num_envs)  # all environments'
        # Warm starts need a recurrent core, stored demo observations and a history length.
        warmup = warmup or WarmUp()
        self.histories: list[DemoHistory] = list(warmup.histories)
        warmup_fn, warmup_steps = warmup.fn, warmup.steps
        self.warm = (bool(self.histories) and warmup_steps > 0
                     and bool(jax.tree.leaves(self._carries[0])))
        self.warmup_fn, self.warmup_steps = warmup_fn, warmup_steps
        # Each environment's demo (an index into the histories; all 0 with one demo).
        self.env_demo = np.asarray(getattr(pool, "env_demo", np.zeros(pool.num_envs, np.int64)))
        # (first rollout number, starting points int [B]) in the order set.
        self._pending_points: list[tuple[int, np.ndarray]] = []
        self._lock = threading.Lock()
        first = pool.reset()
        # Whole-batch host arrays [B, ...], updated group by group (slices are views).
        self.obs, self.start, self.boost = first.obs, first.episode_start, first.entropy_boost
        self.frame = first.frame
        # Per group: the action/value for its current observations, computed with the
        # bootstrap, and the state its episode starts reset to.
        self.next_out: list[Any] = [None] * len(self.groups)
        self.next_start_carry: list[Any] = [None] * len(self.groups)
        # (demo, start frame) -> state, per rollout
        self._warm_cache: dict[tuple[int, int], list[np.ndarray]] = {}

    @property
    def carry(self) -> Any:
        """The recurrent state entering the next step, leaves [B, core_size]."""
        return _concat_carry(self._carries)

    def _start_carry(self, params: Any, g: int) -> Any:
        """State to reset group ``g`` to where an episode starts: the warm-up over the demo's
        observations before its start frame (numpy leaves [b, core_size]); None without warm
        starts."""
        if not self.warm:
            return None
        rows = self.groups[g]
        out = jax.tree.map(lambda c: np.zeros(c.shape, np.float32), self._carries[g])
        ids = np.flatnonzero(self.start[rows])
        if not len(ids):
            return out
        keys = list(zip(self.env_demo[rows][ids].tolist(), self.frame[rows][ids].tolist(),
                        strict=True))
        # 80% of episodes start at their environment's starting point: with the parameters
        # fixed for the rollout, each start frame of each demo is warmed up once (the cache is
        # per rollout).
        missing = sorted(set(keys) - self._warm_cache.keys())  # by demo, then frame
        if len(missing):
            demo_of = np.array([d for d, _ in missing], np.int64)
            frames = np.array([f for _, f in missing], np.int64)
            parts = [self.histories[d].history(frames[demo_of == d], self.warmup_steps)
                     for d in np.unique(demo_of).tolist()]
            obs = np.concatenate([o for o, _ in parts])
            mask = np.concatenate([k for _, k in parts])
            # Pad to a power of two: a few compiled sizes, not one per count.
            size = min(1 << (len(missing) - 1).bit_length(), self.pool.num_envs)
            if size > len(missing):
                pad = size - len(missing)
                obs = np.concatenate([obs, np.zeros((pad, *obs.shape[1:]), obs.dtype)])
                mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
            warm = [np.asarray(w) for w in jax.tree.leaves(self.warmup_fn(params, obs, mask))]
            for i, key in enumerate(missing):
                self._warm_cache[key] = [w[i] for w in warm]
        for i, key in zip(ids.tolist(), keys, strict=True):
            for o, w in zip(jax.tree.leaves(out), self._warm_cache[key], strict=True):
                o[i] = w
        return out

    def set_starting_points(self, points: np.ndarray, from_rollout: int = 0) -> None:
        """This process's environments' starting points int [B], from any thread: applied at
        the start of the first rollout numbered ``from_rollout`` or later. The learner names
        a rollout the actor cannot have started yet, so the rollout that first sees the points
        does not depend on how the two threads' timings fell (runs repeat exactly)."""
        with self._lock:
            self._pending_points.append((from_rollout, np.asarray(points, np.int64).copy()))

    def _apply_points(self, index: int) -> None:
        """The latest points due at rollout ``index``, if any (later ones stay pending)."""
        with self._lock:
            due = [p for at, p in self._pending_points if at <= index]
            self._pending_points = [(at, p) for at, p in self._pending_points if at > index]
        if due:
            points = due[-1]
            if self.warm:
                for d, history in enumerate(self.histories):
                    own = points[self.env_demo == d]
                    if len(own):
                        history.ensure(history.needed_from(int(own.min()), self.warmup_steps))
            self.pool.set_starting_points(None, points)

    def _act(self, params: Any, g: int, key: jax.Array, timing: dict[str, float],
             ) -> tuple[Any, Any]:
        """Group ``g``'s action for its current observations (and the warm-up state)."""
        with m.timed(timing, m.ACTOR_WARMUP_S):
            start_carry = self._start_carry(params, g)
        rows = self.groups[g]
        with m.timed(timing, m.ACTOR_INFERENCE_S):
            out = self.act_fn(params, self.obs[rows], self.start[rows], self.boost[rows],
                              self._carries[g], key, start_carry, self._env_ids[g])
            jax.block_until_ready(out.action)  # counted as inference, not as a pool step
        return out, start_carry

    def _advance(self, g: int, out: Any, res: Any, at: slice) -> None:
        """Group ``g`` took ``out``'s actions and ``res`` (rows ``at`` of a pool step) came
        back: its acting state moves to the new observations."""
        rows = self.groups[g]
        self._carries[g] = out.carry
        self.obs[rows], self.start[rows] = res.obs[at], res.episode_start[at]
        self.boost[rows], self.frame[rows] = res.entropy_boost[at], res.frame[at]

    def collect(self, params: Any, index: int, version: int,
                stop: threading.Event | None = None) -> Rollout:
        """Rollout number ``index`` with ``params`` (made by ``version`` updates); raises
        ``Stopped`` as soon as ``stop`` is set."""
        self._apply_points(index)
        self._warm_cache.clear()  # new parameters
        timing = {m.ACTOR_INFERENCE_S: 0.0, m.ACTOR_WARMUP_S: 0.0, m.ACTOR_ENV_STEP_S: 0.0}
        rec = _RolloutBuffer(self)
        keys = jax.random.split(jax.random.fold_in(self.act_key, index), self.t + 1)
        tail: list[Any] = [None] * len(self.groups)
        (_collect_pipelined if self.pipelined else _collect_lockstep)(
            self, params, keys, rec, tail, timing, stop)
        if self.k == 0:
            tail = list(self._carries)
        bootstrap = np.concatenate([np.asarray(out.value) for out in self.next_out])
        return Rollout(transition=rec.buf, bootstrap_value=bootstrap,
                       tail_carry=_concat_carry(tail),
                       records=cur.EpisodeRecords.concatenate(rec.records), frames=rec.frames,
                       metrics=timing, policy_version=version)


class _RolloutBuffer:
    """What one rollout records, written group by group: the transitions, the episode records
    in step order, the emulator frames."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.buf = zeros_transition(actor.t, actor.pool.num_envs, actor.obs.shape[1:],
                                    carry=actor._carry_shapes if actor.warm else None)
        self.records: list[cur.EpisodeRecords] = []
        self.frames = 0

    def add(self, step: int, g: int, out: Any, start_carry: Any, res: Any, at: slice) -> None:
        """Group ``g``'s step ``step``: acted ``out`` on the actor's observations; ``res`` (rows
        ``at`` of a pool step) is what came back. Advances the group's acting state."""
        a, buf, rows = self.actor, self.buf, self.actor.groups[g]
        if start_carry is not None:
            for b, c in zip(jax.tree.leaves(buf.start_carry), jax.tree.leaves(start_carry),
                            strict=True):
                b[step, rows] = c
        buf.obs[step, rows] = a.obs[rows]
        buf.episode_start[step, rows] = a.start[rows]
        buf.entropy_boost[step, rows] = a.boost[rows]
        buf.action[step, rows] = np.asarray(out.action)
        buf.logp[step, rows] = np.asarray(out.logp)
        buf.value[step, rows] = np.asarray(out.value)
        buf.reward[step, rows] = res.reward[at]
        buf.done[step, rows] = res.done[at]
        buf.cut[step, rows] = res.cut[at]
        buf.valid[step, rows] = True  # the pool resets inside the ending step: no pseudo-steps
        self.frames += int(res.step_frames[at].sum())  # exact: skips cut by an end, no restores
        ended = res.ended[at]
        if ended.any():
            self.records.append(cur.EpisodeRecords.make(
                res.ep_start_frame[at][ended], res.ep_as_good_as_demo[at][ended],
                res.ep_score[at][ended], res.ep_end_frame[at][ended],
                a.env_demo[rows][ended]))
        a._advance(g, out, res, at)


def _collect_lockstep(a: Actor, params: Any, keys: jax.Array, rec: _RolloutBuffer,
                      tail: list[Any], timing: dict[str, float],
                      stop: threading.Event | None) -> None:
    """Every group infers, then all environments step at once (``pool.step``)."""
    outs, starts = a.next_out, a.next_start_carry
    everything = slice(None)
    for step in range(a.t):
        if stop is not None and stop.is_set():
            raise Stopped
        for g in range(len(a.groups)):
            if step == a.t - a.k:
                tail[g] = a._carries[g]
            if outs[g] is None:
                outs[g], starts[g] = a._act(params, g, keys[step], timing)
        action = np.concatenate([np.asarray(out.action) for out in outs])
        with m.timed(timing, m.ACTOR_ENV_STEP_S):
            res = a.pool.step(action)
        for g, rows in enumerate(a.groups):
            rec.add(step, g, outs[g], starts[g], res, rows if len(a.groups) > 1 else everything)
        outs, starts = [None] * len(a.groups), [None] * len(a.groups)
        a.next_out, a.next_start_carry = outs, starts  # nothing computed yet for the new obs
    # Acting once on the next observation gives both the bootstrap value and step 0 of the
    # next rollout (the learner's convention, ppo.data.TrainBatch).
    for g in range(len(a.groups)):
        outs[g], starts[g] = a._act(params, g, keys[a.t], timing)
    a.next_out, a.next_start_carry = outs, starts


def _collect_pipelined(a: Actor, params: Any, keys: jax.Array, rec: _RolloutBuffer,
                       tail: list[Any], timing: dict[str, float],
                       stop: threading.Event | None) -> None:
    """Round robin over the groups: take the oldest group's results, infer its next step
    and send it, while the other groups' workers emulate (EnvPool's async pattern). The pool
    is idle again on return, also on a stop (starting points may change between rollouts)."""
    outs, starts = a.next_out, a.next_start_carry  # updated in place: the actor's own lists
    pool, n = a.pool, len(a.groups)
    in_flight: collections.deque[int] = collections.deque()  # groups sent, oldest first
    try:
        for g in range(n):
            if a.t == a.k:
                tail[g] = a._carries[g]
            if outs[g] is None:
                outs[g], starts[g] = a._act(params, g, keys[0], timing)
            pool.send(np.asarray(outs[g].action), a._send_ids[g])
            in_flight.append(g)
        for step in range(a.t):
            for g in range(n):
                if stop is not None and stop.is_set():
                    raise Stopped
                with m.timed(timing, m.ACTOR_ENV_STEP_S):
                    res = pool.recv()  # group g's: sends are answered in order
                in_flight.popleft()
                rec.add(step, g, outs[g], starts[g], res, slice(None))
                nxt = step + 1
                if nxt == a.t - a.k:
                    tail[g] = a._carries[g]
                # The bootstrap (nxt = T) is also step 0 of the next rollout: not sent now.
                outs[g], starts[g] = a._act(params, g, keys[nxt], timing)
                if nxt < a.t:
                    pool.send(np.asarray(outs[g].action), a._send_ids[g])
                    in_flight.append(g)
    except Stopped:
        # Take the answers still owed, so the pool is idle and the actor's state is where the
        # emulators are (the next rollout infers those groups afresh).
        while in_flight:
            g = in_flight.popleft()
            a._advance(g, outs[g], pool.recv(), slice(None))
            outs[g] = starts[g] = None
        raise
