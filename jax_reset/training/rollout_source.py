"""Rollout sources: how the learner gets rollouts from the ``Actor``, either in turn
(``SyncSource``: act, then learn) or overlapped (``ThreadedSource``: an actor thread collects the
next rollout with the previous parameters while the learner updates, Cleanba style: a queue of
one, exactly one version behind whichever thread is faster; the stored behaviour
log-probabilities keep the PPO ratio right). Which parameters and which starting points a
rollout uses never depends on the threads' timing, so a run repeats exactly.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any, Protocol

from jax_reset import metrics as m
from jax_reset.training.actor import Actor, Rollout, Stopped


class RolloutSource(Protocol):
    """Hands rollout after rollout to the learner; ``publish`` gives it newer parameters.

    Rollout i (counting from 0) is learned by update i + 1. Owned by the learner's thread.
    """

    actor: Actor
    # Rollouts the actor may be ahead of the learner: while update u + 1 learns rollout u,
    # rollout u + 1 + lag is the first one certainly not started.
    lag: int

    def start(self) -> None: ...

    def next(self, index: int, stop: threading.Event) -> Rollout:
        """Rollout ``index``; raises ``Stopped`` as soon as ``stop`` is set."""
        ...

    def publish(self, params: Any, version: int) -> None:
        """The parameters made by ``version`` updates."""
        ...

    def close(self) -> None:
        """Stops acting; raises the failure that ended it, if ``next`` did not raise it."""
        ...


class SyncSource:
    """Acting and learning alternate: each rollout acts with the latest parameters (exact
    on-policy)."""

    lag = 0

    def __init__(self, actor: Actor, params: Any, version: int) -> None:
        self.actor = actor
        self._params, self._version = params, version

    def start(self) -> None:
        pass

    def next(self, index: int, stop: threading.Event) -> Rollout:
        return self.actor.collect(self._params, index, self._version, stop)

    def publish(self, params: Any, version: int) -> None:
        self._params, self._version = params, version

    def close(self) -> None:
        pass


class ParamsBox:
    """The parameters for the actor thread: the newest two versions (the number of updates
    that made them), so the actor gets exactly the version it asks for however the threads'
    timings fall."""

    def __init__(self, params: Any, version: int) -> None:
        self._cond = threading.Condition()
        self._params = {version: params}
        self.version = version

    def set(self, params: Any, version: int) -> None:
        with self._cond:
            self._params[version] = params
            self._params = {v: p for v, p in self._params.items() if v >= version - 1}
            self.version = version
            self._cond.notify_all()

    def get(self, version: int, stop: threading.Event) -> tuple[Any, int] | None:
        """The parameters of ``version`` once made (those of the first version held when it is
        older, as for the first rollout after a start); None if stopped first."""
        with self._cond:
            while self.version < version:
                if stop.is_set():
                    return None
                self._cond.wait(timeout=0.1)
            version = max(version, min(self._params))
            return self._params[version], version


STOP = object()  # the actor thread's last item when it ends on a stop (not an error)


class ThreadedSource:
    """An actor thread collects into a queue of one while the learner updates (Cleanba)."""

    lag = 1

    def __init__(self, actor: Actor, params: Any, version: int) -> None:
        self.actor = actor
        self.box = ParamsBox(params, version)
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.index = version  # the next rollout's number
        self.thread = threading.Thread(target=self._run, name="actor", daemon=True)
        self.error: BaseException | None = None  # what ended the actor thread, if it failed

    def start(self) -> None:
        self.thread.start()

    def publish(self, params: Any, version: int) -> None:
        self.box.set(params, version)

    def _run(self) -> None:
        # Time blocked handing the previous rollout over: known only once it is in the queue
        # (and the learner's), so it is reported with the next rollout.
        put_wait = 0.0
        try:
            while not self.stop.is_set():
                # Rollout i is learned by update i + 1; acting with the parameters of update
                # i - 1 keeps the actor exactly one version behind (Cleanba), however fast it
                # is, or the learner: a faster learner's newer parameters wait for the next one.
                t0 = time.perf_counter()
                got = self.box.get(self.index - 1, self.stop)
                if got is None:
                    break
                params, version = got
                wait = time.perf_counter() - t0
                rollout = self.actor.collect(params, self.index, version, self.stop)
                rollout.metrics[m.ACTOR_WAIT_S] = wait + put_wait
                t0 = time.perf_counter()
                while not self.stop.is_set():
                    try:
                        self.queue.put(rollout, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                put_wait = time.perf_counter() - t0
                self.index += 1
        except Stopped:
            pass
        except BaseException as err:  # handed to the learner, which raises it
            self.error = err  # (also when the learner stopped first: see close)
            self._last(err)
            return
        self._last(STOP)

    def _last(self, item: Any) -> None:
        """The thread's last item, in place of a rollout nobody will learn from."""
        with contextlib.suppress(queue.Empty):
            self.queue.get_nowait()
        self.queue.put_nowait(item)

    def next(self, index: int, stop: threading.Event) -> Rollout:
        while True:
            if stop.is_set():
                raise Stopped
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError("the actor thread ended without a rollout") from None
                continue
            if item is STOP:
                raise Stopped
            if isinstance(item, BaseException):
                self.error = None  # raised here: close() need not raise it again
                raise item
            assert item.policy_version >= index - 1, (item.policy_version, index)
            return item

    def close(self) -> None:
        """Stops the actor thread; raises what made it fail, if anything did (once): a stop
        requested while the pool hangs must report the hang, not a clean stop."""
        self.stop.set()
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=60)
        error, self.error = self.error, None
        if error is not None:
            raise error


def make_source(actor: Actor, params: Any, version: int, overlap: bool) -> RolloutSource:
    """The threaded source with ``overlap``, else the synchronous one."""
    return (ThreadedSource if overlap else SyncSource)(actor, params, version)
