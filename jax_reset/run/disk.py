"""Writing into a run directory: checks before JAX starts, and one line for a write that failed.

A full disk, a read-only file system or a denied permission is an environment problem, not a
bug: the commands say so in one line (``error: disk full writing <path>; last checkpoint: <N>``)
and exit 1, and the last complete checkpoint stays as it was. What can be checked before the
slow start-up (JAX, the environment pool) is checked then: that the run directory takes a file,
and on a resume that its file system has room for one more checkpoint of the size the last one
took. Anything the checks cannot foresee (the disk filling up during the run) is recognised
where it surfaces: an ``OSError`` with its ``errno``, or Orbax's and TensorStore's wrapped
errors, which carry the OS's words (``RESOURCE_EXHAUSTED``, "No space left on device").

Nothing here imports JAX.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from jax_reset.run.layout import CHECKPOINT_DIR

DISK_FULL = "disk full"
READ_ONLY = "read-only file system"
DENIED = "permission denied"
_ERRNOS = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY,
           errno.EACCES: DENIED, errno.EPERM: DENIED}
# How the same errors read once TensorStore or Orbax has wrapped them in a ValueError.
_WORDS = (("No space left on device", DISK_FULL), ("RESOURCE_EXHAUSTED", DISK_FULL),
          ("Disk quota exceeded", DISK_FULL), ("Read-only file system", READ_ONLY),
          ("Permission denied", DENIED), ("PERMISSION_DENIED", DENIED))


class WriteError(RuntimeError):
    """A write into the run directory failed for a reason of its file system; one line."""


def problem(err: BaseException | None) -> str | None:
    """"disk full", "read-only file system" or "permission denied" when ``err``, or an error
    it was raised from or during, is one; None otherwise."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _ERRNOS:
            return _ERRNOS[err.errno]
        if isinstance(err, WriteError):
            return str(err).split(" writing ")[0]
        text = str(err)
        for words, kind in _WORDS:
            if words in text:
                return kind
        err = err.__cause__ or err.__context__
    return None


def last_checkpoint(run_dir: Path) -> int | None:
    """The newest complete checkpoint in ``run_dir`` (a step folder's name), from the folder
    listing alone: what an error message can name whatever state Orbax was left in."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    try:
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def message(kind: str, path: Path | str, run_dir: Path) -> str:
    """The one line: ``<kind> writing <path>; last checkpoint: <N or none>``."""
    last = last_checkpoint(run_dir)
    return f"{kind} writing {path}; last checkpoint: {'none' if last is None else last}"


def one_line(err: BaseException, run_dir: Path) -> str | None:
    """The line for a failure of the run directory's file system (None for any other error);
    a ``WriteError`` raised on the way (it names the checkpoint) wins over later ones."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, WriteError):
            return str(cur)
        cur = cur.__cause__ or cur.__context__
    kind = problem(err)
    if kind is None:
        return None
    path = getattr(err, "filename", None) or run_dir
    return message(kind, path, run_dir)


def folder_bytes(path: Path) -> int:
    """What the files under ``path`` take on disk: their allocated blocks, not their sizes (a
    checkpoint is many small files, each rounded up to whole blocks; counting sizes let a
    resume pass the check and fail at its first save)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += max(st.st_size, getattr(st, "st_blocks", 0) * 512)
    return total


def check_writable(run_dir: Path, resume: bool) -> None:
    """Creates ``run_dir`` and writes and removes a small file in it; on a resume, also checks
    that its file system has room for one more checkpoint as large as the newest one (Orbax
    writes the new one beside the old ones before retention removes any). Raises
    ``WriteError`` (one line) otherwise. Takes milliseconds."""
    run_dir = Path(run_dir)
    probe = run_dir / f".write-check-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"\0" * 4096)  # a page: an almost full file system refuses it
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        kind = problem(err)
        if kind is None:
            raise
        raise WriteError(message(kind, err.filename or probe, run_dir)) from None
    finally:
        probe.unlink(missing_ok=True)
    last = last_checkpoint(run_dir)
    if not resume or last is None:
        return
    need = folder_bytes(run_dir / CHECKPOINT_DIR / str(last))
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise WriteError(f"{DISK_FULL} writing {run_dir / CHECKPOINT_DIR}: {free / 2**20:.1f} MiB "
                         f"free, a checkpoint of this run takes {need / 2**20:.1f} MiB; last "
                         f"checkpoint: {last}")


class QuietWriteFailures(logging.Filter):
    """Drops Orbax's own ERROR records (each a traceback, logged from its background threads,
    and asyncio's "Task exception was never retrieved" for its write tasks at exit) of a write
    that failed for a file-system reason: the caller reports that failure once.

    ``only_from``: a word the record's source file path must contain (None: any source)."""

    def __init__(self, only_from: str | None = "orbax") -> None:
        super().__init__()
        self.only_from = only_from

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or (
                self.only_from is not None and self.only_from not in record.pathname):
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not (any(words in text for words, _ in _WORDS) or LOOP_CLOSED in text
                    or any(words in text for words in _READ_FAILURES))


# A checkpoint whose files cannot be read fails every array read still under way: the first
# failure is named in one line (``CorruptCheckpoint``) and that checkpoint is passed over; the
# others reach Orbax's and asyncio's loggers (at exit: "Task exception was never retrieved"),
# one traceback each, hundreds of lines. These words mark them.
_READ_FAILURES = ("Encountered error while reading array index", "OUT_OF_RANGE: Error reading",
                  "DATA_LOSS: Error reading")


# Orbax runs each restore on an event loop of its own; when a restore fails (a corrupt
# checkpoint, which the caller names in one line and passes over) a thread of that loop can
# still call into it once it is closed. That race prints a traceback and changes nothing.
LOOP_CLOSED = "Event loop is closed"


def quiet_closed_loop_races() -> None:
    """Leaves out, from threads and from unraisable exceptions (a failed read task collected at
    any time: "Exception ignored in: ..."), the tracebacks of that race and of the other reads of
    a checkpoint already named as unreadable; every other one is printed as before."""
    import sys
    import threading

    def passed_over(exc: BaseException | None) -> bool:
        seen = 0
        while exc is not None and seen < 8:  # the exception and its causes
            text = str(exc)
            if (isinstance(exc, RuntimeError) and text == LOOP_CLOSED) or any(
                    words in text for words in _READ_FAILURES):
                return True
            exc, seen = exc.__cause__ or exc.__context__, seen + 1
        return False

    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if not passed_over(args.exc_value):
            thread_hook(args)

    def on_unraisable(args: object) -> None:
        if not passed_over(getattr(args, "exc_value", None)):
            unraisable_hook(args)

    threading.excepthook = on_thread
    sys.unraisablehook = on_unraisable
