"""A run, from the command line's request to the last checkpoint, in named phases:

1. ``plan_run``: the config this machine trains with (``jax_reset.run.resolve``'s precedence,
   the CPU overlay where no accelerator was found), the demos checked, the devices placed and
   the sizes derived (``Plan``);
2. ``open``: the environment pool (its workers start while the network builds), the run's
   checkpoints, the stop flag;
3. ``build_trainer``: the network and the run state at update 0, restored from a checkpoint on
   a resume (newer checkpoints set aside), then the ``Trainer``: the one place a trainer is
   built (``bench train`` and the tests build theirs here too);
4. ``train``: the metrics writer and progress display opened, the trainer run until done or
   stopped, the closing line printed.

Only process 0 prints (``say``). ``python -m jax_reset.train`` calls ``run`` once it has
checked the request and taken the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jax_reset import curriculum as cur
from jax_reset import demos
from jax_reset import metrics as m
from jax_reset.config import Config
from jax_reset.curriculum import stall as stall_lib
from jax_reset.envs import AtariPool
from jax_reset.envs.demo_obs import demo_mean_observation
from jax_reset.evaluation.envs import play_mean_observation
from jax_reset.evaluation.errors import EmulatorCrash
from jax_reset.networks import set_input_mean
from jax_reset.parallel import placement as placement_lib
from jax_reset.parallel.mesh import make_data_mesh
from jax_reset.parallel.process_group import ProcessGroup
from jax_reset.parallel.sizes import SizeError, Sizes, derive
from jax_reset.ppo.train_state import TRAIN_STATE_VERSION, create_train_state
from jax_reset.run import checkpoint as ckpt_lib
from jax_reset.run import resolve as run_resolve
from jax_reset.run import state as run_state
from jax_reset.run.checkpoint_meta import make_meta
from jax_reset.run.layout import Request, RunFailure, UsageError
from jax_reset.run.request import check_demo_paths, check_profile
from jax_reset.training import wandb_log
from jax_reset.training.stop import EarlyInterrupt, StopFlag
from jax_reset.training.trainer import RunOutputs, Trainer


def detect_platform() -> tuple[bool, str]:
    """(on_cpu, description): whether no accelerator was found, and what was."""
    devices = jax.local_devices()
    kinds = sorted({d.device_kind for d in devices})
    on_cpu = jax.default_backend() == "cpu"
    return on_cpu, f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()})"


def say(line: str) -> None:
    """Prints ``line`` on process 0 only (every process runs the same set-up)."""
    if jax.process_index() == 0:
        print(line, flush=True)


# ---- 1. resolve ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run trains with on this machine: the config, the demos' headers, the devices and
    the sizes."""

    config: Config
    on_cpu: bool  # the CPU overlay applies (no accelerator, no --full-size)
    notes: list[str]  # what the config resolution has to say
    headers: list[dict[str, Any]]  # each demo's header, in ``demo.paths`` order
    group: ProcessGroup
    sizes: Sizes


def make_group(config: Config, placement: str | None = None) -> ProcessGroup:
    """The job's processes over the devices ``placement`` names (default: the config's
    ``train.placement``; "first": the first local device alone, shared). Raises ``UsageError``
    for sizes that do not divide or a placement that does not fit."""
    try:
        if placement == "first":
            place = placement_lib.shared(make_data_mesh(jax.local_devices()[:1]))
        else:
            place = placement_lib.resolve_placement(  # "auto" splits only where it divides
                placement or config.train.placement,
                fits=lambda learners: config.train.num_envs % (
                    jax.process_count() * learners * config.ppo.minibatches) == 0)
        mesh = place.learning_mesh  # the learner's devices, of every process
        sizes = derive(config, jax.process_count(), mesh.devices.size, jax.process_index(),
                       acting_devices=len(place.acting))
    except (SizeError, placement_lib.PlacementError, ValueError) as err:
        raise UsageError(str(err)) from None
    return ProcessGroup(mesh, sizes, place)


def plan_run(req: Request, full_size: bool, profile: tuple[int, int] | None) -> Plan:
    """Phase 1: the config (``run.resolve.resolve_config``), the demos and the profile window
    checked, the devices placed and the sizes derived."""
    on_cpu = not full_size and detect_platform()[0]
    config, notes = run_resolve.resolve_config(req, on_cpu)
    headers = check_demo_paths(config)
    check_profile(profile, config.train.total_updates)
    group = make_group(config)
    if group.is_main:  # the one process that logs
        wandb_log.check(config)
    return Plan(config, on_cpu, notes, headers, group, group.sizes)


def describe(plan: Plan) -> None:
    """The run's opening lines: devices, placement, notes, demos (process 0), and each
    process's block of environments."""
    sizes, group = plan.sizes, plan.group
    say(f"devices: {detect_platform()[1]}" + (
        f" per process; {sizes.num_processes} processes, {sizes.num_devices} devices in all"
        if group.multi else ""))
    if not group.placement.shared:
        say(group.placement.describe())
    for note in plan.notes:
        say(note)
    paths = plan.config.demo.paths
    for d, (path, h) in enumerate(zip(paths, plan.headers, strict=True)):
        which = f"demo {d} of {len(paths)}: " if len(paths) > 1 else "demo "
        say(f"game: {h['game']}, {which}{path} ({h['num_frames']:,} frames, score "
            f"{h['score']:g})")
    if group.multi:
        print(f"process {group.index} of {sizes.num_processes}: environments {sizes.env_lo} to "
              f"{sizes.env_hi - 1} of {sizes.num_envs_global}", flush=True)


# ---- 2. open ---------------------------------------------------------------------------------


def open_pool(config: Config, sizes: Sizes, wait: bool = True) -> AtariPool:
    """This process's block of the job's environments in demo mode, each on its demo
    (contiguous blocks of the job's environments per demo). ``wait=False``: the workers start
    (and replay the demos) while the caller goes on; the first pool call finishes the start."""
    env_demos = cur.env_demos(sizes.num_envs_global, len(config.demo.paths))
    return AtariPool(None, sizes.num_envs_local, config.train.workers, config=config.env,
                     demo=config.demo, seed=config.train.seed + sizes.env_lo,
                     env_demos=env_demos[sizes.env_lo:sizes.env_hi], wait=wait)


def offset_from_random_play(game: str, config: Config, tries: int = 3) -> np.ndarray:
    """``play_mean_observation`` for ``network.input_norm = "play_mean"``, with the run's seed;
    if the emulator crashes in that random play (ALE's known segmentation fault in some games,
    caught as ``EmulatorCrash`` since EnvPool runs in a child), it plays again with the next
    seed, up to ``tries`` times, and says so: a crash costs a second of start-up, not the run.
    Any seed's mean is the same background to within a fraction of a grey level."""
    seeds = range(config.train.seed, config.train.seed + tries)
    crash: EmulatorCrash | None = None
    for seed in seeds:
        if crash is not None:
            say(f"input offset: {crash}; random play again with seed {seed}")
        try:
            return play_mean_observation(game, config.env, seed=seed)
        except EmulatorCrash as err:
            crash = err
    raise RunFailure(f"the input offset's random play crashed {tries} times (seeds {seeds[0]} "
                     f"to {seeds[-1]}); the last: {crash}")


# ---- 3. build_trainer ------------------------------------------------------------------------


def build_trainer(config: Config, group: ProcessGroup, pool: Any, outputs: RunOutputs,
                  restore: Callable[[run_state.RunState, dict[str, Any]],
                                    run_state.RunState] | None = None) -> Trainer:
    """A trainer over ``pool``: the network and the run state at update 0 (the input offset
    set from the demos when ``network.input_norm = "demo_mean"``), or what ``restore(state,
    meta)`` makes of it (a resume: it restores into the state's shapes and shardings, and the
    input offset comes with the checkpoint). ``outputs.meta`` is filled in here."""
    sizes = group.sizes
    network, train_state = create_train_state(config.network, config.ppo,
                                              config.env.obs_shape, pool.num_actions,
                                              jax.random.PRNGKey(config.train.seed))
    if config.network.input_norm == "demo_mean" and restore is None:
        train_state = train_state.replace(params=input_mean_params(config,
                                                                   train_state.params))
    elif config.network.input_norm == "play_mean" and restore is None:
        t0 = time.perf_counter()
        mean = offset_from_random_play(pool.game, config)
        say(f"input offset: the mean observation of random play from the game's start "
            f"({mean.shape[0]}x{mean.shape[1]}x{mean.shape[2]}, no demo) in "
            f"{time.perf_counter() - t0:.1f} s")
        train_state = train_state.replace(params=set_input_mean(train_state.params, mean))
    meta = make_meta(config, train_state.params, game=pool.game,
                     num_actions=int(pool.num_actions), num_frames=pool.demo_num_frames,
                     demos=[{"index": d, "path": p, "num_frames": t}
                            for d, (p, t) in enumerate(zip(config.demo.paths,
                                                           pool.demos_num_frames,
                                                           strict=True))],
                     **{run_state.STATE_VERSION_KEY: TRAIN_STATE_VERSION})
    state = run_state.RunState(
        train_state=group.replicate(train_state),  # Orbax restores into these shardings
        update=0, agent_steps=0, frames=0,
        curriculum=cur.init_curricula(sizes.num_envs_global, pool.demos_num_frames,
                                      config.curriculum), config=config)
    if restore is not None:
        state = restore(state, meta)
    return Trainer(state.config, sizes, group, pool, network, state,
                   dataclasses.replace(outputs, meta=meta))


def input_mean_params(config: Config, params: Any) -> Any:
    """``params`` with the torso's input offset set to the demo's mean observation
    (``network.input_norm = "demo_mean"``; several demos: the mean over all their frames, each
    demo weighted by its length): the same on every process (the same demos)."""
    t0 = time.perf_counter()
    means, weights = [], []
    for path in config.demo.paths:
        demo = demos.load(path, rom_path=config.demo.rom_path, check=False)
        means.append(demo_mean_observation(demo, config.env, config.demo.rom_path))
        weights.append(float(demo.num_frames))
    mean = means[0] if len(means) == 1 else np.average(
        np.stack(means), axis=0, weights=weights).astype(means[0].dtype)
    whose = "the demos'" if len(means) > 1 else "the demo's"
    say(f"input offset: {whose} mean observation ({mean.shape[0]}x{mean.shape[1]}x"
        f"{mean.shape[2]}) in {time.perf_counter() - t0:.1f} s")
    return set_input_mean(params, mean)


def _resume(req: Request, plan: Plan, checkpoints: ckpt_lib.Checkpoints,
            ) -> Callable[[run_state.RunState, dict[str, Any]], run_state.RunState]:
    """``build_trainer``'s ``restore`` for a resume: the newest checkpoint that restores (or
    ``--checkpoint N``), the newer ones set aside before anything is saved."""
    def restore(target: run_state.RunState, meta: dict[str, Any]) -> run_state.RunState:
        state = run_state.restore_state(
            checkpoints, target, meta, where=str(req.run_dir), step=req.checkpoint,
            reconfigure=lambda saved: run_resolve.resume_config(
                saved.get("config", {}), req, on_cpu=plan.on_cpu)[0],
            report=say)
        # Newer checkpoints (a --checkpoint N, or ones that did not restore) are moved aside
        # before anything is saved: the run continues from this one.
        moved = checkpoints.set_aside(state.update)
        plan.group.barrier("jax_reset.train: newer checkpoints set aside")
        checkpoints.reload()
        if moved:
            say(f"moved the newer checkpoints to {moved[0].parent} (kept): "
                f"{', '.join(p.name for p in moved)}")
        lowered = ""
        if state.stall.scale != 1.0:  # a stalled run keeps its lowered values
            ppo = state.config.ppo
            lr, ent = stall_lib.hyperparams(ppo.learning_rate, ppo.ent_coef, state.stall)
            lowered = (f" (stall scale {state.stall.scale:g}: learning rate {lr:.3g}, "
                       f"ent_coef {ent:.3g})")
        say(f"resumed from update {state.update} at starting point "
            f"{state.curriculum.max_starting_point}{lowered}")
        return state

    return restore


# ---- 4. train --------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging(req: Request, config: Config, trainer_state: run_state.RunState,
             demo_num_frames: int, is_main: bool,
             ) -> Iterator[tuple[m.MetricsWriter | None, m.ProgressDisplay | None]]:
    """Process 0's metrics writer (with W&B when ``[wandb]`` asks) and progress display
    (None, None on the others)."""
    if not is_main:
        yield None, None
        return
    total_updates, progress = config.train.total_updates, config.train.progress
    sink = wandb_log.start(config, req.run_dir)
    writer = m.MetricsWriter(req.run_dir,
                             resume_update=trainer_state.update if req.resume else None,
                             sinks=(sink,) if sink is not None else ())
    try:
        if writer.set_aside_lines:
            say(f"moved the {writer.set_aside_lines} metrics lines after update "
                f"{trainer_state.update} to {req.run_dir / m.SET_ASIDE_NAME} (kept)")
        display = m.ProgressDisplay(total_updates, demo_num_frames,
                                    start_update=trainer_state.update,
                                    enabled=None if progress else False,
                                    start_point=trainer_state.curriculum.max_starting_point,
                                    may_stop_early=math.isfinite(config.eval.stop_score),
                                    curriculum=config.plays_the_demo)
        with display:
            yield writer, display
    finally:
        writer.close()


def run(req: Request, full_size: bool = False, profile: tuple[int, int] | None = None) -> int:
    """Trains as ``req`` asks; 0 when done or stopped by a signal (a checkpoint was written).
    Raises ``UsageError`` (and the config's, demo's and pool's errors) for the caller to map
    to exit codes."""
    plan = plan_run(req, full_size, profile)
    EarlyInterrupt.check()  # a Ctrl-C while JAX started: nothing written yet
    group = plan.group
    group.barrier("jax_reset.train: run directory checked")  # before any process writes to it
    describe(plan)
    train = plan.config.train
    with StopFlag() as stop, open_pool(plan.config, plan.sizes, wait=False) as pool, \
            ckpt_lib.open_checkpoints(req.run_dir, train.keep_last) as checkpoints:
        resuming = req.resume and checkpoints.latest_step() is not None
        trainer = build_trainer(plan.config, group, pool,
                                RunOutputs(req.run_dir, checkpoints),
                                restore=_resume(req, plan, checkpoints) if resuming else None)
        config, state = trainer.config, trainer.state
        check_profile(profile, config.train.total_updates, state.update)
        if group.is_main:
            run_resolve.write_config(config, req.run_dir)
        with _logging(req, config, state, pool.demo_num_frames,
                      group.is_main) as (writer, display):
            trainer.outputs = dataclasses.replace(trainer.outputs, writer=writer,
                                                  display=display)
            trainer.run(stop.event, profile if group.is_main else None)
    s = trainer.state
    if trainer.target_reached:
        say(f"done: {s.update} updates, the score from the game's start reached "
            f"eval.stop_score {config.eval.stop_score:g}")
    elif stop.requested or s.update < config.train.total_updates:
        say(f"stopped by {stop.signal_name or 'another process'} after update {s.update}: "
            f"checkpoint saved; continue with --resume --run-dir {req.run_dir}")
    else:
        say(f"done: {s.update} updates, starting point {s.curriculum.max_starting_point}")
    return 0
