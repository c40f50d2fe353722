"""The restorable state of a run (``RunState``) and its round trip through the run's
checkpoints: ``save_state`` writes it (train state with the host counters, curriculum, stall
controller, resolved config), ``restore_state`` reads the newest checkpoint that restores (or a
chosen one) back into it, falling back over damaged ones, ``saved_config`` reads a checkpoint's
config for the resume's config resolution, and ``load_params`` gives evaluation a checkpoint's
parameters from the run directory alone.

Every "the newest checkpoint that reads, else the next older" walk is ``_newest_readable``.
This module imports JAX and Orbax: ``python -m jax_reset.train`` reaches it only after its
checks (``jax_reset.run.request``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset import curriculum as cur
from jax_reset.curriculum import stall as stall_lib
from jax_reset.ppo import train_state as ppo_state
from jax_reset.run import policy as policy_lib
from jax_reset.run.checkpoint import Checkpoints
from jax_reset.run.checkpoint_meta import CheckpointError, CorruptCheckpoint, check_compatible
from jax_reset.run.layout import CHECKPOINT_DIR, UsageError

STATE_VERSION_KEY = "train_state_version"  # the meta item's ppo.update.TRAIN_STATE_VERSION
STALL_ITEM = "stall"  # the checkpoint's JSON item of the stall controller (stall.to_json)
COUNTERS = ("update", "agent_steps", "frames")  # the checkpoint's host counters, int64

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RunState:
    """Everything a resume continues from: the learner's state with the host counters, the
    curriculum and the stall controller, and the resolved config."""

    train_state: Any  # ppo.update.TrainState (parameters, optimizer state, RNG, hyperparams)
    update: int  # updates done
    agent_steps: int  # agent steps of every environment of the job
    frames: int  # emulator frames stepped
    # Each demo's curriculum (a one-demo ``CurriculumState`` given here is wrapped).
    curriculum: cur.Curricula | cur.CurriculumState
    config: config_lib.Config
    # The stall controller; None when built: ``stall.init`` at the curriculum's maximum (a new
    # run). ``train_state``'s hyperparameters are the config's times its scale.
    stall: stall_lib.StallState | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "curriculum", cur.as_curricula(self.curriculum))
        if self.stall is None:
            object.__setattr__(self, "stall",
                               stall_lib.init(self.curriculum.max_starting_points))


def _newest_readable(steps: Sequence[int], read: Callable[[int], T], where: str,
                     report: Callable[[str], None] | None,
                     relist: Callable[[], Sequence[int]] | None = None) -> T:
    """``read(step)`` of the first of ``steps`` (newest first) whose read does not raise
    ``CorruptCheckpoint``; each one passed over is named by ``report`` in one line (None: not
    named). ``UsageError`` when none reads.

    ``relist``: the steps on disk now (newest first). A step that failed while the folder
    changed (a trainer saved a newer one, and its retention is deleting or has deleted this
    one) is no corrupt checkpoint: the walk starts again over the steps that are there now (a
    few times at most)."""
    for _ in range(_RELISTS):
        for i, step in enumerate(steps):
            try:
                return read(step)
            except CorruptCheckpoint as err:
                if relist is not None and (now := list(relist())) != steps:
                    steps = now
                    break  # changed under the reader: again over what is there now
                if i == len(steps) - 1:
                    raise UsageError(f"{where}: no checkpoint restores (tried "
                                     f"{', '.join(map(str, steps))}; the last: {err})") from None
                if report is not None:
                    report(f"{err}: trying checkpoint {steps[i + 1]}")
        else:
            break
    raise UsageError(f"{where}: no checkpoint saved yet" if not steps else
                     f"{where}: its checkpoints were deleted while being read, "
                     f"{_RELISTS} times (a trainer saving at every update?)")


_RELISTS = 10  # walks over the checkpoints of a directory that a trainer keeps changing


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def saved_config(checkpoints: Checkpoints, step: int | None = None) -> dict[str, Any] | None:
    """The config of checkpoint ``step``, by default of the newest one whose ``meta`` reads
    (``restore_state`` names any it passes over); None without a checkpoint."""
    def read(s: int) -> dict[str, Any]:
        try:
            return dict(checkpoints.read_meta(s).get("config", {}))
        except CorruptCheckpoint:
            raise
        except CheckpointError as err:
            raise UsageError(str(err)) from None

    steps = [step] if step is not None else checkpoints.steps()[::-1]
    if not steps:
        return None
    return _newest_readable(steps, read, str(checkpoints.directory), report=None)


def save_state(checkpoints: Checkpoints, state: RunState, meta: Mapping[str, Any],
               eval_score: float | None = None) -> bool:
    """Saves ``state`` as checkpoint ``state.update`` (main thread; every process calls it).
    ``eval_score``: the mean score from the game's start of these very parameters, when this
    update was evaluated; it ranks checkpoints first (``Checkpoints``' ``score_metric``), so every
    process must give the same."""
    counters = {k: np.asarray(getattr(state, k), np.int64) for k in COUNTERS}
    meta = {**meta, "config": config_tree.to_dict(state.config)}
    metrics = {cur.MAX_STARTING_POINT: state.curriculum.max_starting_point}
    if eval_score is not None and checkpoints.score_metric is not None:
        metrics[checkpoints.score_metric] = eval_score
    return checkpoints.save(state.update, {"train_state": state.train_state,
                                           "counters": counters},
                            cur.curricula_to_json(state.curriculum), meta, metrics,
                            extra={STALL_ITEM: stall_lib.to_json(state.stall)})


def restore_state(checkpoints: Checkpoints, target: RunState, meta: Mapping[str, Any],
                  where: str, step: int | None = None,
                  reconfigure: Callable[[Mapping[str, Any]], config_lib.Config] | None = None,
                  report: Callable[[str], None] = print) -> RunState:
    """Checkpoint ``step`` as a ``RunState`` whose config is ``target.config``;
    ``target.train_state`` gives the arrays' shapes and shardings. The learning rate and
    entropy coefficient in force are the config's (its precedence already chose between the
    command line and the checkpoint) times the restored stall scale, so a stalled run keeps its
    lowered values. The stall state restarts (``stall.init``) for a checkpoint written before
    it existed, and when the config turns the stall handling off (the configured values then
    hold).

    Without ``step``: the newest checkpoint that restores; each one that does not (truncated or
    garbled files) is named by ``report`` in one line and the next older is tried. When that
    is not the newest, ``reconfigure(its meta)`` gives the config instead of ``target.config``
    (the newest's config was resolved before). Raises ``UsageError`` for a checkpoint of
    another network or environment, an explicit ``step`` that does not restore, or none that
    restores."""
    steps = checkpoints.steps()[::-1]
    if step is not None:
        try:
            return _run_state(target, *_restore_step(checkpoints, target, meta, where, step),
                              step, where)
        except CorruptCheckpoint as err:
            raise UsageError(f"{err}; choose another with --checkpoint") from None

    def read(s: int) -> RunState:
        saved_meta, restored, cur_json, stall_json = _restore_step(checkpoints, target, meta,
                                                                   where, s)
        chosen = target
        if s != steps[0] and reconfigure is not None:
            chosen = dataclasses.replace(target, config=reconfigure(saved_meta))
        return _run_state(chosen, saved_meta, restored, cur_json, stall_json, s, where)

    if not steps:
        raise UsageError(f"{where}: no checkpoint to resume from")
    return _newest_readable(steps, read, where, report)


def _restore_step(checkpoints: Checkpoints, target: RunState, meta: Mapping[str, Any],
                  where: str, step: int,
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                             dict[str, Any] | None]:
    """(saved meta, restored {"train_state", "counters"}, curriculum JSON, stall JSON or None)
    of one step; ``CorruptCheckpoint`` passes through, other refusals become ``UsageError``."""
    try:
        saved_meta = checkpoints.read_meta(step)
        check_compatible(_meta_with_defaults(saved_meta), meta, config_lib.RESUME_FROZEN,
                         where=where)
        got, restored, cur_json = _restore_train_state(checkpoints, target.train_state,
                                                       saved_meta.get(STATE_VERSION_KEY),
                                                       target.config.ppo, step)
        stall_json = checkpoints.read_item(STALL_ITEM, step)
    except CorruptCheckpoint:
        raise
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    assert got == step, (got, step)
    return saved_meta, restored, cur_json, stall_json


def _meta_with_defaults(saved_meta: Mapping[str, Any]) -> dict[str, Any]:
    """``saved_meta`` with its config's keys added to the schema since at their defaults (a
    checkpoint written before ``demo.demo_paths`` existed is the same one-demo run)."""
    return {**saved_meta, "config": config_lib.with_defaults(saved_meta.get("config", {}))}


def _run_state(target: RunState, saved_meta: Mapping[str, Any], restored: Mapping[str, Any],
               cur_json: Mapping[str, Any], stall_json: Mapping[str, Any] | None, step: int,
               where: str) -> RunState:
    got = {k: int(restored["counters"][k]) for k in COUNTERS}
    assert got["update"] == step, (got, step)
    try:
        curriculum = cur.curricula_from_json(cur_json)
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{where}: checkpoint {step}: {err}") from None
    demos = len(target.config.demo.paths)
    if curriculum.num_demos != demos:
        raise UsageError(f"{where}: checkpoint {step} holds {curriculum.num_demos} demos' "
                         f"curricula, the config names {demos}")
    stall = stall_lib.init(curriculum.max_starting_points)
    if stall_json is not None and target.config.stall.enabled:
        try:
            stall = stall_lib.from_json(stall_json)
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{where}: checkpoint {step}: {err}") from None
    ppo = target.config.ppo
    lr, ent = stall_lib.hyperparams(ppo.learning_rate, ppo.ent_coef, stall)
    train_state = ppo_state.with_hyperparams(restored["train_state"], lr, ent)
    return dataclasses.replace(target, train_state=train_state, curriculum=curriculum,
                               stall=stall, **got)


def _restore_train_state(checkpoints: Checkpoints, train_state: Any, version: int | None,
                         ppo: Any, step: int | None = None,
                         ) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(step, {"train_state", "counters"}, curriculum JSON) of checkpoint ``step`` (default: the
    newest), whatever the ``TrainState`` layout it was written with
    (``ppo.update.TRAIN_STATE_VERSION``; one that does not say is tried as today's, then as
    version 1)."""
    counters = {k: np.asarray(0, np.int64) for k in COUNTERS}
    if version in (None, ppo_state.TRAIN_STATE_VERSION):
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
        {"train_state": ppo_state.v1_target(train_state), "counters": counters}, step)
    restored["train_state"] = ppo_state.lift_train_state(restored["train_state"], ppo)
    return step, restored, cur_json


def load_params(run_dir: Path, checkpoint: str = "latest",
                report: Callable[[str], None] | None = _stderr,
                ) -> tuple[int, dict[str, Any], config_lib.Config, Any]:
    """(step, meta, config, parameters) of a checkpoint ("latest", "best" or an update number):
    what evaluation needs, from the run directory alone (read only: nothing is written).
    "latest" is the newest that restores; each newer one that does not is named by ``report``
    (default: stderr) in one line. Raises ``UsageError`` (one line)."""
    if policy_lib.is_policy_dir(run_dir):  # an exported policy: one checkpoint, any name
        return policy_lib.load_policy(run_dir)
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        raise UsageError(f"{run_dir}: not a run directory (no {CHECKPOINT_DIR}/ folder)")
    checkpoints = Checkpoints(folder, read_only=True)
    targets: dict[str, Any] = {}  # built once: a walk may try several steps of one network
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
                return _load_params_at(checkpoints, run_dir, step, targets)
            except CorruptCheckpoint as err:
                raise UsageError(str(err)) from None
        return _newest_readable(checkpoints.steps()[::-1],
                                lambda s: _load_params_at(checkpoints, run_dir, s, targets),
                                str(run_dir), report, relist=lambda: _steps_now(checkpoints))
    finally:
        checkpoints.close()


def _steps_now(checkpoints: Checkpoints) -> list[int]:
    """The steps on disk now, newest first (re-read: a trainer may be saving and deleting)."""
    checkpoints.reload()
    return checkpoints.steps()[::-1]


def _load_params_at(checkpoints: Checkpoints, run_dir: Path, step: int,
                    targets: dict[str, Any],
                    ) -> tuple[int, dict[str, Any], config_lib.Config, Any]:
    """``load_params`` of one step; ``CorruptCheckpoint`` passes through. ``targets``: the
    train states already built, by network and optimiser (restores take their shapes)."""
    try:
        meta = checkpoints.read_meta(step)
        config = config_tree.from_dict(config_lib.Config, meta["config"])
        key = json.dumps([meta["config"].get("network"), meta["config"].get("ppo"),
                          meta["config"].get("env"), meta["num_actions"]], sort_keys=True)
        if key not in targets:
            targets[key] = ppo_state.create_train_state(
                config.network, config.ppo, config.env.obs_shape, int(meta["num_actions"]),
                jax.random.PRNGKey(0))[1]
        state = targets[key]
        # The whole state restores (the tree must match); only the parameters are kept.
        _, restored, _ = _restore_train_state(checkpoints, state, meta.get(STATE_VERSION_KEY),
                                              config.ppo, step)
    except CorruptCheckpoint:
        raise
    except (CheckpointError, config_tree.ConfigError, KeyError) as err:
        raise UsageError(f"{run_dir}: cannot load checkpoint {step}: {err}") from None
    return step, meta, config, restored["train_state"].params
