"""A run directory: its layout, the command line's request, and the run's config (resolved for
a new run or a resume); the restorable run state is ``jax_reset.run_state``'s.

    RUN_DIR/config.json      the resolved config, rewritten at every (re)start
    RUN_DIR/train.lock       held by the one trainer of the directory (``jax_reset.lock``)
    RUN_DIR/checkpoints/     Orbax: the run state every N updates (the last K plus the best)
    RUN_DIR/checkpoints-set-aside/   newer checkpoints moved away by a resume from an older one
    RUN_DIR/metrics.jsonl    RUN_DIR/tb/    metrics (``jax_reset.metrics``)
    RUN_DIR/metrics-set-aside.jsonl   metrics lines after the checkpoint a resume continued from
    RUN_DIR/processes/       per-process agreement digests (several processes only)
    RUN_DIR/profile/         a ``jax.profiler`` trace (``--profile-steps``)

On a resume the config comes from, in order of precedence: the command line's overrides, then
the runtime values the trainer itself changed (``RunState.runtime``, stored in each checkpoint;
none yet), then the newest checkpoint's config (``config.json`` when there is no checkpoint, or
the ``--config`` file when one is given). So an override given at a resume is saved with the
next checkpoint and persists to the next plain ``--resume``.

A resume continues from the newest checkpoint that restores (one that does not is named in one
line, and the next older is tried), or from ``--checkpoint N``; checkpoints newer than the one
it continues from are moved to ``checkpoints-set-aside/`` (kept) before anything is saved, and
the metrics lines logged after it to ``metrics-set-aside.jsonl`` (kept).

``TrainConfig`` (the ``[train]`` section: ``jax_reset.train_config``), the names of the layout
with ``UsageError`` (``jax_reset.run_layout``) and the run state (``jax_reset.run_state``) are
re-exported here. This module imports ``config`` (and JAX) only inside the functions that need
them: a bad command line fails before JAX is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_reset.run_layout import CHECKPOINT_DIR as CHECKPOINT_DIR
from jax_reset.run_layout import CONFIG_NAME as CONFIG_NAME
from jax_reset.run_layout import PROCESSES_DIR as PROCESSES_DIR
from jax_reset.run_layout import PROFILE_DIR as PROFILE_DIR
from jax_reset.run_layout import UsageError as UsageError
from jax_reset.run_state import COUNTERS as COUNTERS
from jax_reset.run_state import RUNTIME_KEY as RUNTIME_KEY
from jax_reset.run_state import STALL_ITEM as STALL_ITEM
from jax_reset.run_state import STATE_VERSION_KEY as STATE_VERSION_KEY
from jax_reset.run_state import RunState as RunState
from jax_reset.run_state import load_params as load_params
from jax_reset.run_state import restore_state as restore_state
from jax_reset.run_state import save_state as save_state
from jax_reset.run_state import saved_config as saved_config
from jax_reset.train_config import TrainConfig as TrainConfig

if TYPE_CHECKING:
    from jax_reset.checkpoint import Checkpoints
    from jax_reset.config import Config


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


def open_checkpoints(run_dir: Path, keep_last: int) -> Checkpoints:
    from jax_reset.checkpoint import Checkpoints

    return Checkpoints(run_dir / CHECKPOINT_DIR, keep_last=keep_last)


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


def check_demo_paths(config: Config) -> list[dict[str, Any]]:
    """``check_paths`` for every demo of the run (``demo.paths``): each exists, and all are of
    one game (the first's, or ``demo.game``); one line naming the file otherwise. Returns the
    headers, in ``demo.paths`` order."""
    from jax_reset import demos

    paths = config.demo.paths
    if len(paths) == 1:
        return [check_paths(config)]
    headers = []
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"demo.demo_paths: {path} does not exist")
        headers.append(demos.load(path, check=False).header)
    game = config.demo.game or headers[0]["game"]
    for path, header in zip(paths, headers, strict=True):
        if header["game"] != game:
            raise UsageError(f"demo.demo_paths: demos of different games in one run: {path} is "
                             f"a demo of {header['game']}, "
                             + (f"but demo.game is {game}" if config.demo.game
                                else f"{paths[0]} of {game}"))
    if config.demo.rom_path is not None and not Path(config.demo.rom_path).is_file():
        raise UsageError(f"demo.rom_path: {config.demo.rom_path} does not exist")
    return headers


def check_paths(config: Config) -> dict[str, Any]:
    """The demo (and the user's ROM) exist, and the demo is of ``demo.game`` when the config
    pins it: one line naming the key otherwise. Returns the demo's header."""
    from jax_reset import demos

    demo_path = Path(config.demo.paths[0])
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
