"""The checks of what the command line asks of a run directory (``layout.Request``): they refuse
what cannot run before JAX starts or anything is written: a resume without a run, a new run over an
old one, a ``--profile-steps`` window outside the run, demos that are missing or of different
games. Imports nothing that imports JAX.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jax_reset import config as config_lib
from jax_reset import demos
from jax_reset.run.layout import CONFIG_NAME, Request, UsageError, has_checkpoints
from jax_reset.run.resolve import resume_config

if TYPE_CHECKING:
    from jax_reset.config import Config


def check_request(req: Request) -> None:
    """Refuses what cannot run, before JAX starts or anything is written. A resume is checked
    against ``config.json`` here, and against the newest checkpoint by ``resume_config`` once
    JAX is up. A run whose ``config.json`` was lost still resumes: every checkpoint holds the
    config (it is checked then, and ``config.json`` written again)."""
    saved_path = req.run_dir / CONFIG_NAME
    if req.checkpoint is not None and not req.resume:
        raise UsageError("--checkpoint N continues a run: it needs --resume")
    if req.resume:
        if not saved_path.is_file() and not has_checkpoints(req.run_dir):
            raise UsageError(f"{req.run_dir}: no run to resume (no {CONFIG_NAME}, no "
                             "checkpoint)")
        if req.config_path:  # its [on_cpu] table depends on the platform: checked with JAX
            config_lib.load(req.config_path, req.overrides)
        elif saved_path.is_file():
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
