"""``StopFlag``: the SIGTERM/SIGINT flag that the trainer checks between updates, so that a
signal ends a run with a final checkpoint instead of killing it mid-update (a second SIGINT
interrupts at once); and the start-up's Ctrl-C (``EarlyInterrupt``), from the command's first
instruction until the flag takes over. Pure Python (``signal``, ``threading``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any


class EarlyInterrupt:
    """SIGINT during the start-up, before ``StopFlag`` is installed.

    Python's own handler raises ``KeyboardInterrupt`` wherever the interpreter is: during a
    module's import that is a traceback; inside a callback the interpreter calls on its own
    (JAX registers one with the garbage collector) it is printed as "Exception ignored" and
    lost, and the run then trained to its end; inside JAX's import it can abort the process.
    This handler only records the signal: ``check()``, called where the start-up can stop
    cleanly, raises ``KeyboardInterrupt`` for it, and ``StopFlag`` adopts one that arrives
    after the last check (the run then stops before its first update).
    """

    seen = False

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGINT, cls._handle)

    @classmethod
    def _handle(cls, signum: int, frame: FrameType | None) -> None:
        cls.seen = True

    @classmethod
    def check(cls) -> None:
        if cls.seen:
            raise KeyboardInterrupt


class StopFlag:
    """Set by SIGTERM or SIGINT; the trainer checks it between updates, then saves and exits.

    A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists; the last complete
    checkpoint is still on disk), or, during a checkpoint's save, once that save is on disk
    and read back (``run.checkpoint``: an interrupted wait left a false unreadable step). Use
    as a context manager in the main thread: the previous handlers come back on exit.
    ``event`` can be shared with worker threads.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = tuple(signals)
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("StopFlag must be installed from the main thread")
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        if EarlyInterrupt.seen and signal.SIGINT in self.signals:
            # A Ctrl-C the start-up recorded and no check raised (it came in a callback):
            # the same as one that arrives now.
            self._handle(signal.SIGINT, None)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def request(self, reason: str = "requested") -> None:
        """Asks for a stop without a signal (tests, the end of a profile window)."""
        self.signal_name = reason
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()
