"""A run directory: its layout, the run's config (resolved for a new run or a resume), and the
restorable run state, saved and loaded in this one place.

    RUN_DIR/config.json      the resolved config, rewritten at every (re)start
    RUN_DIR/train.lock       held by the one trainer of the directory (``jax_reset.lock``)
    RUN_DIR/checkpoints/     Orbax: the run state every N updates (the last K plus the best)
    RUN_DIR/checkpoints-set-aside/   newer checkpoints moved away by a resume from an older one
    RUN_DIR/metrics.jsonl    RUN_DIR/tb/    metrics (``jax_reset.metrics``)
    RUN_DIR/processes/       per-process agreement digests (several processes only)
    RUN_DIR/profile/         a ``jax.profiler`` trace (``--profile-steps``)

On a resume the config comes from, in order of precedence: the command line's overrides, then
the runtime values the trainer itself changed (``RunState.runtime``, stored in each checkpoint;
none yet), then the newest checkpoint's config (``config.json`` when there is no checkpoint, or
the ``--config`` file when one is given). So an override given at a resume is saved with the
next checkpoint and persists to the next plain ``--resume``.

A resume continues from the newest checkpoint that restores (one that does not is named in one
line, and the next older is tried), or from ``--checkpoint N``; checkpoints newer than the one
it continues from are moved to ``checkpoints-set-aside/`` (kept) before anything is saved.

``TrainConfig``, the ``[train]`` section, lives here: the run's sizes and schedule.
``jax_reset.config`` composes it, so this module imports ``config`` (and JAX) only inside the
functions that need them: a bad command line fails before JAX is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_reset import stall as stall_lib

if TYPE_CHECKING:
    from jax_reset.checkpoint import Checkpoints
    from jax_reset.config import Config
    from jax_reset.curriculum import CurriculumState

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
PROCESSES_DIR = "processes"
PROFILE_DIR = "profile"
RUNTIME_KEY = "runtime"  # the meta item's dotted config values the trainer changed at run time
STATE_VERSION_KEY = "train_state_version"  # the meta item's ppo.update.TRAIN_STATE_VERSION
STALL_ITEM = "stall"  # the checkpoint's JSON item of the stall controller (stall.to_json)
COUNTERS = ("update", "agent_steps", "frames")  # the checkpoint's host counters, int64


class UsageError(ValueError):
    """Bad input found before anything is written; the message is one line."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run: sizes, schedule of checkpoints and logs."""

    # Environments in total (all processes; ``jax_reset.sizes.derive`` splits them) and CPU
    # worker processes on each host.
    num_envs: int = 32
    workers: int = 2
    # PPO updates to run in total (a resumed run continues to this number).
    total_updates: int = 1000
    seed: int = 0
    # Collect the next rollout with the previous parameters while the learner updates
    # (Cleanba-style, one policy version behind; the stored log-probabilities keep the PPO
    # ratio right). False: exact on-policy, acting and learning alternate.
    overlap: bool = True
    # Save a checkpoint every this many updates (and always on SIGTERM/SIGINT and at the end).
    checkpoint_every: int = 50
    # Keep the last K checkpoints, plus the best one (lowest maximum starting point).
    keep_last: int = 3
    # Write metrics every this many updates.
    log_every: int = 1
    # Live terminal display (turned off automatically when stdout is not a terminal).
    progress: bool = True
    # Agent steps of the demo before each episode's start that warm the recurrent state up
    # (a scan over stored demo observations; no environment steps). 0: start from zeros.
    warmup_steps: int = 128

    def __post_init__(self) -> None:
        for ok, message in (
                (self.num_envs >= 1, "num_envs must be at least 1"),
                (self.workers >= 1, "workers must be at least 1"),
                (self.total_updates >= 1, "total_updates must be at least 1"),
                (self.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
                (self.keep_last >= 1, "keep_last must be at least 1"),
                (self.log_every >= 1, "log_every must be at least 1"),
                (self.warmup_steps >= 0, "warmup_steps must be non-negative"),
                (self.workers <= self.num_envs,
                 f"workers ({self.workers}) must not exceed num_envs ({self.num_envs})")):
            if not ok:
                raise ValueError(message)


# --------------------------------------------------------------------------------------------
# The config of a new run or a resume.


@dataclasses.dataclass(frozen=True)
class Request:
    """What the command line asks of the run directory."""

    run_dir: Path
    resume: bool
    config_path: str | None  # a config file (required for a new run)
    overrides: tuple[str, ...] = ()
    checkpoint: int | None = None  # --checkpoint N: resume from N (default: the newest)


def check_request(req: Request) -> None:
    """Refuses what cannot run, before JAX starts or anything is written. A resume is checked
    against ``config.json`` here, and against the newest checkpoint by ``resume_config`` once
    JAX is up."""
    from jax_reset import config as config_lib

    saved_path = req.run_dir / CONFIG_NAME
    if req.checkpoint is not None and not req.resume:
        raise UsageError("--checkpoint N continues a run: it needs --resume")
    if req.resume:
        if not saved_path.is_file():
            raise UsageError(f"{req.run_dir}: no run to resume (no {CONFIG_NAME})")
        if req.config_path:  # its [on_cpu] table depends on the platform: checked with JAX
            config_lib.load(req.config_path, req.overrides)
        else:
            resume_config(config_lib.read_file(saved_path), req)
        return
    if not req.config_path:
        raise UsageError("--config is required for a new run")
    # A run stopped before its first checkpoint and before config.json holds no run yet (an
    # empty checkpoints/ folder, a lock file): a new start there is fine.
    if saved_path.exists() or has_checkpoints(req.run_dir):
        raise UsageError(f"{req.run_dir} already holds a run: pass --resume, or choose a new "
                         "--run-dir")
    config_lib.load(req.config_path, req.overrides)  # bad input fails before JAX starts


def has_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoints/`` holds a complete checkpoint (a step folder)."""
    folder = run_dir / CHECKPOINT_DIR
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def new_config(req: Request, on_cpu: bool) -> Config:
    """A new run's config: the file, its ``[on_cpu]`` table when asked, the overrides."""
    from jax_reset import config as config_lib

    return config_lib.load(req.config_path, req.overrides, on_cpu=on_cpu)


def cpu_notes(req: Request, on_cpu: bool) -> list[str]:
    from jax_reset import config as config_lib

    if on_cpu and req.config_path and (
            config_lib.CPU_TABLE in config_lib.read_file(req.config_path)):
        return ["no GPU found: using the CPU-sized settings ([on_cpu]) of "
                f"{req.config_path}; --full-size keeps the full-size ones"]
    return []


def resume_config(saved: Mapping[str, Any], req: Request,
                  runtime: Mapping[str, Any] | None = None, on_cpu: bool = False,
                  ) -> tuple[Config, list[str]]:
    """The config a resume trains with, and the notes to print.

    ``saved``: the config the run last saved (the newest checkpoint's, else ``config.json``);
    ``runtime``: dotted values the trainer changed at run time (the checkpoint's). Precedence:
    the command line's overrides, then ``runtime``, then ``saved``. A ``--config`` file given
    on a resume replaces ``saved`` as the base (with its ``[on_cpu]`` table when ``on_cpu``).
    Refuses changes of ``config.RESUME_FROZEN`` keys (``UsageError``).
    """
    from jax_reset import config as config_lib

    if req.config_path:
        base, where = config_lib.read_file(req.config_path), str(req.config_path)
        if on_cpu:
            base = config_lib.merge(base, base.get(config_lib.CPU_TABLE, {}))
    else:
        base, where = dict(saved), str(req.run_dir / CONFIG_NAME)
    base = {k: v for k, v in base.items() if k != config_lib.CPU_TABLE}
    try:
        data = config_lib.apply_overrides(config_lib.apply_overrides(base, runtime or {}),
                                          req.overrides)
        config = config_lib.from_dict(config_lib.Config, data)
    except config_lib.ConfigError as err:
        raise config_lib.ConfigError(f"{where}: {err}") from None
    changed = config_lib.diff(_with_defaults(saved), config_lib.to_dict(config))
    frozen = [k for k in changed if any(k == f or k.startswith(f + ".")
                                        for f in config_lib.RESUME_FROZEN)]
    if frozen:
        raise UsageError(f"{req.run_dir}: a resume cannot change {', '.join(frozen[:4])}; start "
                         "a new run directory for that")
    notes = [f"resuming with changed settings: {', '.join(changed)}"] if changed else []
    return config, notes


def _with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config with the keys added to the schema since at their defaults (so a section
    added later, like ``[stall]``, is not a changed setting); as saved if it no longer reads."""
    from jax_reset import config as config_lib

    try:
        return config_lib.to_dict(config_lib.from_dict(config_lib.Config, saved))
    except config_lib.ConfigError:
        return dict(saved)


def write_config(config: Config, run_dir: Path) -> None:
    """``config.json``: written at every (re)start (the Makefile and a restart without
    checkpoints read it), atomically."""
    from jax_reset import config as config_lib

    config_lib.save_json(config, run_dir / CONFIG_NAME)


# --------------------------------------------------------------------------------------------
# The run state.


@dataclasses.dataclass(frozen=True)
class RunState:
    """Everything a resume continues from: the learner's state with the host counters, the
    curriculum and the stall controller, and the resolved config (with the values the trainer
    changed at run time)."""

    train_state: Any  # ppo.update.TrainState (parameters, optimizer state, RNG, hyperparams)
    update: int  # updates done
    agent_steps: int  # agent steps of every environment of the job
    frames: int  # emulator frames stepped
    curriculum: CurriculumState
    config: Config
    runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The stall controller; None when built: ``stall.init`` at the curriculum's maximum (a new
    # run). ``train_state``'s hyperparameters are the config's times its scale.
    stall: stall_lib.StallState | None = None

    def __post_init__(self) -> None:
        if self.stall is None:
            object.__setattr__(self, "stall",
                               stall_lib.init(self.curriculum.max_starting_point))


def open_checkpoints(run_dir: Path, keep_last: int) -> Checkpoints:
    from jax_reset.checkpoint import Checkpoints

    return Checkpoints(run_dir / CHECKPOINT_DIR, keep_last=keep_last)


def saved_config(checkpoints: Checkpoints, step: int | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(config, runtime values) of checkpoint ``step``, by default of the newest one whose
    ``meta`` reads (``restore_state`` names any it passes over); None without a checkpoint."""
    from jax_reset.checkpoint import CheckpointError, CorruptCheckpoint

    steps = [step] if step is not None else checkpoints.steps()[::-1]
    for i, s in enumerate(steps):
        try:
            meta = checkpoints.read_meta(s)
        except CorruptCheckpoint:
            if step is not None or i == len(steps) - 1:
                raise UsageError(f"{checkpoints.directory}: no checkpoint whose config reads "
                                 f"(tried {', '.join(map(str, steps))})") from None
            continue
        except CheckpointError as err:
            raise UsageError(str(err)) from None
        return dict(meta.get("config", {})), dict(meta.get(RUNTIME_KEY, {}))
    return None


def save_state(checkpoints: Checkpoints, state: RunState, meta: Mapping[str, Any]) -> bool:
    """Saves ``state`` as checkpoint ``state.update`` (main thread; every process calls it)."""
    from jax_reset import config as config_lib
    from jax_reset import curriculum as cur

    counters = {k: np.asarray(getattr(state, k), np.int64) for k in COUNTERS}
    meta = {**meta, "config": config_lib.to_dict(state.config),
            RUNTIME_KEY: dict(state.runtime)}
    return checkpoints.save(state.update, {"train_state": state.train_state,
                                           "counters": counters},
                            cur.to_json(state.curriculum), meta,
                            {cur.MAX_STARTING_POINT: state.curriculum.max_starting_point},
                            extra={STALL_ITEM: stall_lib.to_json(state.stall)})


def restore_state(checkpoints: Checkpoints, target: RunState, meta: Mapping[str, Any],
                  where: str, step: int | None = None,
                  reconfigure: Callable[[Mapping[str, Any]], Config] | None = None,
                  report: Callable[[str], None] = print) -> tuple[RunState, list[str]]:
    """Checkpoint ``step`` as a ``RunState`` whose config is ``target.config``, and the
    settings that changed since it; ``target.train_state`` gives the arrays' shapes and
    shardings. The learning rate and entropy coefficient in force are the config's (its
    precedence already chose between the command line, the runtime values and the checkpoint)
    times the restored stall scale, so a stalled run keeps its lowered values. The stall state
    restarts (``stall.init``) for a checkpoint written before it existed, and when the config
    turns the stall handling off (the configured values then hold).

    Without ``step``: the newest checkpoint that restores; each one that does not (truncated or
    garbled files) is named by ``report`` in one line and the next older is tried. When that
    is not the newest, ``reconfigure(its meta)`` gives the config instead of ``target.config``
    (the newest's config was resolved before). Raises ``UsageError`` for a checkpoint of
    another network or environment, an explicit ``step`` that does not restore, or none that
    restores."""
    from jax_reset import checkpoint as ckpt_lib

    steps = [step] if step is not None else checkpoints.steps()[::-1]
    for i, s in enumerate(steps):
        try:
            saved_meta, changed, restored, cur_json, stall_json = _restore_step(
                checkpoints, target, meta, where, s)
        except ckpt_lib.CorruptCheckpoint as err:
            if step is not None:
                raise UsageError(f"{err}; choose another with --checkpoint") from None
            if i == len(steps) - 1:
                raise UsageError(f"{where}: no checkpoint restores (tried "
                                 f"{', '.join(map(str, steps))}; the last: {err})") from None
            report(f"{err}: trying checkpoint {steps[i + 1]}")
            continue
        if i > 0 and reconfigure is not None:
            target = dataclasses.replace(target, config=reconfigure(saved_meta))
        return _run_state(target, saved_meta, restored, cur_json, stall_json, s,
                          where), changed
    raise UsageError(f"{where}: no checkpoint to resume from")


def _restore_step(checkpoints: Checkpoints, target: RunState, meta: Mapping[str, Any],
                  where: str, step: int,
                  ) -> tuple[dict[str, Any], list[str], dict[str, Any], dict[str, Any],
                             dict[str, Any] | None]:
    """(saved meta, changed settings, restored {"train_state", "counters"}, curriculum JSON,
    stall JSON or None) of one step; ``CorruptCheckpoint`` passes through, other refusals
    become ``UsageError``."""
    from jax_reset import checkpoint as ckpt_lib
    from jax_reset import config as config_lib

    try:
        saved_meta = checkpoints.read_meta(step)
        changed = ckpt_lib.check_compatible(saved_meta, meta, config_lib.RESUME_FROZEN,
                                            where=where)
        got, restored, cur_json = _restore_train_state(checkpoints, target.train_state,
                                                       saved_meta.get(STATE_VERSION_KEY),
                                                       target.config.ppo, step)
        stall_json = checkpoints.read_item(STALL_ITEM, step)
    except ckpt_lib.CorruptCheckpoint:
        raise
    except ckpt_lib.CheckpointError as err:
        raise UsageError(str(err)) from None
    assert got == step, (got, step)
    return saved_meta, changed, restored, cur_json, stall_json


def _run_state(target: RunState, saved_meta: Mapping[str, Any], restored: Mapping[str, Any],
               cur_json: Mapping[str, Any], stall_json: Mapping[str, Any] | None, step: int,
               where: str) -> RunState:
    from jax_reset import curriculum as cur
    from jax_reset.ppo import update as ppo_update

    got = {k: int(restored["counters"][k]) for k in COUNTERS}
    assert got["update"] == step, (got, step)
    curriculum = cur.from_json(cur_json)
    stall = stall_lib.init(curriculum.max_starting_point)
    if stall_json is not None and target.config.stall.enabled:
        try:
            stall = stall_lib.from_json(stall_json)
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{where}: checkpoint {step}: {err}") from None
    ppo = target.config.ppo
    lr, ent = stall_lib.hyperparams(ppo.learning_rate, ppo.ent_coef, stall)
    train_state = ppo_update.with_hyperparams(restored["train_state"], lr, ent)
    return dataclasses.replace(target, train_state=train_state, curriculum=curriculum,
                               stall=stall, runtime=dict(saved_meta.get(RUNTIME_KEY, {})),
                               **got)


def _restore_train_state(checkpoints: Checkpoints, train_state: Any, version: int | None,
                         ppo: Any, step: int | None = None,
                         ) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(step, {"train_state", "counters"}, curriculum JSON) of checkpoint ``step`` (default: the
    newest), whatever the ``TrainState`` layout it was written with
    (``ppo.update.TRAIN_STATE_VERSION``; one that does not say is tried as today's, then as
    version 1)."""
    from jax_reset.checkpoint import CheckpointError, CorruptCheckpoint
    from jax_reset.ppo import update as ppo_update

    counters = {k: np.asarray(0, np.int64) for k in COUNTERS}
    if version in (None, ppo_update.TRAIN_STATE_VERSION):
        try:
            step, restored, cur_json, _ = checkpoints.restore(
                {"train_state": train_state, "counters": counters}, step)
            return step, restored, cur_json
        except CorruptCheckpoint:
            raise  # damaged files, not another layout
        except CheckpointError:
            if version is not None:
                raise
    step, restored, cur_json, _ = checkpoints.restore(
        {"train_state": ppo_update.v1_target(train_state), "counters": counters}, step)
    restored["train_state"] = ppo_update.lift_train_state(restored["train_state"], ppo)
    return step, restored, cur_json


def load_params(run_dir: Path, checkpoint: str = "latest",
                report: Callable[[str], None] | None = None,
                ) -> tuple[int, dict[str, Any], Config, Any]:
    """(step, meta, config, parameters) of a checkpoint ("latest", "best" or an update number):
    what evaluation needs, from the run directory alone (read only: nothing is written).
    "latest" is the newest that restores; each newer one that does not is named by ``report``
    (default: stderr) in one line. Raises ``UsageError`` (one line)."""
    import sys

    from jax_reset import checkpoint as ckpt_lib

    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        raise UsageError(f"{run_dir}: not a run directory (no {CHECKPOINT_DIR}/ folder)")
    if report is None:
        def report(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    checkpoints = ckpt_lib.Checkpoints(folder, read_only=True)
    try:
        if checkpoint in ("latest", "best"):
            step = (checkpoints.latest_step() if checkpoint == "latest"
                    else checkpoints.best_step())
        else:
            try:
                step = int(checkpoint)
            except ValueError:
                raise UsageError(f"--checkpoint must be latest, best or an update number, "
                                 f"not {checkpoint!r}") from None
        if step is None:
            raise UsageError(f"{run_dir}: no checkpoint saved yet")
        if checkpoint != "latest":
            try:
                return _load_params_at(checkpoints, run_dir, step)
            except ckpt_lib.CorruptCheckpoint as err:
                raise UsageError(str(err)) from None
        steps = checkpoints.steps()[::-1]
        for i, s in enumerate(steps):
            try:
                return _load_params_at(checkpoints, run_dir, s)
            except ckpt_lib.CorruptCheckpoint as err:
                if i == len(steps) - 1:
                    raise UsageError(f"{run_dir}: no checkpoint restores (tried "
                                     f"{', '.join(map(str, steps))}; the last: {err})") from None
                report(f"{err}: trying checkpoint {steps[i + 1]}")
        raise UsageError(f"{run_dir}: no checkpoint saved yet")
    finally:
        checkpoints.close()


def _load_params_at(checkpoints: Checkpoints, run_dir: Path, step: int,
                    ) -> tuple[int, dict[str, Any], Config, Any]:
    """``load_params`` of one step; ``CorruptCheckpoint`` passes through."""
    import jax

    from jax_reset import checkpoint as ckpt_lib
    from jax_reset import config as config_lib
    from jax_reset.ppo.update import create_train_state

    try:
        meta = checkpoints.read_meta(step)
        config = config_lib.from_dict(config_lib.Config, meta["config"])
        _, state = create_train_state(config.network, config.ppo, config.env.obs_shape,
                                      int(meta["num_actions"]), jax.random.PRNGKey(0))
        # The whole state restores (the tree must match); only the parameters are kept.
        _, restored, _ = _restore_train_state(checkpoints, state, meta.get(STATE_VERSION_KEY),
                                              config.ppo, step)
    except ckpt_lib.CorruptCheckpoint:
        raise
    except (ckpt_lib.CheckpointError, config_lib.ConfigError, KeyError) as err:
        raise UsageError(f"{run_dir}: cannot load checkpoint {step}: {err}") from None
    return step, meta, config, restored["train_state"].params


def profile_window(spec: str | None) -> tuple[int, int] | None:
    """``--profile-steps A:B`` as (A, B); None without it."""
    if spec is None:
        return None
    try:
        a, b = (int(x) for x in spec.split(":"))
    except ValueError:
        raise UsageError(f"--profile-steps {spec!r}: expected A:B, two update numbers") from None
    if not 1 <= a <= b:
        raise UsageError(f"--profile-steps {spec!r}: need 1 <= A <= B (updates count from 1)")
    return a, b


def check_profile(window: tuple[int, int] | None, total_updates: int,
                  start_update: int = 0) -> None:
    """``--profile-steps`` must lie inside the updates this run makes, or it would trace
    nothing, silently."""
    if window is None:
        return
    spec = f"{window[0]}:{window[1]}"
    if window[1] > total_updates:
        raise UsageError(f"--profile-steps {spec}: the run ends at update {total_updates} "
                         "(train.total_updates)")
    if window[0] <= start_update:
        raise UsageError(f"--profile-steps {spec}: the run resumes after update "
                         f"{start_update}; the window must start after it")


def check_paths(config: Config) -> dict[str, Any]:
    """The demo (and the user's ROM) exist, and the demo is of ``demo.game`` when the config
    pins it: one line naming the key otherwise. Returns the demo's header."""
    from jax_reset import demos

    demo_path = Path(config.demo.demo_path)
    if not demo_path.is_file():
        raise UsageError(f"demo.demo_path: {demo_path} does not exist (convert the originals "
                         "with `python -m jax_reset.demo convert`)")
    header = demos.load(demo_path, check=False).header
    if config.demo.game is not None and header["game"] != config.demo.game:
        raise UsageError(f"demo.demo_path: {demo_path} is a demo of {header['game']}, but "
                         f"demo.game is {config.demo.game}")
    if config.demo.rom_path is not None and not Path(config.demo.rom_path).is_file():
        raise UsageError(f"demo.rom_path: {config.demo.rom_path} does not exist")
    return header
