"""The evaluation's errors, each a one-line message (the commands print it and exit non-zero)."""

from __future__ import annotations


class EvalError(RuntimeError):
    """Evaluation cannot run as asked; the message is one line."""


class EmulatorCrash(EvalError):
    """The emulator's process died while games were played (``jax_reset.evaluation.isolated``):
    the games of that evaluation are lost, the caller's process is not. ``signal``: the signal
    that killed it (11 for a segmentation fault), or None."""

    def __init__(self, message: str, signal: int | None = None) -> None:
        super().__init__(message)
        self.signal = signal
