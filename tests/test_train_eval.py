"""Games from the game's start while a run trains (``[eval]``): the ``eval/`` metrics at the
evaluated updates only, every game's score in ``evaluations.jsonl`` agreeing with them, a run
that stops when the score reaches ``eval.stop_score`` from the game's start, and a resume that
sets aside the evaluations logged after its checkpoint."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from jax_reset import metrics as m
from jax_reset.run.checkpoint import Checkpoints
from tests.conftest import (
    run_module,
    run_module_killing_its_emulator,
)


def train(run: Path, *overrides: str):
    """The smoke job with 3 evaluation games on 2 environments, and ``overrides``."""
    return run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(run),
                      "eval.episodes=3", "eval.envs=2", *overrides)


def test_evaluations_during_training_are_logged_with_every_games_score(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = train(run, "train.total_updates=5", "eval.every=2", "train.checkpoint_every=3",
                 "train.keep_last=10")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {r["update"]: r for r in m.read_jsonl(run / m.JSONL_NAME)}
    evaluated = [u for u, r in rows.items() if m.EVAL_SCORE in r]
    assert evaluated == [2, 4, 5]  # every 2 updates, and the run's last
    # Each evaluated update is saved with its score, off the checkpoint grid (3) too: the best
    # evaluated policy is one a run can keep.
    with Checkpoints(run / "checkpoints", read_only=True) as checkpoints:
        assert checkpoints.steps() == [2, 3, 4, 5]
        for step in evaluated:
            assert checkpoints.metrics(step)[m.EVAL_SCORE] == rows[step][m.EVAL_SCORE]
    records = [json.loads(line) for line in (run / m.EVALS_NAME).read_text().splitlines()]
    assert [r["update"] for r in records] == evaluated
    for record in records:
        row = rows[record["update"]]
        scores = record["scores"]
        assert len(scores) == len(record["lengths"]) == 3 == row[m.EVAL_EPISODES]
        # Full games of Pong: one side reaches 21, so no game ends level, and each is long.
        assert all(-21 <= s <= 21 and s != 0 for s in scores), scores
        assert all(n >= 21 * 20 for n in record["lengths"]), record["lengths"]
        assert row[m.EVAL_SCORE] == statistics.mean(scores)
        assert row[m.EVAL_SCORE_MIN] == min(scores) and row[m.EVAL_SCORE_MAX] == max(scores)
        assert record["agent_steps"] == row[m.AGENT_STEPS]
        assert record["protocol"] == "plain" and record["max_starting_points"][0] > 0
    # plot draws the score from the start against agent steps and training time
    plotted = run_module("jax_reset.plot", "--run-dir", str(run))
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    assert (run / "plots" / "eval_score.png").stat().st_size > 0


def tensorboard_images(run_dir: Path) -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, encoded image)]} of every image summary in the run's TensorBoard events
    (TFRecord framing: length, its CRC, the Event, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, bytes]]] = {}
    for path in (run_dir / m.TB_DIR).glob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            length = int.from_bytes(data[pos:pos + 8], "little")
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    found.setdefault(value.tag, []).append(
                        (event.step, value.image.encoded_image_string))
    return found


def test_a_filmed_game_lands_in_the_run_and_in_tensorboard(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = train(run, "train.total_updates=4", "eval.every=2", "eval.video_every=2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [p.name for p in sorted((run / "videos").iterdir())] == ["update_0000004.mp4"]
    rows = {r["update"]: r for r in m.read_jsonl(run / m.JSONL_NAME)}
    assert m.EVAL_VIDEO_SCORE not in rows[2] and -21 <= rows[4][m.EVAL_VIDEO_SCORE] <= 21
    images = tensorboard_images(run)
    assert [step for step, _ in images[m.VIDEO_TAG]] == [4]
    gif = images[m.VIDEO_TAG][0][1]
    assert gif.startswith(b"GIF89a") and len(gif) > 10_000  # an animation of a whole game


def test_a_run_stops_when_the_score_from_the_start_reaches_the_target(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # At the game's start from the first update (curriculum.start_at=0); any Pong score is at
    # least -21, so the first evaluation reaches the target and the run stops one update later.
    done = train(run, "train.total_updates=50", "curriculum.start_at=0", "eval.every=1",
                 "eval.stop_score=-21", "train.checkpoint_every=1", "train.keep_last=1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "reaches eval.stop_score -21: the run stops after the next update" in done.stdout
    rows = m.read_jsonl(run / m.JSONL_NAME)
    assert rows[-1]["update"] == 2
    # Both updates evaluated: each checkpoint carries its evaluation's score, and the one kept
    # beside the newest is the better-scoring (both at the start: of equal ones, the newest).
    scores = {r["update"]: r[m.EVAL_SCORE] for r in rows if m.EVAL_SCORE in r}
    assert sorted(scores) == [1, 2]
    best = max(scores, key=lambda u: (scores[u], u))
    with Checkpoints(run / "checkpoints", read_only=True) as checkpoints:
        assert checkpoints.steps() == sorted({best, 2}) and checkpoints.best_step() == best
        for step in checkpoints.steps():
            assert checkpoints.metrics(step)[m.EVAL_SCORE] == scores[step]
    # Not at the start: the same target does not stop a run.
    other = tmp_path / "other"
    done = train(other, "train.total_updates=3", "eval.every=1", "eval.stop_score=-21")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "eval.stop_score" not in done.stdout
    assert m.read_jsonl(other / m.JSONL_NAME)[-1]["update"] == 3
    # Unless the target counts wherever the curriculum stands: it stops as at the start.
    anywhere = tmp_path / "anywhere"
    done = train(anywhere, "train.total_updates=3", "eval.every=1", "eval.stop_score=-21",
                 "eval.stop_needs_start=false")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "reaches eval.stop_score -21: the run stops after the next update" in done.stdout
    rows = m.read_jsonl(anywhere / m.JSONL_NAME)
    assert rows[-1]["update"] == 2 and rows[-1][m.MAX_STARTING_POINT] > 0


def test_a_resume_sets_aside_the_evaluations_after_its_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for update in (2, 4, 6):
        (run / m.JSONL_NAME).open("a").write(json.dumps({"update": update}) + "\n")
    (run / m.EVALS_NAME).write_text(
        "".join(json.dumps({"update": u, "scores": [u]}) + "\n" for u in (2, 4, 6))
        + '{"update": 8, "sco')  # torn by a crash
    m.MetricsWriter(run, resume_update=4, tensorboard=False).close()
    kept = m.read_jsonl(run / m.EVALS_NAME)
    assert [r["update"] for r in kept] == [2, 4]
    assert [r["update"] for r in m.read_jsonl(run / m.EVALS_SET_ASIDE_NAME)] == [6]
    writer = m.MetricsWriter(run, resume_update=4, tensorboard=False)
    writer.write_evaluation({"update": 6, "scores": [-20.0]})
    writer.close()
    assert [r["scores"] for r in m.read_jsonl(run / m.EVALS_NAME)] == [[2], [4], [-20.0]]


def test_an_emulator_crash_costs_one_evaluation_not_the_run(tmp_path: Path) -> None:
    """The emulator dies (SIGSEGV, as ALE's known crash in some games) during the evaluation at
    update 2: the run goes on, says so in one line, and evaluates update 4 as usual."""
    run = tmp_path / "run"
    done = run_module_killing_its_emulator(
        "jax_reset.train", "--config", "configs/smoke.toml", "--run-dir", str(run),
        "eval.episodes=3", "eval.envs=2", "train.total_updates=4", "eval.every=2",
        kill_within_s=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    skipped = [line for line in output.splitlines() if "evaluation skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("update 2: evaluation skipped: the "
                                                       "emulator process"), output[-3000:]
    assert "killed by SIGSEGV while playing Pong under the plain protocol" in skipped[0]
    rows = {r["update"]: r for r in m.read_jsonl(run / m.JSONL_NAME)}
    assert [u for u, r in rows.items() if m.EVAL_SCORE in r] == [4]
    records = [json.loads(line) for line in (run / m.EVALS_NAME).read_text().splitlines()]
    assert [r["update"] for r in records] == [4] and len(records[0]["scores"]) == 3
