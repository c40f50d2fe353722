"""Large host buffers on transparent huge pages: the commands that run XLA on the host (``train``,
``evaluate``, ``bench``) start again, once, with glibc's ``glibc.malloc.hugetlb=1`` tunable.

Why: XLA:CPU allocates a program's buffers at every call and frees them after it. glibc serves
a block above its mmap threshold (32 MiB at most) with a fresh ``mmap``, which the kernel fills
on first touch one 4 KiB page at a time, and unmaps it at ``free``. The CPU job's update writes
several such blocks per minibatch (the scaled frames alone are 75 MB), so page faults were a
large share of it: on the 2-core CPU writing a new 75 MB array took 30 ms against 3-4 ms to read
one. With the tunable, glibc asks for huge pages on the memory it maps (``madvise``), and the
kernel's "madvise" mode of transparent huge pages (the default of most distributions) backs it
with 2 MiB pages: 512 times fewer faults. The CPU job's update: 0.90 -> 0.73 s
(``docs/benchmarks.md``). The tunable is read once, when the process starts, hence the new start.

It applies only where it can help: Linux, glibc 2.35 or newer (the tunable's first release),
transparent huge pages in "madvise" mode (in "always" mode every process has them already, in
"never" mode nobody does). ``JAX_RESET_HUGE_PAGES=0`` turns it off. Stdlib only: it runs before
anything else is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH_ENV = "JAX_RESET_HUGE_PAGES"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), None if unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _glibc_at_least(major: int, minor: int) -> bool:
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return False
    try:
        have = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return have >= (major, minor)


def wanted(environ: dict[str, str] | os._Environ[str] = os.environ,
           thp_mode: str | None = None) -> bool:
    """Whether this process should start again with the tunable."""
    if environ.get(SWITCH_ENV, "1") == "0" or sys.platform != "linux":
        return False
    if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
        return False  # set already: by this module's new start, or by the user
    mode = _thp_mode() if thp_mode is None else thp_mode
    return mode == "madvise" and _glibc_at_least(2, 35)


def restart_with_huge_pages() -> None:
    """Replace this process (same PID, arguments, environment and open files) by a new start of
    the same command with the tunable set, when ``wanted()``; else return. Call it first thing
    in a ``python -m`` entry point's ``__main__`` block."""
    if not wanted() or not getattr(sys, "orig_argv", None):
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv[0] is the name the interpreter was started by; the executable is its full path.
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
