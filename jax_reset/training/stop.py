"""``StopFlag``: the SIGTERM/SIGINT flag that the trainer checks between updates, so that a
signal ends a run with a final checkpoint instead of killing it mid-update (a second SIGINT
interrupts at once). Pure Python (``signal``, ``threading``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any


class StopFlag:
    """Set by SIGTERM or SIGINT; the trainer checks it between updates, then saves and exits.

    A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists; the last complete
    checkpoint is still on disk). Use as a context manager in the main thread: the previous
    handlers come back on exit. ``event`` can be shared with worker threads.
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
