"""The training loop: a ``Trainer`` whose steps (collect, exchange, curriculum, learn, publish,
log, save) are methods, each callable on its own (tests drive them with a real small pool).

One update, on every process alike (one process is the degenerate group, not a branch):

1. ``collect``: the next rollout from the rollout source (``jax_reset.training.actor``:
   synchronous, or an actor thread one policy version behind with ``train.overlap``);
2. ``exchange``: every process's episode records, the summed frames, the actor's metrics
   averaged, and an agreed stop (``jax_reset.parallel.process_group``);
3. ``advance_curriculum``: the 20% rule on the gathered records; moved starting points go to
   the actor (``jax_reset.curriculum``); ``handle_stall``: the stall controller's outcome of
   that decision, a lowered (or restored) learning rate and entropy coefficient
   (``jax_reset.curriculum.stall``; off by default);
4. ``learn``: the rollout behind the carried-over burn-in, this process's block of the global
   batch, one data-parallel PPO update (``jax_reset.ppo``);
5. ``publish``: the new parameters to the rollout source;
6. ``evaluate``: every ``eval.every`` updates, process 0 plays full games from the game's
   start (``jax_reset.training.evaluator``); ``log``: every ``train.log_every`` updates and
   after an evaluation, the window's means (process 0 writes them);
7. ``save``: the run state every ``train.checkpoint_every`` updates, at each evaluated update,
   at the end and on a stop
   (``jax_reset.run.state``).

Everything touching Orbax, signals and the curriculum stays on the main thread. A trainer is
built (at update 0, or restored) by ``jax_reset.training.setup.build_trainer``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_reset import curriculum as cur
from jax_reset import metrics as m
from jax_reset.curriculum import stall as stall_lib
from jax_reset.envs.demo_history import DemoHistory
from jax_reset.evaluation.errors import EmulatorCrash
from jax_reset.networks.model import init_carry
from jax_reset.parallel.process_group import Exchanged, ProcessGroup
from jax_reset.parallel.sizes import Sizes
from jax_reset.ppo.acting import make_act_fn
from jax_reset.ppo.data import assemble_batch, initial_burn_in, zeros_transition
from jax_reset.ppo.train_state import current_hyperparams, with_hyperparams
from jax_reset.ppo.update import make_update
from jax_reset.ppo.warmup import make_warmup_fn
from jax_reset.run import state as run_state
from jax_reset.run.checkpoint import Checkpoints
from jax_reset.run.layout import PROCESSES_DIR, PROFILE_DIR, VIDEOS_DIR, RunFailure
from jax_reset.training.actor import Actor, Rollout, Stopped, WarmUp
from jax_reset.training.demo_windows import DemoWindows
from jax_reset.training.evaluator import Evaluator, evaluation_due
from jax_reset.training.rollout_source import RolloutSource, make_source


def episode_metrics(records: cur.EpisodeRecords,
                    max_sp: int | tuple[int, ...]) -> dict[str, float]:
    """``env/`` means of the episodes that ended, and the success of those that started at or
    before the maximum starting point (the reference's "as_good_as_demo_start"); ``max_sp``:
    one, or each demo's (an episode is compared with its own demo's)."""
    if len(records) == 0:
        return {m.EPISODES: 0.0}
    at_sp = records.start <= (max_sp if isinstance(max_sp, int)
                              else np.asarray(max_sp, np.int64)[records.demo])
    return {
        m.EPISODES: float(len(records)),
        m.EPISODE_SCORE: float(records.score.mean()),
        m.EPISODE_FRAMES: float((records.final_frame - records.start).mean()),
        m.AS_GOOD_AS_DEMO: float(records.as_good_as_demo.mean()),
        m.SUCCESS_AT_SP: (float(records.as_good_as_demo[at_sp].mean())
                          if at_sp.any() else float("nan")),
    }


@dataclasses.dataclass
class LogWindow:
    """What the updates since the last log line add up to."""
    records: list[cur.EpisodeRecords] = dataclasses.field(default_factory=list)
    sums: dict[str, float] = dataclasses.field(default_factory=dict)  # per-update values
    agent_steps: int = 0
    t0: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, records: cur.EpisodeRecords, agent_steps: int,
            values: dict[str, float]) -> None:
        self.records.append(records)
        self.agent_steps += agent_steps
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        """Each value's mean per update, and the agent steps per second."""
        n = max(len(self.records), 1)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return {m.AGENT_STEPS_PER_S: self.agent_steps / elapsed,
                **{k: v / n for k, v in self.sums.items()}}


class TrainingDiverged(RunFailure):
    """An update's loss or gradient norm is NaN or infinite; the message is one line."""


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """Where a trainer saves and logs. ``checkpoints`` None: nothing is saved (a benchmark);
    ``meta``: the checkpoint metadata besides the config (game, network shape, ...), filled in
    by ``setup.build_trainer``; ``writer``/``display``: process 0's metrics writer and progress
    display (None: not logged)."""

    run_dir: Path
    checkpoints: Checkpoints | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    writer: Any = None  # m.MetricsWriter or anything with its ``write(update, metrics)``
    display: m.ProgressDisplay | None = None


class Trainer:
    """One process's trainer over an open pool, from a run state (new or restored); built by
    ``jax_reset.training.setup.build_trainer``.

    Args:
      config: the resolved ``jax_reset.config.Config``.
      sizes: this process's sizes (``jax_reset.parallel.sizes.derive``).
      group: the job's processes (one process: every exchange is the identity).
      pool: an open ``AtariPool`` of ``sizes.num_envs_local`` environments in demo mode.
      network: from ``ppo.update.create_train_state``.
      state: where the run stands (``run.state.RunState``).
      outputs: where it saves and logs.
    """

    def __init__(self, config: Any, sizes: Sizes, group: ProcessGroup, pool: Any, network: Any,
                 state: run_state.RunState, outputs: RunOutputs) -> None:
        self.config, self.sizes, self.group, self.outputs = config, sizes, group, outputs
        train, ppo = config.train, config.ppo
        self.update_fn = make_update(network, ppo, group.mesh)
        act_key = group.own_key(jax.random.fold_in(jax.random.PRNGKey(train.seed), 0x5EED))
        pool.set_starting_points(None, self.local_points(state.curriculum))  # before the reset
        self.histories = self._demo_histories(state.curriculum)
        place = group.placement  # inference and warm-up on the acting devices
        warmup = WarmUp(self.histories or (), place.place_warmup(make_warmup_fn(network)),
                        train.warmup_steps)
        self.actor = Actor(pool, place.place_act(make_act_fn(network)), config.network,
                           ppo.rollout_steps, ppo.burn_in_steps, act_key, warmup,
                           env_groups=train.env_groups)
        example = zeros_transition(1, sizes.num_envs_local, config.env.obs_shape,
                                   carry=self.actor.carry if self.actor.warm else None)
        self.burn_in = initial_burn_in(example, self.actor.carry, ppo.burn_in_steps)
        self.windows = self._demo_windows() if ppo.imitates else None
        # Replicated over the mesh from the start, as the update returns it: acting then
        # compiles once, not again when the first updated parameters arrive.
        self.state = dataclasses.replace(state, train_state=group.replicate(state.train_state))
        self.source: RolloutSource = make_source(
            self.actor, group.local_params(self.state.train_state.params), state.update,
            train.overlap)
        self.window = LogWindow()
        # Games from the game's start (process 0; ``[eval]``), and whether one reached
        # ``eval.stop_score``: the processes then agree to stop after the next update.
        self.evaluator = (Evaluator(config, outputs.meta["game"], outputs.meta["num_actions"])
                          if group.is_main and config.eval.every > 0 else None)
        self.target_reached = False
        # (update, mean score) of the latest evaluation: its checkpoint carries the score, which
        # makes the best checkpoint the best-playing one. Only one process plays
        # them, and choosing which checkpoints to delete is collective in Orbax: a run of
        # several processes leaves the score out (its best is then the newest at the lowest
        # starting point).
        self.evaluated: tuple[int, float] | None = None

    def _demo_histories(self, curricula: cur.Curricula) -> list[DemoHistory] | None:
        """Each demo's observations for the warm-up, in ``demo.paths`` order (None: no
        warm-up)."""
        config = self.config
        if config.train.warmup_steps <= 0 or config.network.core == "none":
            return None
        env, paths = config.demo, config.demo.paths
        histories = []
        for d, (path, curriculum) in enumerate(zip(paths, curricula.states, strict=True)):
            lo = curriculum.min_starting_point - config.env.frame_skip * (
                config.train.warmup_steps + config.env.stack_num - 1)
            history = DemoHistory(path, config.env, env.rom_path, lo=lo)
            which = f" of demo {d} ({path})" if len(paths) > 1 else ""
            print(f"demo observations for the warm-up{which}: frames {history.lo:,} to "
                  f"{history.num_frames:,} in {history.build_s:.1f} s", flush=True)
            histories.append(history)
        return histories

    def _demo_windows(self) -> DemoWindows:
        """The builder of this process's windows of the demo (``ppo.imitation_windows``)."""
        c, sizes = self.config, self.sizes
        local = c.ppo.imitation_windows // sizes.num_processes
        carry = jax.tree.map(lambda x: np.zeros((local, *x.shape[1:]), np.float32),
                             init_carry(c.network, 1))
        return DemoWindows(c.demo.paths, c.env, c.demo.rom_path, c.ppo.imitation_windows,
                           c.ppo.burn_in_steps, c.ppo.rollout_steps, carry, c.train.seed,
                           sizes.process_index, sizes.num_processes, c.ppo.imitation_span)

    def local_points(self, curriculum: cur.Curricula) -> np.ndarray:
        """This process's environments' starting points."""
        return curriculum.starting_points[self.sizes.env_lo:self.sizes.env_hi]

    # ---- the steps of one update ---------------------------------------------------------

    def collect(self, interrupt: threading.Event) -> tuple[Rollout, float]:
        """(the next rollout, seconds the learner waited for it); raises ``actor.Stopped``
        as soon as ``interrupt`` is set."""
        t0 = time.perf_counter()
        rollout = self.source.next(self.state.update, interrupt)
        return rollout, time.perf_counter() - t0

    def exchange(self, rollout: Rollout, stop_requested: bool) -> Exchanged:
        """Every process's records, the job's frames, the actor's metrics
        averaged over processes, and whether any process was asked to stop."""
        return self.group.exchange(
            rollout.records,
            sums={"frames": rollout.frames},
            means=rollout.metrics, stop=stop_requested)

    def advance_curriculum(self, records: cur.EpisodeRecords,
                           rollout_index: int) -> tuple[cur.Decision, ...]:
        """Each demo's curriculum after the job's ``records`` (its own episodes, from rollout
        ``rollout_index``); moved starting points go to the actor, applied from the first
        rollout it cannot have started yet (the next one, or the one after with an actor
        thread). Returns each demo's decision."""
        curriculum, decisions = cur.update_curricula(self.state.curriculum, records,
                                                     self.config.ppo.rollout_steps,
                                                     self.config.curriculum)
        self.state = dataclasses.replace(self.state, curriculum=curriculum)
        if any(d.decided and d.new_max != d.old_max for d in decisions):
            self.actor.set_starting_points(self.local_points(curriculum),
                                           rollout_index + 1 + self.source.lag)
        return decisions

    def handle_stall(self, decisions: tuple[cur.Decision, ...]) -> bool:
        """The stall controller after the curricula's ``decisions`` (it reacts when no demo's
        curriculum has moved: ``stall.stall_update_demos``); when its scale changes,
        the learning rate and entropy coefficient in force become the config's times the new
        scale (runtime values: no recompile) and process 0 prints one line. Returns whether
        they changed."""
        s = self.state
        st, changed = stall_lib.stall_update_demos(
            s.stall, [d.decided for d in decisions], [d.old_max for d in decisions],
            [d.new_max for d in decisions], self.config.stall)
        train_state = s.train_state
        if changed:
            ppo = self.config.ppo
            lr, ent = stall_lib.hyperparams(ppo.learning_rate, ppo.ent_coef, st)
            train_state = with_hyperparams(train_state, learning_rate=lr, ent_coef=ent)
            if self.group.is_main:
                why = "stalled" if st.scale < s.stall.scale else "moved back"
                points = ("starting point" + "s" * (len(decisions) > 1) + " "
                          + ", ".join(f"{d.new_max:,}" for d in decisions))
                print(f"update {s.update + 1}: curriculum {why} at {points}: learning rate "
                      f"{lr:.3g}, ent_coef {ent:.3g} "
                      f"(stall scale {st.scale:g})", flush=True)
        self.state = dataclasses.replace(s, stall=st, train_state=train_state)
        return changed

    def learn(self, rollout: Rollout, frames: int) -> dict[str, float]:
        """One PPO update on ``rollout`` (this process's block of the job's batch); advances
        the counters by the job's agent steps and ``frames``. Returns the update's metrics."""
        batch, self.burn_in = assemble_batch(self.burn_in, rollout.transition,
                                             rollout.bootstrap_value, rollout.tail_carry)
        demo = None
        if self.windows is not None:  # the demo's windows where the environments start now
            demo = self.group.global_demo(
                self.windows.build(self.state.update, self.state.curriculum),
                self.config.ppo.imitation_windows)
        train_state, train_metrics = self.update_fn(self.state.train_state,
                                                    self.group.global_batch(batch), demo)
        s = self.state
        metrics = jax.device_get(train_metrics)
        self._check_finite(s.update + 1, metrics)
        self.state = dataclasses.replace(
            s, train_state=train_state, update=s.update + 1, frames=s.frames + frames,
            agent_steps=s.agent_steps + self.sizes.agent_steps_per_update)
        return {**{m.UPDATE_METRICS[k]: float(v)
                   for k, v in metrics.items()},
                **{m.HYPERPARAMS[k]: v  # the values in force
                   for k, v in current_hyperparams(train_state).items()}}

    def _check_finite(self, update: int, metrics: dict[str, Any]) -> None:
        """Raises ``TrainingDiverged`` when update ``update``'s loss or gradient norm is not
        finite: its parameters (NaN once either is) are neither published nor saved, and the
        newest checkpoint stays the run's last good state. The metrics are global, so every
        process stops at the same update."""
        bad = [k for k in ("loss", "grad_norm") if not np.isfinite(float(metrics[k]))]
        if not bad:
            return
        checkpoints = self.outputs.checkpoints
        last = checkpoints.latest_step() if checkpoints is not None else None
        raise TrainingDiverged(
            f"update {update}: the {' and the '.join(k.replace('_', ' ') for k in bad)} "
            f"{'is' if len(bad) == 1 else 'are'} {float(metrics[bad[0]])} (the parameters or "
            "gradients are not finite): the run stops without saving it; last checkpoint: "
            f"{'none' if last is None else last} (--resume --checkpoint N goes back further)")

    def publish(self) -> None:
        """The new parameters to the actor (copied to the acting devices once per update when
        they are apart from the learning ones: ``jax_reset.parallel.placement``)."""
        self.source.publish(self.group.local_params(self.state.train_state.params),
                            self.state.update)

    def evaluate(self) -> dict[str, float]:
        """When update ``update`` is due (``[eval]``, process 0): full games from the game's
        start with its parameters; returns their ``eval/`` metrics ({} when not due) and writes
        every game's score to ``evaluations.jsonl``. Their seconds are left out of the log
        window's pace. A mean score at ``eval.stop_score`` with every curriculum at the start
        (or anywhere, when ``eval.stop_needs_start`` is false) sets ``target_reached``."""
        s = self.state
        if self.evaluator is None or not self.evaluator.due(s.update):
            return {}
        t0 = time.perf_counter()
        at_start = all(p == 0 for p in s.curriculum.max_starting_points)
        try:
            metrics, record = self.evaluator(
                self.group.local_params(s.train_state.params), s.update,
                {"agent_steps": s.agent_steps, "frames": s.frames,
                 "max_starting_points": [int(p) for p in s.curriculum.max_starting_points]})
        except EmulatorCrash as crash:
            # The emulator's known crash (jax_reset.evaluation.isolated) costs this
            # evaluation only: no score for this update, training goes on.
            print(f"update {s.update}: evaluation skipped: {crash}", flush=True)
            self.window.t0 += time.perf_counter() - t0
            return {}
        write = getattr(self.outputs.writer, "write_evaluation", None)
        if write is not None:
            write(record)
        if self.evaluator.video_due(s.update):
            try:
                path, video_score = self.evaluator.film(s.update,
                                                        self.outputs.run_dir / VIDEOS_DIR)
            except EmulatorCrash as crash:
                print(f"update {s.update}: film skipped: {crash}", flush=True)
            else:
                metrics[m.EVAL_VIDEO_SCORE] = video_score
                write_video = getattr(self.outputs.writer, "write_video", None)
                if write_video is not None:
                    write_video(s.update, path)
        score = metrics[m.EVAL_SCORE]
        self.evaluated = (s.update, float(score))
        if self.evaluator.reached(score, at_start):
            self.target_reached = True
            print(f"update {s.update}: {self.config.eval.protocol} score {score:g} from the "
                  f"game's start (mean of {len(record['scores'])} games) reaches eval.stop_score "
                  f"{self.config.eval.stop_score:g}: the run stops after the next update",
                  flush=True)
        self.window.t0 += time.perf_counter() - t0
        return metrics

    def log(self, update_metrics: dict[str, float], force: bool = False,
            ) -> dict[str, float] | None:
        """Every ``train.log_every`` updates, at the last and when ``force``d (an evaluation's
        update): the window's metrics, written by process 0; None between log lines."""
        s, total = self.state, self.config.train.total_updates
        if s.update % self.config.train.log_every and s.update != total and not force:
            return None
        metrics = {
            **update_metrics,
            m.UPDATE: float(s.update), m.AGENT_STEPS: float(s.agent_steps),
            m.FRAMES: float(s.frames),
            **cur.summary_all(s.curriculum), **stall_lib.summary(s.stall),
            **self._episode_metrics(cur.EpisodeRecords.concatenate(self.window.records)),
            **self.window.means(),
        }
        if self.outputs.writer is not None:
            self.outputs.writer.write(s.update, metrics)
        if self.outputs.display is not None:
            self.outputs.display.update(s.update, metrics)
        self.window = LogWindow()
        return metrics

    def _episode_metrics(self, records: cur.EpisodeRecords) -> dict[str, float]:
        """``episode_metrics`` of the window; with several demos also each demo's, under
        ``cur.demo_key``."""
        curricula = self.state.curriculum
        if curricula.num_demos == 1:
            return episode_metrics(records, curricula.max_starting_point)
        out = episode_metrics(records, curricula.max_starting_points)
        for d, sp in enumerate(curricula.max_starting_points):
            out.update({cur.demo_key(k, d): v
                        for k, v in episode_metrics(records.of_demo(d), sp).items()})
        return out

    def save(self) -> bool:
        """The run state as checkpoint ``update`` (False if that one is saved already)."""
        score = None
        if (self.evaluated is not None and self.evaluated[0] == self.state.update
                and jax.process_count() == 1):
            score = self.evaluated[1]
        return run_state.save_state(self.outputs.checkpoints, self.state, self.outputs.meta,
                                    score)

    # ---- the loop ------------------------------------------------------------------------

    def step(self, stop: threading.Event, interrupt: threading.Event) -> bool:
        """One update: False if it was stopped (no update made) or the processes agreed to stop
        after it."""
        index = self.state.update  # the rollout's number (rollout i is learned by update i + 1)
        try:
            rollout, wait_s = self.collect(interrupt)
        except Stopped:
            return False
        got = self.exchange(rollout, stop.is_set() or self.target_reached)
        decisions = self.advance_curriculum(got.records, index)
        self.handle_stall(decisions)
        # The learner's seconds, and the updates between the acting parameters and the ones
        # this update started from.
        learner = {m.LEARNER_WAIT_S: wait_s,
                   m.POLICY_LAG: float(self.state.update - rollout.policy_version)}
        with m.timed(learner, m.LEARNER_S):
            update_metrics = self.learn(rollout, int(got.sums["frames"]))
            self.publish()
        self.window.add(got.records, self.sizes.agent_steps_per_update,
                        {**got.means, **learner})
        update, train = self.state.update, self.config.train
        # An evaluated update is saved too, so the best evaluated policy is one retention can
        # keep (with evaluations off the checkpoint grid, the best scoring one was never saved).
        saves = (update % train.checkpoint_every == 0
                 or evaluation_due(self.config.eval, update, train.total_updates))
        if any(d.decided for d in decisions) or got.stop or saves or update == train.total_updates:
            # The stall state with the curriculum's: both follow from the same decisions.
            self.group.check_agreement(update, self.state.train_state.params,
                                       {**cur.curricula_to_json(self.state.curriculum),
                                        "stall": stall_lib.to_json(self.state.stall)},
                                       self.outputs.run_dir / PROCESSES_DIR)
        eval_metrics = self.evaluate()
        self.log({**update_metrics, **eval_metrics}, force=bool(eval_metrics))
        if saves:
            self.save()
        return not got.stop

    def run(self, stop: threading.Event, profile: tuple[int, int] | None = None) -> None:
        """Updates until ``train.total_updates`` or a stop, then saves (main thread only).
        ``stop``: a stop request (SIGTERM/SIGINT); ``profile``: updates A..B to trace."""
        interrupt = self.group.interrupt_event(stop)
        profiling = False
        self.source.start()
        try:
            while self.state.update < self.config.train.total_updates and not interrupt.is_set():
                if profile and self.state.update + 1 == profile[0] and not profiling:
                    jax.profiler.start_trace(str(self.outputs.run_dir / PROFILE_DIR))
                    profiling = True
                going = self.step(stop, interrupt)
                if profiling and self.state.update >= profile[1]:
                    jax.profiler.stop_trace()
                    profiling = False
                if not going:
                    break
            self.source.close()
            # At the end, or on a stop: the state after the last finished update.
            self.save()
            self.outputs.checkpoints.wait()
        finally:
            if profiling:
                jax.profiler.stop_trace()
            self.source.close()
