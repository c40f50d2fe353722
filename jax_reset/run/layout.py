"""A run directory's layout, the ``Request`` a command makes of one, and ``UsageError``, the
one-line refusal of bad input that the run directory's modules raise:

    RUN_DIR/config.json      the resolved config, rewritten at every (re)start (run.resolve)
    RUN_DIR/train.lock       held by the one trainer of the directory (run.lock)
    RUN_DIR/checkpoints/     Orbax: the run state every N updates, the last K plus the best
                             (run.checkpoint, run.state)
    RUN_DIR/checkpoints-set-aside/   newer checkpoints moved away by a resume from an older one
    RUN_DIR/metrics.jsonl    RUN_DIR/tb/    metrics (``jax_reset.metrics``)
    RUN_DIR/metrics-set-aside.jsonl   metrics lines after the checkpoint a resume continued from
    RUN_DIR/processes/       per-process agreement digests (several processes only)
    RUN_DIR/profile/         a ``jax.profiler`` trace (``--profile-steps``)

Imports nothing of the package: every module of ``jax_reset.run`` builds on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
PROCESSES_DIR = "processes"
PROFILE_DIR = "profile"
VIDEOS_DIR = "videos"  # games filmed during training ([eval] video_every)


@dataclasses.dataclass(frozen=True)
class Request:
    """What the command line asks of the run directory."""

    run_dir: Path
    resume: bool
    config_path: str | None  # a config file (required for a new run)
    overrides: tuple[str, ...] = ()
    checkpoint: int | None = None  # --checkpoint N: resume from N (default: the newest)


class UsageError(ValueError):
    """Bad input found before anything is written; the message is one line."""


class RunFailure(RuntimeError):
    """A run that cannot go on (an update that diverged, a state that cannot be saved); the
    message is one line, ending with the last checkpoint, which stays as it was."""


def has_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoints/`` holds a complete checkpoint (a step folder)."""
    folder = run_dir / CHECKPOINT_DIR
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())
