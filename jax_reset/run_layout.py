"""The names of a run directory's files and folders (the layout listed in ``jax_reset.run_dir``)
and ``UsageError``, the one-line refusal of bad input that the run directory's modules raise.
Imports nothing of this package, so ``jax_reset.run_dir`` and ``jax_reset.run_state`` both build
on it without importing each other both ways; ``jax_reset.run_dir`` re-exports every name.
"""

from __future__ import annotations

CONFIG_NAME = "config.json"
CHECKPOINT_DIR = "checkpoints"
PROCESSES_DIR = "processes"
PROFILE_DIR = "profile"


class UsageError(ValueError):
    """Bad input found before anything is written; the message is one line."""
