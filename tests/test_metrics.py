"""Metrics files on disk (JSON lines and real TensorBoard events) and the terminal display."""

from __future__ import annotations

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


def test_resume_drops_lines_after_the_checkpoint(tmp_path: Path) -> None:
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
