"""Orbax checkpoints of a run: ``Checkpoints`` over a run's ``checkpoints/`` folder.

A checkpoint step (the update counter) holds five items (``stall`` and ``digests`` optional):

* ``state``: the training state pytree (parameters, optimizer state, counters, RNG), saved with
  ``ocp.args.StandardSave``. Counters must be arrays (``np.asarray(n, np.int64)``), RNG keys raw
  ``uint32`` arrays (``jax.random.PRNGKey`` or ``jax.random.key_data``).
* ``curriculum``: the controller's state as JSON (``jax_reset.curriculum.to_json``).
* ``EXTRA_JSON_ITEMS`` (``stall``: ``jax_reset.curriculum.stall.to_json``): further JSON state
  items, each optional (a checkpoint written before one existed lacks it: ``read_item``
  returns None).
* ``digests``: the sha256 of every array of ``state``; a restore compares them, so flipped bytes
  in the array data are a corrupt checkpoint rather than silently altered weights. A state
  holding NaN or infinite values is refused before anything is written (``NonFiniteState``).
* ``meta``: the resolved config and the network's shape (every parameter's path, shape and
  dtype), so a run directory alone says what it holds and a mismatched resume is refused.

Orbax writes each step into a temporary folder and renames it when complete, so a crash or a
kill during a save leaves the previous checkpoint intact. Retention keeps the last K steps plus
the best one (the best evaluation from the game's start, then the lowest starting point), and
is this class's own (Orbax is told to keep everything): a step is
deleted only once the newer ones it makes redundant have been read back after their save (the
``meta`` and ``curriculum`` items and the state's array index; see ``_read_back``), so a save
that went wrong (a full disk, a file system that failed) never costs the last good checkpoint.

A checkpoint that cannot be read (truncated or garbled files, arrays that fail their checksums)
raises ``CorruptCheckpoint``, naming it in one line, so that callers can fall back to an older
one; a save that fails for a reason of the file system raises ``jax_reset.run.disk.WriteError``
(``disk full writing <path>; last checkpoint: <N>``) instead of Orbax's cascade of tracebacks.
Orbax is not thread-safe: every call here must come from the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset.curriculum import MAX_STARTING_POINT
from jax_reset.metrics import EVAL_SCORE
from jax_reset.run import checkpoint_files, disk
from jax_reset.run.checkpoint_meta import (
    DIGESTS_FORMAT,
    CheckpointError,
    CorruptCheckpoint,
    NonFiniteState,
    abstract_leaf,
    array_digests,
    check_digests,
    check_tree,
    first_line,
    savable_leaf,
)
from jax_reset.run.layout import CHECKPOINT_DIR

# JSON items a step may hold besides ``curriculum`` and ``meta`` (passed to ``save`` as
# ``extra``); registered so that a fresh manager can read them back.
EXTRA_JSON_ITEMS = ("stall",)
# The sha256 of every array of ``state``, written by each save and compared by each restore
# (a checkpoint written before it existed lacks it and restores unchecked).
DIGESTS_ITEM = "digests"

T = TypeVar("T")

# Orbax logs each failed background write with a traceback; the failure is reported once.
logging.getLogger("absl").addFilter(disk.QuietWriteFailures())
logging.getLogger("asyncio").addFilter(disk.QuietWriteFailures(only_from=None))
disk.quiet_closed_loop_races()


class _QuietReads(logging.Filter):
    """Drops Orbax's warnings that a read-only manager (evaluation) is read-only, and those of
    a step whose files are missing (its removal under way or stopped part way): the read that
    fails on them says so in its own one line (``_check_tree``)."""

    _DROPPED = ("read_only=True", "is read only", "Metadata file does not exist",
                "was found in the checkpoint, but could not be restored")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("orbax" in record.pathname and record.levelno == logging.WARNING
                    and any(part in text for part in self._DROPPED))


logging.getLogger("absl").addFilter(_QuietReads())


@contextlib.contextmanager
def _interrupts_after_the_save() -> Iterator[None]:
    """Holds a Ctrl-C (SIGINT) that arrives while a save is written, waited for or read back,
    and hands it to the handler it was meant for once the save is settled (a save takes seconds
    at most). A ``KeyboardInterrupt`` raised inside Orbax's wait left the step half-settled:
    Orbax logged a traceback, and the read back then failed on a folder not yet renamed, a
    false "does not read back" with exit code 1. Does nothing outside the main thread."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # no handler that Python set: leave it alone
        return
    held: list[FrameType | None] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for frame in held:  # each one: the first may only ask the stop flag for a stop
            if callable(previous):  # the trainer's stop flag, or Python's KeyboardInterrupt
                previous(signal.SIGINT, frame)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"Checkpoints.{what} must be called from the main thread "
                           "(Orbax is not thread-safe)")


class Checkpoints:
    """A run's checkpoint folder: save every N updates, keep the last K plus the best.

    Args:
      directory: the folder (created if missing).
      keep_last: how many of the latest steps to keep.
      best_metric: key of the ``metrics`` given to ``save`` that ranks checkpoints; the best
        one is kept besides the last K (None: no best).
      best_mode: "min" or "max".
      score_metric: ranks before ``best_metric``: the step with the highest ``score_metric`` is
        the best, a step without it ranks below every step with it, and ``best_metric`` (then
        the newest) decides between equal ones. The default, the mean score of the evaluation
        from the game's start, is given only to the checkpoint of the update that was
        evaluated: the best is the best-playing evaluated policy, whatever the curriculum's
        position (a policy that collapses later keeps its best), and without evaluations the
        lowest starting point.
      async_save: let Orbax finish writing in the background (``wait``/``close`` block on it).
    """

    def __init__(self, directory: str | Path, keep_last: int = 3,
                 best_metric: str | None = MAX_STARTING_POINT,
                 best_mode: str = "min", score_metric: str | None = EVAL_SCORE,
                 async_save: bool = True,
                 read_only: bool = False) -> None:
        _require_main_thread("__init__")
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = Path(directory).absolute()
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.score_metric = score_metric
        self.read_only = read_only
        self._async = async_save
        if not read_only:
            checkpoint_files.remove_interrupted_saves(self.directory)
        options = ocp.CheckpointManagerOptions(
            # best_fn makes Orbax write the metrics beside each step, so the best is still
            # known after a restart; which steps are kept is decided here (``_retain``).
            best_fn=(None if best_metric is None else lambda m: float(m[best_metric])),
            best_mode=best_mode,
            preservation_policy=policies.LatestN(n=None),  # everything: see ``_retain``
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,  # an interrupted save leaves a tmp folder
            read_only=read_only,
        )
        # Named handlers let a fresh manager (after a restart) read any single item's metadata.
        handlers = {"state": ocp.StandardCheckpointHandler(),
                    "curriculum": ocp.JsonCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler(),
                    **{name: ocp.JsonCheckpointHandler()
                       for name in (*EXTRA_JSON_ITEMS, DIGESTS_ITEM)}}
        self._manager = _listing(lambda: ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers))
        # Steps found on opening count as read back (they were when written); a new save
        # counts once ``_settle`` has read it back.
        self._checked = set(self._manager.all_steps())
        self._pending: int | None = None  # saved, not yet read back
        self._failed = False  # a save failed: nothing more is written
        self.read_back_s = 0.0  # seconds the last read-back took

    # ---- queries -----------------------------------------------------------------------------

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best metric (None without a best metric or any step); of
        equal ones, the newest."""
        if self.best_metric is None:
            return None
        return self._best_of(self.steps())

    def metrics(self, step: int) -> dict[str, float]:
        """The metrics saved with ``step`` ({} if none): its starting point, and the mean score
        of its evaluation from the game's start when that update was evaluated."""
        metrics = self._manager.metrics(step)
        return dict(metrics) if isinstance(metrics, Mapping) else {}

    def _best_of(self, steps: Iterable[int]) -> int | None:
        ranked = []
        for step in steps:
            metrics = self.metrics(step)
            if metrics.get(self.best_metric) is None:
                continue
            value = float(metrics[self.best_metric])
            score = metrics.get(self.score_metric) if self.score_metric is not None else None
            ranked.append((-math.inf if score is None else float(score),
                           value if self.best_mode == "max" else -value, step))
        return max(ranked)[2] if ranked else None

    # ---- saving ------------------------------------------------------------------------------

    def save(self, step: int, state: Any, curriculum: Mapping[str, Any], meta: Mapping[str, Any],
             metrics: Mapping[str, float] | None = None,
             extra: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
        """Saves one step; False if that step is already saved (e.g. a stop right after one).
        ``extra``: JSON items by name, each one of ``EXTRA_JSON_ITEMS``. Raises
        ``disk.WriteError`` when the file system refuses it (the previous checkpoints stay as
        they were)."""
        _require_main_thread("save")
        extra = dict(extra or {})
        unknown = sorted(set(extra) - set(EXTRA_JSON_ITEMS))
        if unknown:
            raise ValueError(f"save: unknown checkpoint items {unknown} (known: "
                             f"{', '.join(EXTRA_JSON_ITEMS)})")
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        if self.best_metric is not None:
            value = metrics.get(self.best_metric)
            if value is None or not math.isfinite(value):
                raise ValueError(f"save needs a finite metrics['{self.best_metric}'] to rank "
                                 "checkpoints")
        with _interrupts_after_the_save():
            return self._save(step, state, curriculum, meta, metrics, extra)

    def _save(self, step: int, state: Any, curriculum: Mapping[str, Any],
              meta: Mapping[str, Any], metrics: dict[str, float],
              extra: dict[str, Mapping[str, Any]]) -> bool:
        self._settle()
        if step in self._manager.all_steps():
            return False
        state = jax.tree.map(savable_leaf, state)
        digests, non_finite = array_digests(state)
        if non_finite:
            raise NonFiniteState(f"{self.directory}/{step}: {len(non_finite)} arrays hold NaN or "
                                 f"infinite values (e.g. '{non_finite[0]}'): not saved; last "
                                 f"checkpoint: {self._last_checked()}")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            curriculum=ocp.args.JsonSave(dict(curriculum)),
            meta=ocp.args.JsonSave(dict(meta)),
            **{DIGESTS_ITEM: ocp.args.JsonSave({"format": DIGESTS_FORMAT, "sha256": digests})},
            **{name: ocp.args.JsonSave(dict(item)) for name, item in extra.items()},
        )
        try:
            saved = bool(self._manager.save(int(step), args=args, metrics=metrics, force=True))
        except Exception as err:
            raise self._write_failure(int(step), err) from None
        if saved:
            self._pending = int(step)
            if not self._async:
                self._settle()  # a synchronous save: read back and retain now
        return saved

    def wait(self) -> None:
        """Blocks until every started save is on disk and read back (then applies retention)."""
        with _interrupts_after_the_save():
            self._settle()

    def close(self) -> None:
        try:
            if not self._failed:
                with _interrupts_after_the_save():
                    self._settle()
        finally:
            with _quiet_if(self._failed):
                self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settle(self) -> None:
        """Waits for the save in flight, reads it back, then applies retention."""
        if self._failed:
            raise disk.WriteError(f"{self.directory}: an earlier save failed; nothing more "
                                  "is written")
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            raise self._write_failure(self._pending, err) from None
        step, self._pending = self._pending, None
        if step is None:
            return
        t0 = time.perf_counter()
        try:
            self._read_back(step)
        except CorruptCheckpoint as err:
            self._failed = True
            raise disk.WriteError(f"checkpoint {step} does not read back after its save "
                                  f"({err}); last checkpoint: {self._last_checked()}") from None
        self.read_back_s = time.perf_counter() - t0
        self._checked.add(step)
        self._retain()

    def _read_back(self, step: int) -> None:
        """The cheap check of a just-written step: its JSON items parse and the state's array
        index (tree metadata) reads; ``CorruptCheckpoint`` otherwise. (The arrays themselves
        are not re-read: Orbax has just written them, and a restore checks them.)"""
        try:
            items = self._manager.item_metadata(step)
            self._state_tree(step, items)
            extra = {name: ocp.args.JsonRestore() for name in EXTRA_JSON_ITEMS if name in items}
            self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), curriculum=ocp.args.JsonRestore(), **extra))
        except CorruptCheckpoint:
            raise
        except Exception as err:
            raise CorruptCheckpoint(f"{self.directory}/{step}: {first_line(err)}") from None

    def _retain(self) -> None:
        """Deletes read-back steps older than the newest ``keep_last`` read-back ones, except
        the best; a step not read back is never deleted and never counts."""
        checked = [s for s in self.steps() if s in self._checked]
        if len(checked) <= self.keep_last or self.read_only:
            return
        best = self._best_of(checked) if self.best_metric is not None else None
        for step in checked[:-self.keep_last]:
            if step != best:
                self._manager.delete(step)
                self._checked.discard(step)

    def _last_checked(self) -> int | str:
        checked = [s for s in self.steps() if s in self._checked]
        return checked[-1] if checked else "none"

    def _write_failure(self, step: int | None, err: Exception) -> Exception:
        """The error to raise for a failed save: one line for a file-system failure (its
        temporary folder removed, so the space is free again), else ``err`` itself."""
        self._failed = True
        self._pending = None
        kind = disk.problem(err)
        if kind is None:
            return err
        if jax.process_index() == 0:
            checkpoint_files.remove_failed_save(self.directory, step)
        where = self.directory / str(step) if step is not None else self.directory
        return disk.WriteError(f"{kind} writing {where}; last checkpoint: {self._last_checked()}")

    # ---- moving aside ------------------------------------------------------------------------

    def set_aside(self, after: int) -> list[Path]:
        """Moves every step newer than ``after`` into ``<directory>-set-aside/`` (kept, not
        deleted), so that a run continues from ``after``; returns the new paths. Process 0
        moves; every process calls ``reload`` after a barrier."""
        moved = []
        if jax.process_index() != 0:
            return moved
        moved = checkpoint_files.move_aside(self.directory, self.steps(), after)
        self.reload()
        return moved

    def reload(self) -> None:
        """Re-reads the folder's steps (after ``set_aside`` moved some)."""
        _listing(self._manager.reload)
        self._checked &= set(self._manager.all_steps())

    # ---- restoring ---------------------------------------------------------------------------

    def _step_or_latest(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
        if step not in self._manager.all_steps():
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step} "
                                  f"(have {self.steps()})")
        return step

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The ``meta`` item of a step (the latest by default), its config without the keys
        this code retired (``config.RETIRED_KEYS``)."""
        _require_main_thread("read_meta")
        step = self._step_or_latest(step)
        with self._reading(step):
            meta = self._manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        return self._readable_meta(step, meta)

    def _readable_meta(self, step: int, meta: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(meta.get("config"), Mapping):
            return meta
        try:
            return {**meta, "config": config_lib.drop_retired(meta["config"])}
        except config_tree.ConfigError as err:
            raise CheckpointError(f"{self.directory}/{step}: {err}") from None

    def read_item(self, name: str, step: int | None = None) -> dict[str, Any] | None:
        """The JSON item ``name`` (one of ``EXTRA_JSON_ITEMS``) of a step (the latest by
        default); None when that step was written without it."""
        _require_main_thread("read_item")
        if name not in EXTRA_JSON_ITEMS:
            raise ValueError(f"read_item: unknown checkpoint item {name!r} (known: "
                             f"{', '.join(EXTRA_JSON_ITEMS)})")
        step = self._step_or_latest(step)
        with self._reading(step):
            if name not in self._manager.item_metadata(step):
                return None
            return self._manager.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.JsonRestore()}))[name]

    def restore(self, target: Any, step: int | None = None,
                ) -> tuple[int, Any, dict[str, Any], dict[str, Any]]:
        """(step, state, curriculum JSON, meta) of a step (the latest by default).

        ``target`` is a state of the same structure (e.g. a freshly initialised one, or its
        ``jax.ShapeDtypeStruct`` tree); restored arrays take its shapes, dtypes and shardings.
        A checkpoint whose tree differs is refused with one line naming the first difference;
        one whose arrays do not match the checksums saved with them raises
        ``CorruptCheckpoint`` (a caller falls back as for unreadable files).
        """
        _require_main_thread("restore")
        step = self._step_or_latest(step)
        abstract = jax.tree.map(abstract_leaf, target)
        with self._reading(step):
            self._check_tree(step, abstract)
            digests = DIGESTS_ITEM in self._manager.item_metadata(step)
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                curriculum=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
                **({DIGESTS_ITEM: ocp.args.JsonRestore()} if digests else {}),
            ))
            if digests:
                check_digests(restored[DIGESTS_ITEM], restored["state"],
                              f"checkpoint {step} in {self.directory}")
        return (step, restored["state"], restored["curriculum"],
                self._readable_meta(step, restored["meta"]))

    @contextlib.contextmanager
    def _reading(self, step: int) -> Iterator[None]:
        """Any failure to read a step's files becomes ``CorruptCheckpoint`` naming it (a
        refusal of ours, ``CheckpointError``, passes as it is)."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:
            raise CorruptCheckpoint(f"checkpoint {step} in {self.directory} cannot be read "
                                    f"({first_line(err)})") from None

    def _check_tree(self, step: int, abstract: Any) -> None:
        check_tree(self._state_tree(step), abstract, f"{self.directory}/{step}")

    def _state_tree(self, step: int, items: Any = None) -> Any:
        """The state's stored tree (its array index) of ``step`` (``items``: the step's item
        metadata, when already read). Orbax gives an empty one when the state's index file is
        gone (damaged files, or a step a trainer's retention is deleting under this reader):
        ``CorruptCheckpoint`` then, not a checkpoint of another network."""
        tree = (self._manager.item_metadata(step) if items is None else items)["state"]
        tree = getattr(tree, "tree", tree)
        if not jax.tree_util.tree_leaves(tree):
            raise CorruptCheckpoint(f"checkpoint {step} in {self.directory} cannot be read "
                                    f"(its state's array index is missing{self._going(step)})")
        return tree

    def _going(self, step: int) -> str:
        """A note for a step whose commit file (Orbax's ``_CHECKPOINT_METADATA``, written before
        a save's final rename, deleted first by a removal) is gone: it is being deleted, or
        its deletion was interrupted."""
        if (self.directory / str(step) / STEP_COMMIT_FILE).exists():
            return ""
        return "; its commit file is gone too: being deleted, or a deletion was interrupted"


@contextlib.contextmanager
def _quiet_if(failed: bool) -> Iterator[None]:
    """After a failed save, closing must not raise the same failure again."""
    try:
        yield
    except Exception:
        if not failed:
            raise


def _listing(read: Callable[[], T]) -> T:
    """``read()``, again if a step folder vanished while Orbax listed the folder: it stats each
    step it found, and a trainer's retention can delete one in between (a reader beside a
    running trainer). A few times at most; then the error stands."""
    for attempt in range(_LISTINGS):
        try:
            return read()
        except FileNotFoundError:
            if attempt == _LISTINGS - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


_LISTINGS = 10  # listings of a folder that a trainer keeps changing
STEP_COMMIT_FILE = "_CHECKPOINT_METADATA"  # Orbax's per-step metadata: see ``_going``


def open_checkpoints(run_dir: Path, keep_last: int) -> Checkpoints:
    """The checkpoints of run directory ``run_dir`` (``RUN_DIR/checkpoints/``)."""
    return Checkpoints(run_dir / CHECKPOINT_DIR, keep_last=keep_last)
