"""Metrics files on disk (JSON lines and real TensorBoard events) and the terminal display."""

from __future__ import annotations

import contextlib
import io
import json
import struct
from pathlib import Path

import pytest
from rich.console import Console
from tensorboardX.proto import event_pb2

from jax_reset.metrics import MetricsWriter, ProgressDisplay, read_jsonl


def tb_scalars(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the run's event files (TFRecord framing)."""
    out = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.append((event.step, v.tag, v.simple_value))
    return out


def test_writes_jsonl_and_tensorboard(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as w:
        w.write(1, {"train/loss": 0.5, "curriculum/max_starting_point": 900,
                    "env/episode_score": float("nan")})
        w.write(2, {"train/loss": 0.25, "timing/learner_s": 1.5})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2]
    assert rows[0]["train/loss"] == 0.5 and rows[0]["env/episode_score"] is None
    scalars = tb_scalars(tmp_path)
    assert (1, "train/loss", 0.5) in scalars and (2, "timing/learner_s", 1.5) in scalars
    assert not any(tag == "env/episode_score" for _, tag, _ in scalars)


def test_rejects_keys_outside_the_namespaces(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False) as w, pytest.raises(ValueError, match="train/"):
        w.write(1, {"loss": 1.0})


def test_resume_sets_lines_after_the_checkpoint_aside(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        for u in range(1, 6):
            w.write(u, {"train/loss": float(u)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"update": 6, "train/lo')  # a crash in the middle of a line
    with MetricsWriter(tmp_path, resume_update=3, tensorboard=False) as w:
        w.write(4, {"train/loss": 40.0})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["update"], r["train/loss"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 40)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    # The lines taken out are kept whole (the torn one is not a line); a second rollback appends.
    aside = read_jsonl(tmp_path / "metrics-set-aside.jsonl")
    assert [(r["update"], r["train/loss"]) for r in aside] == [(4, 4), (5, 5)]
    with MetricsWriter(tmp_path, resume_update=2, tensorboard=False) as w:
        assert w.set_aside_lines == 2
    aside = read_jsonl(tmp_path / "metrics-set-aside.jsonl")
    assert [r["update"] for r in aside] == [4, 5, 3, 4]
    assert [r["update"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    with MetricsWriter(tmp_path, resume_update=2, tensorboard=False) as w:
        assert w.set_aside_lines == 0  # nothing later: nothing moved, the file unchanged
    assert len(read_jsonl(tmp_path / "metrics-set-aside.jsonl")) == 4


def test_resume_removes_a_torn_last_line_with_nothing_later(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        w.write(1, {"train/loss": 1.0})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"update": 2, "train/lo')
    with MetricsWriter(tmp_path, resume_update=1, tensorboard=False) as w:
        w.write(2, {"train/loss": 2.0})
    assert [r["update"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert not (tmp_path / "metrics-set-aside.jsonl").exists()


def test_progress_display_shows_the_curriculum() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    metrics = {"curriculum/max_starting_point": 15000, "curriculum/success_at_sp": 0.25,
               "train/agent_steps_per_s": 1234.0, "env/episode_score": 2.0}
    with ProgressDisplay(100, 20001, start_update=10, console=console) as display:
        display.update(11, metrics)
    out = buf.getvalue()
    assert "curriculum" in out and "starting point 15,000 of 20,000" in out
    assert "1,234 steps/s" in out
    plain = io.StringIO()
    display = ProgressDisplay(100, 20001, enabled=False, console=Console(file=plain))
    display.update(12, metrics)
    assert plain.getvalue().startswith("update 12/100  starting point 15,000 of 20,000")


def test_progress_display_keeps_every_fact_in_80_columns() -> None:
    """The live view in an 80-column terminal: the facts wrap under a narrower bar instead of
    being cut with an ellipsis."""
    import re

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80, color_system=None)
    metrics = {"curriculum/max_starting_point": 15000, "curriculum/success_at_sp": 0.25,
               "train/agent_steps_per_s": 1234.0, "env/episode_score": -20.5}
    with ProgressDisplay(5000, 22860, start_update=1200, console=console) as display:
        display.update(1234, metrics)
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue()).replace("\r", "\n")
    last = [line for line in lines.split("\n") if line.strip()][-4:]  # the final frame
    assert all(len(line) <= 80 and "\u2026" not in line for line in last), last
    words = " ".join(" ".join(last).split())
    for fact in ("update 1,234 of 5,000", "1,234 steps/s", "score -20.5",
                 "starting point 15,000 of 22,859", "success 0.25", "frames/h)"):
        assert fact in words, (fact, last)


def test_progress_display_shows_times_and_the_curriculum_rate() -> None:
    """Row 11: update N of total, elapsed, ETA (from this session's pace after its first
    update), frames moved and frames per hour, live and in the line output alike."""
    now = [100.0]
    metrics = {"curriculum/max_starting_point": 19000, "train/agent_steps_per_s": 10.0}
    plain = io.StringIO()
    display = ProgressDisplay(1000, 20001, start_update=10, enabled=False,
                              console=Console(file=plain), start_point=19600,
                              clock=lambda: now[0])
    now[0] = 160.0  # the first update ends 60 s in (compiling)
    display.update(11, metrics)
    now[0] = 460.0  # 10 more updates, 30 s each: 979 left take 29,370 s
    display.update(21, metrics)
    first, second = plain.getvalue().splitlines()
    assert "ETA -" in first and "elapsed 0:01:00" in first
    assert second.startswith("update 21/1000  starting point 19,000 of 20,000")
    assert "moved 600 frames (6,000 frames/h)" in second  # 600 frames in 360 s
    assert "elapsed 0:06:00  ETA 8:09:30" in second
    live = io.StringIO()
    console = Console(file=live, force_terminal=True, width=200)
    now[0] = 100.0
    with ProgressDisplay(1000, 20001, start_update=10, console=console, start_point=19600,
                         clock=lambda: now[0]) as display:
        display.update(11, metrics)
        now[0] = 400.0
        display.update(21, metrics)
    out = live.getvalue()
    assert "update 21 of 1,000" in out and "ETA 8:09:30" in out
    assert "moved 600 frames (7,200 frames/h)" in out  # 600 frames in 300 s


def test_progress_display_shows_the_last_score_from_the_start_and_a_bounded_eta() -> None:
    """A run that stops at a target score may end before its last update: "ETA <="; the last
    evaluation's score from the game's start stays on every line after it, with its update."""
    now = [0.0]
    plain = io.StringIO()
    display = ProgressDisplay(100, 20001, enabled=False, console=Console(file=plain),
                              clock=lambda: now[0], may_stop_early=True)
    base = {"curriculum/max_starting_point": 0}
    for update, extra in ((1, {}), (2, {"eval/score_mean": -3.25}), (3, {})):
        now[0] += 10.0
        display.update(update, {**base, **extra})
    first, second, third = plain.getvalue().splitlines()
    assert "ETA <= -" in first and "from start" not in first
    assert "ETA <= 0:16:20" in second  # 98 updates left at 10 s each
    assert "from start -3.2 @2" in second
    assert "from start -3.2 @2" in third


def test_a_run_without_the_demo_shows_no_curriculum() -> None:
    """The no-demo baseline never starts from a demo state: its display has no curriculum bar
    and no starting point or frames moved (which would only say 0), live or line by line."""
    metrics = {"curriculum/max_starting_point": 0, "curriculum/success_at_sp": 0.0,
               "train/agent_steps_per_s": 900.0, "env/episode_score": -20.0}
    plain = io.StringIO()
    display = ProgressDisplay(100, 22869, enabled=False, console=Console(file=plain),
                              start_point=0, curriculum=False)
    display.update(1, metrics)
    line = plain.getvalue()
    assert line.startswith("update 1/100  elapsed ") and "900 steps/s" in line, line
    assert "starting point" not in line and "moved" not in line and "success" not in line
    live = io.StringIO()
    console = Console(file=live, force_terminal=True, width=120)
    with ProgressDisplay(100, 22869, console=console, start_point=0,
                         curriculum=False) as display:
        display.update(1, metrics)
    out = live.getvalue()
    assert "update 1 of 100" in out and "900 steps/s" in out
    assert "curriculum" not in out and "starting point" not in out


def test_a_dead_tensorboard_writer_is_one_error_not_a_hang(tmp_path: Path) -> None:
    """TensorBoard's writer thread dies on a full file system (here only ``tb/`` is full): the
    next writes raise ``disk.WriteError`` naming ``tb/`` instead of blocking on its queue, and
    closing neither blocks nor flushes into the full disk again."""
    import threading

    from jax_reset.run import disk
    from tests.helpers import mounted

    with mounted(tmp_path / "tb", "size=64k") as tb:
        (tb / "filler").write_bytes(b"\0" * 60_000)  # room for the event file's header only
        outcome: dict[str, object] = {}

        def log() -> None:
            writer = MetricsWriter(tmp_path)
            try:
                for u in range(1, 100_000):
                    writer.write(u, {f"train/k{i}": float(u) for i in range(40)})
            except Exception as err:  # the one error, whichever write meets it
                outcome["error"] = err
            finally:
                with contextlib.suppress(OSError):
                    writer.close()
                outcome["closed"] = True

        thread = threading.Thread(target=log, daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the writer blocked on a full disk"
        err = outcome.get("error")
        assert outcome.get("closed") and err is not None
        line = disk.one_line(err, tmp_path)
        assert line is not None and line.startswith(f"disk full writing {tb}"), repr(err)



# A trainer's metrics writer whose TensorBoard thread is held off the disk (a slow disk: the
# test holds the lock the thread takes for each event) until the queue is full, then let go
# onto a full file system: its error, one line, then a clean exit.
_FULL_QUEUE_THEN_DEAD = """
import sys, threading, time
from pathlib import Path
from jax_reset import metrics
from jax_reset.run import disk
run_dir = Path(sys.argv[1])
writer = metrics.MetricsWriter(run_dir)
slow_disk = writer._tb.file_writer.event_writer._ev_writer._lock
slow_disk.acquire()
outcome = {}
def log():
    try:
        for u in range(1, 100_000):
            writer.write(u, {f"train/k{i}": float(u) for i in range(40)})
    except Exception as err:
        outcome["error"] = err
thread = threading.Thread(target=log, daemon=True)
thread.start()
queue = writer._tb.file_writer.event_writer._event_queue
while queue.qsize() < metrics._TB_QUEUE - 40 and thread.is_alive():
    time.sleep(0.01)
print("queue", queue.qsize(), flush=True)
slow_disk.release()
thread.join()
writer.close()
print(disk.one_line(outcome["error"], run_dir), flush=True)
"""


def test_a_tensorboard_writer_that_dies_with_a_full_queue_is_not_a_hang(tmp_path: Path) -> None:
    """TensorBoard's thread falls behind until its queue is full, then dies on a full file
    system: the trainer's next write raises the disk-full error instead of blocking for good
    on a put into the full queue (a hang seen in CI under load), and the process exits instead
    of waiting at exit for the queue's feeder thread, stuck on a pipe nobody reads."""
    import subprocess
    import sys

    from jax_reset import metrics as metrics_module
    from tests.helpers import mounted

    with mounted(tmp_path / "tb", "size=64k") as tb:
        (tb / "filler").write_bytes(b"\0" * 60_000)
        try:
            done = subprocess.run([sys.executable, "-c", _FULL_QUEUE_THEN_DEAD, str(tmp_path)],
                                  capture_output=True, text=True, timeout=90)
        except subprocess.TimeoutExpired as hung:
            raise AssertionError(f"hung: {hung.stdout!r} {hung.stderr!r}") from None
    assert done.returncode == 0, done.stderr[-2000:]
    queued, line = done.stdout.splitlines()
    assert int(queued.split()[1]) >= metrics_module._TB_QUEUE - 40
    assert line.startswith(f"disk full writing {tb}"), done.stdout
