"""The config a run trains with: a new run's (its file, the CPU overlay when asked, the
overrides) or a resume's (the newest checkpoint's config with the command line on top), and
``config.json``, written at every (re)start.

On a resume the config comes from, in order of precedence: the command line's overrides, then
the newest checkpoint's config (``config.json`` when there is no checkpoint, or the ``--config``
file when one is given). So an override given at a resume is saved with the next checkpoint and
persists to the next plain ``--resume``. Imports nothing that imports JAX; reading a
checkpoint's config (``resolve_config`` on a resume) imports Orbax when it runs.

The demo and ROM paths are saved absolute (a relative one is taken from the working directory
the command starts in), so a resume started from another directory finds the same files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset.run.layout import CONFIG_NAME, Request, UsageError, has_checkpoints

if TYPE_CHECKING:
    from jax_reset.config import Config


# The config's file paths (in ``demo``): saved absolute.
_PATH_KEYS = ("demo_path", "demo_paths", "rom_path")


def absolute_paths(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A config's nested dict with its demo and ROM paths absolute, against the working
    directory (``~`` expanded); other values as they are."""
    def absolute(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [absolute(v) for v in value]
        return os.path.abspath(os.path.expanduser(value)) if isinstance(value, str) and value \
            else value

    demo = dict(tree.get("demo", {}))
    for key in _PATH_KEYS:
        if key in demo:
            demo[key] = absolute(demo[key])
    return {**tree, "demo": demo} if "demo" in tree else dict(tree)


def new_config(req: Request, on_cpu: bool) -> tuple[Config, list[str]]:
    """A new run's config (the file, its ``[on_cpu]`` table when asked, the overrides) and
    what the run prints about the CPU overlay it applied; the file is read once."""
    data = config_lib.read_file(req.config_path)
    try:
        config = config_lib.from_data(data, req.overrides, on_cpu=on_cpu)
    except config_tree.ConfigError as err:
        raise config_tree.ConfigError(f"{req.config_path}: {err}") from None
    config = config_tree.from_dict(config_lib.Config, absolute_paths(config_tree.to_dict(config)))
    notes = []
    if on_cpu and config_tree.CPU_TABLE in data:
        notes.append("no GPU found: using the CPU-sized settings ([on_cpu]) of "
                     f"{req.config_path}; --full-size keeps the full-size ones")
    return config, notes


def resume_config(saved: Mapping[str, Any], req: Request, on_cpu: bool = False,
                  ) -> tuple[Config, list[str]]:
    """The config a resume trains with, and the notes to print.

    ``saved``: the config the run last saved (the newest checkpoint's, else ``config.json``).
    Precedence: the command line's overrides, then ``saved``. A ``--config`` file given on a
    resume replaces ``saved`` as the base (with its ``[on_cpu]`` table when ``on_cpu``).
    Refuses changes of ``config.RESUME_FROZEN`` keys (``UsageError``).
    """
    if req.config_path:
        base, where = config_lib.read_file(req.config_path), str(req.config_path)
        if on_cpu:
            base = config_tree.merge(base, base.get(config_tree.CPU_TABLE, {}))
    else:
        base, where = dict(saved), str(req.run_dir / CONFIG_NAME)
    base = {k: v for k, v in base.items() if k != config_tree.CPU_TABLE}
    try:
        config = config_tree.from_dict(config_lib.Config, absolute_paths(
            config_tree.apply_overrides(base, req.overrides)))
    except config_tree.ConfigError as err:
        raise config_tree.ConfigError(f"{where}: {err}") from None
    # a run saved before its paths were absolute: the same files, from this directory
    changed = config_tree.diff(absolute_paths(config_lib.with_defaults(saved)),
                               config_tree.to_dict(config))
    frozen = config_lib.frozen_keys(changed)
    if frozen:
        raise UsageError(f"{req.run_dir}: a resume cannot change {', '.join(frozen[:4])}; start "
                         "a new run directory for that")
    notes = [f"resuming with changed settings: {', '.join(changed)}"] if changed else []
    return config, notes


def resolve_config(req: Request, on_cpu: bool) -> tuple[Config, list[str]]:
    """The config this run trains with (the precedence above) and the notes to print;
    ``on_cpu``: apply the CPU overlay (no accelerator found, and no ``--full-size``)."""
    from jax_reset.run import checkpoint, state  # Orbax and JAX: only once JAX may start

    if not req.resume:
        return new_config(req, on_cpu)
    saved = None
    if has_checkpoints(req.run_dir):
        with checkpoint.open_checkpoints(req.run_dir, keep_last=1) as checkpoints:
            saved = state.saved_config(checkpoints, req.checkpoint)
    notes = []
    if saved is None:  # a restart before the first checkpoint: from update 0
        saved = config_lib.read_file(req.run_dir / CONFIG_NAME)
        notes.append(f"no checkpoint in {req.run_dir} yet: starting from update 0 with its "
                     f"{CONFIG_NAME}")
    config, more = resume_config(saved, req, on_cpu=on_cpu)
    return config, notes + more


def write_config(config: Config, run_dir: Path) -> None:
    """``config.json``: written at every (re)start (the Makefile and a restart without
    checkpoints read it), atomically."""
    config_tree.save_json(config, run_dir / CONFIG_NAME)
