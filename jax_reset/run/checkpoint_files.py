"""The housekeeping of a checkpoint folder's files that Orbax's manager does not do, run by
process 0 only (the folder is shared by every process): removing the temporary folders of
interrupted or failed saves, and moving steps aside (``<folder>-set-aside/``, kept) when a run
continues from an older checkpoint. ``jax_reset.run.checkpoint.Checkpoints`` calls these.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import jax

SET_ASIDE_SUFFIX = "-set-aside"  # checkpoints/ -> checkpoints-set-aside/<step>


def remove_interrupted_saves(directory: Path) -> None:
    """Deletes the temporary folders of saves that a crash or a kill interrupted.

    Orbax writes a step into ``<step>.orbax-checkpoint-tmp*`` and renames it when complete, so
    such a folder is never a checkpoint. Its own ``cleanup_tmp_directories`` did not always
    remove one left by a killed process (seen under load); this runs when the folder is opened,
    before any save of this job, by process 0 only (the folder is shared by every process).
    """
    if jax.process_index() != 0 or not directory.is_dir():
        return
    for stale in directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)


def remove_failed_save(directory: Path, step: int | None) -> None:
    """Deletes the temporary folder of a save of ``step`` that failed, so the space is free."""
    for stale in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)


def move_aside(directory: Path, steps: Iterable[int], after: int) -> list[Path]:
    """Moves every step folder of ``steps`` newer than ``after`` into
    ``<directory>-set-aside/``; returns the new paths (a step set aside twice keeps both)."""
    moved = []
    aside = directory.with_name(directory.name + SET_ASIDE_SUFFIX)
    for step in steps:
        if step <= after:
            continue
        aside.mkdir(exist_ok=True)
        dest, n = aside / str(step), 1
        while dest.exists():  # set aside twice: keep both
            dest, n = aside / f"{step}.{n}", n + 1
        shutil.move(str(directory / str(step)), dest)
        moved.append(dest)
    return moved
