"""Run metrics: ``metrics.jsonl`` and TensorBoard event files in the run directory, and a live
terminal display with the curriculum's position as a bar from the demo's end to its start.

Keys are namespaced: ``train/`` (losses, KL, clip fraction, explained variance, steps per
second), ``curriculum/`` (starting points, success), ``env/`` (scores, episode lengths),
``timing/`` (the learner's seconds in and waiting on each stage), ``actor/`` (the actor's
seconds per stage and its policy lag), ``eval/``. The keys the trainer writes are the
constants below, and the ``curriculum/`` keys of ``curriculum.summary`` and
``curriculum.stall.summary``, defined in those pure modules. Each JSON line is ``{"update": n,
"time": unix seconds, key: value, ...}``, non-finite values as ``null``.

On resume the writer takes what was logged after the restored checkpoint out of the log (a crash
can leave lines, and a torn last line, beyond it; ``--checkpoint N`` rolls a run back), so the
log reads as one continuous run. Those lines are not lost: they are appended, whole, to
``metrics-set-aside.jsonl`` beside it (the torn line is the only one dropped), as the newer
checkpoints go to ``checkpoints-set-aside/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Column
from tensorboardX import SummaryWriter

from jax_reset.config_tree import atomic_write
from jax_reset.curriculum import MAX_STARTING_POINT
from jax_reset.run import disk

NAMESPACES = ("train/", "curriculum/", "env/", "timing/", "actor/", "eval/")
JSONL_NAME = "metrics.jsonl"
SET_ASIDE_NAME = "metrics-set-aside.jsonl"  # the lines a resume took out of metrics.jsonl
EVALS_NAME = "evaluations.jsonl"  # every evaluation during training, each game's score
EVALS_SET_ASIDE_NAME = "evaluations-set-aside.jsonl"
TB_DIR = "tb"
TIME = "time"  # each line's unix time (not a metric)

# Counters and throughput.
UPDATE = "train/update"
AGENT_STEPS = "train/agent_steps"
FRAMES = "train/frames"
AGENT_STEPS_PER_S = "train/agent_steps_per_s"
# Full games from the game's start during training (``[eval]``): their scores' mean, median,
# min and max, their mean length in agent steps, how many, and the evaluation's seconds.
EVAL_SCORE = "eval/score_mean"
EVAL_SCORE_MEDIAN = "eval/score_median"
EVAL_SCORE_MIN = "eval/score_min"
EVAL_SCORE_MAX = "eval/score_max"
EVAL_LENGTH = "eval/length_mean_agent_steps"
EVAL_EPISODES = "eval/episodes"
EVAL_SECONDS = "eval/seconds"
EVAL_VIDEO_SCORE = "eval/video_score"  # the filmed game's score (``eval.video_every``)
VIDEO_TAG = "eval/video"  # the filmed game in TensorBoard and W&B
# Episodes that ended in the log window, and the rollouts' valid steps.
EPISODES = "env/episodes"
EPISODE_SCORE = "env/episode_score"
EPISODE_FRAMES = "env/episode_frames"
AS_GOOD_AS_DEMO = "env/as_good_as_demo"
# The curriculum (besides curriculum.summary's): the reference's "as_good_as_demo_start".
SUCCESS_AT_SP = "curriculum/success_at_sp"
# The PPO update's (``ppo.update``): means over its optimiser steps, then the batch's
# statistics; keyed by the names the loss and ``ppo.update.prepare`` give them.
LOSS = "train/loss"
POLICY_LOSS = "train/policy_loss"
VALUE_LOSS = "train/value_loss"
ENTROPY = "train/entropy"
L2_LOSS = "train/l2_loss"
APPROX_KL = "train/approx_kl"
KL = "train/kl"
CLIP_FRACTION = "train/clip_fraction"
GRAD_NORM = "train/grad_norm"
EXPLAINED_VARIANCE = "train/explained_variance"
ADVANTAGE_MEAN = "train/advantage_mean"
VALID_FRACTION = "train/valid_fraction"
# Optimiser steps the update applied: epochs x minibatches, fewer when ppo.target_kl stopped it.
SGD_STEPS = "train/sgd_steps"
# With ppo.imitation_windows: the demo-imitation term (-log pi of the demo's actions on windows
# of the demo where the environments start) and the share of those steps where the policy's
# most likely action is the demo's.
IMITATION_LOSS = "train/imitation_loss"
IMITATION_ACCURACY = "train/imitation_accuracy"
UPDATE_METRICS = {
    "loss": LOSS, "policy_loss": POLICY_LOSS, "value_loss": VALUE_LOSS, "entropy": ENTROPY,
    "l2_loss": L2_LOSS, "approx_kl": APPROX_KL, "kl": KL, "clip_fraction": CLIP_FRACTION,
    "grad_norm": GRAD_NORM, "explained_variance": EXPLAINED_VARIANCE,
    "advantage_mean": ADVANTAGE_MEAN, "valid_fraction": VALID_FRACTION,
    "sgd_steps": SGD_STEPS,
    "imitation_loss": IMITATION_LOSS, "imitation_accuracy": IMITATION_ACCURACY,
}
# The values in force (``TrainState.hyperparams``): the configured ones times the stall scale.
LEARNING_RATE = "train/learning_rate"
ENT_COEF = "train/ent_coef"
HYPERPARAMS = {"learning_rate": LEARNING_RATE, "ent_coef": ENT_COEF}  # ppo current_hyperparams
# The learner's seconds per update: updating, and waiting for a rollout.
LEARNER_S = "timing/learner_s"
LEARNER_WAIT_S = "timing/learner_wait_s"
# The actor's, per rollout: acting, warming up, stepping the pool, waiting for parameters or
# for the learner to take the rollout (overlap only), and its parameters' age in updates.
ACTOR_INFERENCE_S = "actor/inference_s"
ACTOR_WARMUP_S = "actor/warmup_s"
ACTOR_ENV_STEP_S = "actor/env_step_s"
ACTOR_WAIT_S = "actor/wait_s"
POLICY_LAG = "actor/policy_lag"


# TensorBoard's event queue (events, one per scalar): far more than one update logs.
_TB_QUEUE = 10_000
# Exceptions that ended a TensorBoard writer thread, until its MetricsWriter reports them.
_THREAD_ERRORS: dict[threading.Thread, BaseException] = {}


def _catch_tensorboard_thread_errors() -> None:
    """Makes a TensorBoard writer thread's failure a value the ``MetricsWriter`` reports in one
    line, instead of a traceback printed from the thread while the trainer blocks on its queue.
    Installed once; every other thread's exception goes to the hook before it."""
    if getattr(threading.excepthook, "_jax_reset_tensorboard", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_EventLoggerThread" and args.exc_value is not None:
            _THREAD_ERRORS[args.thread] = args.exc_value
            return
        previous(args)

    hook._jax_reset_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


@contextlib.contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    """Adds the seconds the ``with`` block takes to ``into[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - t0


def check_keys(metrics: Mapping[str, Any]) -> None:
    for key in metrics:
        if not key.startswith(NAMESPACES) or key.endswith("/"):
            raise ValueError(f"metric key {key!r} must start with one of {', '.join(NAMESPACES)}")


def _scalar(value: Any) -> float | None:
    value = float(value)  # numpy and 0-d jax arrays included
    return value if math.isfinite(value) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of a metrics file (a torn last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _gif_summary(tag: str, mp4: Path, scale_down: int = 3, every: int = 2) -> Any:
    """A TensorBoard image summary holding ``mp4`` as an animated GIF: the frames shrunk
    ``scale_down`` times (``record_episode`` films at 3x), every ``every``-th of them."""
    # Only a run that films needs these (OpenCV's start-up is not free).
    import cv2
    from PIL import Image
    from tensorboardX.proto.summary_pb2 import Summary

    capture = cv2.VideoCapture(str(mp4))
    frames, index, fps = [], 0, capture.get(cv2.CAP_PROP_FPS) or 15.0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % every == 0:
            small = cv2.resize(bgr, (bgr.shape[1] // scale_down, bgr.shape[0] // scale_down),
                               interpolation=cv2.INTER_AREA)
            frames.append(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))
        index += 1
    capture.release()
    if not frames:
        raise RuntimeError(f"{mp4}: no frame could be read back")
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=int(1000 * every / fps), optimize=False)
    image = Summary.Image(height=frames[0].height, width=frames[0].width, colorspace=3,
                          encoded_image_string=buffer.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class MetricsSink(Protocol):
    """Somewhere else the writer sends what it logs (``jax_reset.training.wandb_log``)."""

    def log(self, update: int, values: Mapping[str, float]) -> None:
        """One update's metrics (only the finite ones)."""

    def log_evaluation(self, record: Mapping[str, Any]) -> None:
        """One evaluation's record, as written to ``evaluations.jsonl``."""

    def log_video(self, update: int, path: Path) -> None:
        """A game filmed at ``update`` (an MP4)."""

    def close(self) -> None: ...


def _set_aside_after(path: Path, set_aside: Path, update: int) -> int:
    """Moves the lines of the JSON-lines file ``path`` whose update is after ``update`` to the end
    of ``set_aside`` (a torn last line is dropped); returns how many moved."""
    rows = read_jsonl(path)
    later = [r for r in rows if int(r.get("update", 0)) > update]
    if later:  # appended before the log is rewritten: a crash in between duplicates a
        # line in both files, never loses one (the rewrite always runs: a torn line goes)
        with set_aside.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in later))
            f.flush()
            os.fsync(f.fileno())
    text = "".join(json.dumps(r) + "\n" for r in rows if int(r.get("update", 0)) <= update)
    atomic_write(path, lambda f: f.write(text))
    return len(later)


class MetricsWriter:
    """Writes ``metrics.jsonl`` and TensorBoard events under ``run_dir``.

    Args:
      run_dir: the run directory (must exist).
      resume_update: the update counter of the restored checkpoint; lines logged after it move
        to ``metrics-set-aside.jsonl`` (and TensorBoard purges its later events; the JSON lines
        are the record). None for a fresh run.
      tensorboard: also write TensorBoard event files (``run_dir/tb``).
      sinks: more places every line and evaluation go (``MetricsSink``: Weights & Biases);
        closed with the writer.
    """

    def __init__(self, run_dir: str | Path, resume_update: int | None = None,
                 tensorboard: bool = True, sinks: tuple[MetricsSink, ...] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.sinks = sinks
        self.path = self.run_dir / JSONL_NAME
        # How many lines the resume moved to metrics-set-aside.jsonl (0 for a fresh run).
        self.set_aside_lines = 0
        if resume_update is not None:
            self.set_aside_lines = self._set_aside_after(resume_update)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            purge = None if resume_update is None else resume_update + 1
            # A queue that one update's scalars never fill: with the writer thread checked
            # before each update's writes (``_check_tensorboard``), a put never blocks.
            self._tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=purge, flush_secs=30,
                                     max_queue=_TB_QUEUE)
            _catch_tensorboard_thread_errors()

    def _set_aside_after(self, update: int) -> int:
        if (self.run_dir / EVALS_NAME).exists():
            _set_aside_after(self.run_dir / EVALS_NAME, self.run_dir / EVALS_SET_ASIDE_NAME,
                             update)
        return _set_aside_after(self.path, self.run_dir / SET_ASIDE_NAME, update)

    def write_evaluation(self, row: Mapping[str, Any]) -> None:
        """Appends one evaluation's record (its update, counters and every game's score) to
        ``evaluations.jsonl``, flushed to disk: the per-game data a published result cites."""
        with (self.run_dir / EVALS_NAME).open("a", encoding="utf-8") as f:
            f.write(json.dumps(dict(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for sink in self.sinks:
            sink.log_evaluation(row)

    def write(self, update: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Logs one update's metrics; returns the JSON row written."""
        check_keys(metrics)
        values = {k: _scalar(v) for k, v in metrics.items()}
        row = {"update": int(update), TIME: round(time.time(), 3), **values}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            self._wait_for_tensorboard_room(len(values))
            for key, value in values.items():
                if value is not None:  # an empty mean (no episode ended) is a gap, not a NaN
                    self._tb.add_scalar(key, value, int(update))
        finite = {k: v for k, v in values.items() if v is not None}
        for sink in self.sinks:
            sink.log(int(update), finite)
        return row

    def write_video(self, update: int, path: Path) -> None:
        """A filmed game (an MP4 of ``record_episode``) to TensorBoard, as an animated image at
        the emulator's resolution, every second agent step (TensorBoard plays no MP4), and to
        every sink (W&B takes the MP4 itself)."""
        if self._tb is not None:
            self._wait_for_tensorboard_room(1)
            self._tb._get_file_writer().add_summary(_gif_summary(VIDEO_TAG, path), int(update))
        for sink in self.sinks:
            sink.log_video(int(update), path)

    def _event_writer(self) -> Any:
        """tensorboardX's event writer, which owns the queue and the thread that empties it
        (None if its layout changed: pinned by tests/test_metrics.py)."""
        return getattr(getattr(self._tb, "file_writer", None), "event_writer", None)

    def _tensorboard_thread(self) -> threading.Thread | None:
        """tensorboardX's event-writing thread (None if its layout changed)."""
        return getattr(self._event_writer(), "_worker", None)

    def _wait_for_tensorboard_room(self, events: int) -> None:
        """Returns once TensorBoard's queue has room for ``events`` more events, so that no put
        blocks: a put into a full queue would wait for good if the writer thread died while it
        waited (this is the only producer; the thread only takes events out). Raises like
        ``_check_tensorboard`` once the thread has died."""
        queue = getattr(self._event_writer(), "_event_queue", None)
        while True:
            self._check_tensorboard()
            try:
                if queue is None or queue.qsize() + min(events, _TB_QUEUE) <= _TB_QUEUE:
                    return
            except NotImplementedError:  # no sem_getvalue (macOS): the put may block
                return
            time.sleep(0.01)

    def _check_tensorboard(self) -> None:
        """Raises once TensorBoard's writer thread has died (a full disk, a file system that
        failed): its queue would fill and block the trainer for good. The error is one line
        (``disk.WriteError`` for a file-system failure); the writer is dropped."""
        thread = self._tensorboard_thread()
        if thread is None or thread.is_alive():
            return
        self._drop_tensorboard()  # closing it would block on the dead thread's queue
        err = _THREAD_ERRORS.pop(thread, None)
        kind = disk.problem(err)
        if kind is not None:
            raise disk.WriteError(disk.message(kind, self.run_dir / TB_DIR, self.run_dir))
        raise RuntimeError(f"TensorBoard's event writer stopped: {err!r}")

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._check_tensorboard()
            self._tb.flush()

    def _drop_tensorboard(self) -> None:
        """Forgets a TensorBoard writer that cannot write any more, without the flush its own
        clean-up at exit would try again (a traceback per try on a full disk)."""
        event_writer = self._event_writer()
        if event_writer is not None:
            event_writer._closed = True
            queue = getattr(event_writer, "_event_queue", None)
            if queue is not None:  # events the dead thread never took: without this, exit
                queue.cancel_join_thread()  # waits for good to feed them into its pipe
        self._tb = None

    def close(self) -> None:
        """Closes both writers; a file-system failure on the way is raised once both are
        closed (the first one)."""
        failure: OSError | None = None
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as err:
                failure = err
        if self._tb is not None:
            thread = self._tensorboard_thread()
            try:
                if thread is None or thread.is_alive():
                    self._tb.close()
            except OSError as err:
                failure = failure or err
            finally:
                self._drop_tensorboard()
        sinks, self.sinks = self.sinks, ()
        for sink in sinks:
            sink.close()
        if failure is not None:
            raise failure

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressDisplay:
    """Live terminal view: update N of the total with the elapsed time and an ETA, and the
    curriculum from the demo's end to its start with the frames it moved in this session and
    its rate (frames per hour).

    Without a terminal (CI, a log file) it prints one plain line per ``update`` call instead,
    with the same facts. The ETA is the pace since the first update of this session (which
    includes compiling) applied to the updates left; none until two updates are done.

    Args:
      total_updates: the run's last update; ``num_frames``: the demo's length T.
      start_update, start_point: where this session started (a resume: the checkpoint's update
        and maximum starting point; default 0 and the demo's end).
      enabled: the live view (None: when the console is a terminal).
      clock: seconds, monotonic (tests pass their own).
      may_stop_early: the run stops at a target score if it gets there first
        (``eval.stop_score``): the ETA reads "ETA <=", the time to the last update at most.
      curriculum: False for a run that never starts from a demo state (the no-demo baseline):
        no curriculum bar, starting point or frames moved, which would only say 0.
    """

    def __init__(self, total_updates: int, num_frames: int, start_update: int = 0,
                 enabled: bool | None = None, console: Console | None = None,
                 start_point: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 may_stop_early: bool = False, curriculum: bool = True) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal if enabled is None else enabled
        self.total_updates = total_updates
        self.end = max(num_frames - 1, 1)
        self.start_update = start_update
        self.start_point = self.end if start_point is None else start_point
        self._clock = clock
        self.shows_curriculum = curriculum
        # A target score may end the run first: the ETA is then an upper bound ("ETA <=").
        self._eta_label = "ETA <=" if may_stop_early else "ETA"
        self._t0 = clock()
        self._first: tuple[int, float] | None = None  # (update, time) of the first update seen
        self._eval_score: tuple[int, float] | None = None  # (update, score) of the last eval
        self._progress: Progress | None = None
        self._updates: TaskID | None = None
        self._curriculum: TaskID | None = None
        if self.live:
            # The facts wrap under a narrower bar in a narrow terminal (80 columns cut them).
            self._progress = Progress(
                TextColumn("{task.description:>10}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=40 if self.console.width >= 140 else 16),
                TextColumn("{task.fields[info]}", table_column=Column(ratio=1)),
                console=self.console, refresh_per_second=4, expand=True,
            )
            self._updates = self._progress.add_task(
                "updates", total=total_updates, completed=start_update,
                info=f"update {start_update:,} of {total_updates:,}")
            if curriculum:
                self._curriculum = self._progress.add_task(
                    "curriculum", total=self.end, completed=self.end - self.start_point,
                    info=f"demo end (frame {self.end:,}) -> start (frame 0)")

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def times(self, update: int) -> tuple[float, float | None]:
        """(seconds since the display started, seconds left by the pace of this session's
        updates after its first; None before there is a pace)."""
        now = self._clock()
        if self._first is None:
            self._first = (update, now)
        done, since = update - self._first[0], now - self._first[1]
        eta = since / done * (self.total_updates - update) if done > 0 else None
        return now - self._t0, eta

    def update(self, update: int, metrics: Mapping[str, Any]) -> None:
        elapsed_s, eta_s = self.times(update)
        sp = int(metrics.get(MAX_STARTING_POINT, self.end))
        success = metrics.get(SUCCESS_AT_SP)
        sps = metrics.get(AGENT_STEPS_PER_S)
        score = metrics.get(EPISODE_SCORE)
        moved = self.start_point - sp
        per_hour = moved / elapsed_s * 3600 if elapsed_s > 0 else 0.0
        when = f"elapsed {_clock_time(elapsed_s)}  {self._eta_label} " + (
            _clock_time(eta_s) if eta_s is not None else "-")
        if _finite(metrics.get(EVAL_SCORE)):
            self._eval_score = (update, float(metrics[EVAL_SCORE]))
        parts = [f"{sps:,.0f} steps/s" if _finite(sps) else "",
                 f"score {score:.1f}" if _finite(score) else "",
                 # the last evaluation from the game's start, and its update
                 f"from start {self._eval_score[1]:.1f} @{self._eval_score[0]:,}"
                 if self._eval_score is not None else ""]
        info = "  ".join(p for p in parts if p)
        cur_info = f"starting point {sp:,} of {self.end:,}" + (
            f"  success {success:.2f}" if _finite(success) else "")
        moved_info = f"moved {moved:,} frames ({per_hour:,.0f} frames/h)"
        if self._progress is not None:
            self._progress.update(
                self._updates, completed=update,
                info=f"update {update:,} of {self.total_updates:,}  {when}  {info}".rstrip())
            if self.shows_curriculum:
                self._progress.update(self._curriculum, completed=self.end - sp,
                                      info=f"{cur_info}  {moved_info}")
        else:
            where = f"{cur_info}  {moved_info}  " if self.shows_curriculum else ""
            print(f"update {update}/{self.total_updates}  {where}{when}  {info}".rstrip(),
                  file=self.console.file, flush=True)


def _clock_time(seconds: float) -> str:
    """``H:MM:SS`` (days as hours: a long run's ETA stays readable)."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))
