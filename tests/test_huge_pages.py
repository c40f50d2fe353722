"""The commands that run XLA start again once with glibc's huge-page tunable
(``jax_reset.parallel.huge_pages``): where the kernel's transparent huge pages are in "madvise"
mode, a large ``malloc`` of the new process is backed by 2 MiB pages, and without the module's
new start (or with ``JAX_RESET_HUGE_PAGES=0``) it is not. In the other modes nothing restarts."""

from __future__ import annotations

import os
import subprocess
import sys

from jax_reset.parallel import huge_pages
from tests.conftest import REPO

# Mallocs 64 MiB, touches it, prints the PID seen before and after the restart, the tunables,
# and the kB of huge pages backing the block (its mapping's AnonHugePages in /proc/self/smaps).
PROBE = r"""
import ctypes, os, sys
before = os.environ.get("PROBE_PID") or str(os.getpid())
os.environ["PROBE_PID"] = before
from jax_reset.parallel.huge_pages import restart_with_huge_pages
restart_with_huge_pages()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
n = 64 << 20
p = libc.malloc(n)
ctypes.memset(p, 1, n)
kb, inside = 0, False
for line in open("/proc/self/smaps"):
    head = line.split()[0]
    if "-" in head and not head.endswith(":"):
        lo, hi = (int(x, 16) for x in head.split("-"))
        inside = lo <= p < hi
    elif inside and head == "AnonHugePages:":
        kb = int(line.split()[1])
print(before, os.getpid(), os.environ.get("GLIBC_TUNABLES"), kb)
"""


def _probe(**env: str) -> tuple[str, str, str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, **env}, check=True).stdout.split()
    return out[0], out[1], out[2], int(out[3])


def test_a_restarted_command_gets_huge_pages_and_an_opted_out_one_does_not() -> None:
    pid_before, pid_after, tunables, huge_kb = _probe()
    assert pid_before == pid_after  # replaced in place, not a child
    if huge_pages.wanted({}, huge_pages._thp_mode()):
        assert tunables == huge_pages.TUNABLE
        assert huge_kb >= 32 << 10, huge_kb  # most of the 64 MiB on 2 MiB pages
        _, _, tunables_off, huge_kb_off = _probe(JAX_RESET_HUGE_PAGES="0")
        assert tunables_off == "None" and huge_kb_off == 0
    else:  # no huge pages to ask for here (or they come anyway): no new start
        assert tunables == "None"


def test_when_a_new_start_is_wanted() -> None:
    linux_glibc = sys.platform == "linux" and huge_pages._glibc_at_least(2, 35)
    assert huge_pages.wanted({}, "madvise") == linux_glibc
    assert not huge_pages.wanted({}, "always")  # every process has them already
    assert not huge_pages.wanted({}, "never")
    assert not huge_pages.wanted({}, "")  # no mode known: not Linux, or no THP
    assert not huge_pages.wanted({"JAX_RESET_HUGE_PAGES": "0"}, "madvise")
    # Set already, by the new start itself or by the user: never a second restart.
    assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise")
    assert not huge_pages.wanted(
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}, "madvise")


def test_the_restart_keeps_other_tunables() -> None:
    if not huge_pages.wanted({}, huge_pages._thp_mode()):
        assert _probe(GLIBC_TUNABLES="glibc.malloc.arena_max=4")[2] == "glibc.malloc.arena_max=4"
        return
    assert _probe(GLIBC_TUNABLES="glibc.malloc.arena_max=4")[2] == (
        "glibc.malloc.arena_max=4:" + huge_pages.TUNABLE)


def test_glibc_version_parsing(monkeypatch) -> None:
    monkeypatch.setattr(huge_pages.platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert huge_pages._glibc_at_least(2, 35)
    monkeypatch.setattr(huge_pages.platform, "libc_ver", lambda: ("glibc", "2.31"))
    assert not huge_pages._glibc_at_least(2, 35)
    monkeypatch.setattr(huge_pages.platform, "libc_ver", lambda: ("", ""))
    assert not huge_pages._glibc_at_least(2, 35)


def test_the_commands_that_run_xla_restart_first() -> None:
    """train, evaluate and bench call the restart in their ``__main__`` block, before anything
    that imports JAX (the restart would then pay for JAX's import twice)."""
    import ast

    for rel in ("jax_reset/train.py", "jax_reset/evaluate.py", "jax_reset/bench/__main__.py"):
        tree = ast.parse((REPO / rel).read_text())
        calls = [i for i, node in enumerate(tree.body) if isinstance(node, ast.If)
                 and "restart_with_huge_pages" in ast.unparse(node)]
        assert calls, f"{rel} does not restart"
        heavy = [i for i, node in enumerate(tree.body) if isinstance(node, ast.ImportFrom)
                 and node.module and node.module.split(".")[1:2] in (["evaluation"], ["run"],
                                                                       ["training"])
                 and "stop" not in node.module]
        assert all(i > calls[0] for i in heavy), rel
