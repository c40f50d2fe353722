"""`python -m jax_reset.plot --run-dir DIR`: PNG plots of a run's ``metrics.jsonl``.

With ``--run-dir`` repeated and ``--out DIR``: the runs compared, one curve each, on the score
from the game's start and the curriculum's position (``compare_*.png``; a no-demo run, always
at the game's start, only on the score).

Writes into ``DIR/plots/``: the curriculum's maximum starting point against agent steps and
against training time (the gaps between the sittings of a resumed run left out), the success
rate at the starting point, the mean episode score, the score of the games played from the
game's start during training (``[eval]``; also against training time), the learning rate in
force (it changes with the stall handling), the approximate KL of each update (a policy
collapse stands out), the agent steps per second, and with ``ppo.imitation_windows`` the share
of the demo's imitated steps where the policy's likeliest action is the demo's. A run of
several demos gets one curve per demo (its ``.../demo<i>/...`` keys) where the trainer logs the
metric per demo. Also
prints, and writes as ``milestones.json``, when the curriculum passed each frame where the demo
scores (``jax_reset.milestones``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jax_reset import curriculum as cur
from jax_reset import demos, metrics, milestones
from jax_reset.curriculum import demo_key
from jax_reset.run import disk
from jax_reset.run.layout import CONFIG_NAME

# (file name, y key, y label); x is agent steps, and also wall time for the curriculum.
PLOTS = (
    ("starting_point", cur.MAX_STARTING_POINT, "max starting point (demo frame)"),
    ("success_rate", metrics.SUCCESS_AT_SP, "success rate at the starting point"),
    ("score", metrics.EPISODE_SCORE, "mean episode score"),
    ("eval_score", metrics.EVAL_SCORE, "score from the game's start (evaluation mean)"),
    ("learning_rate", metrics.LEARNING_RATE, "learning rate in force"),
    ("approx_kl", metrics.APPROX_KL, "approximate KL of an update (log scale)"),
    ("steps_per_s", metrics.AGENT_STEPS_PER_S, "agent steps per second"),
    # With ppo.imitation_windows only.
    ("imitation_accuracy", metrics.IMITATION_ACCURACY,
     "demo steps where the policy's likeliest action is the demo's"),
)
# Plots also drawn against training time: the two curves a reader compares runs by.
TIME_TOO = {"starting_point", "eval_score"}
# Plots whose values span decades: a policy collapse shows as an update's KL ~100x the usual.
LOG_Y = {"approx_kl"}
# The trainer logs the unix time of each line; the plots show training seconds since the first
# line, where a step in time of over GAP_FACTOR times the median step between two lines (a run
# stopped and resumed later) counts as one median step.
X_STEPS, X_TIME, UNIX_TIME = metrics.AGENT_STEPS, "training_time_s", metrics.TIME
GAP_FACTOR = 10.0
REPO_ROOT = Path(__file__).resolve().parents[1]


class PlotError(RuntimeError):
    """The run directory has nothing to plot; the message is one line."""


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / metrics.JSONL_NAME
    if not path.is_file():
        raise PlotError(f"{run_dir}: no {metrics.JSONL_NAME} (is this a run directory?)")
    rows = metrics.read_jsonl(path)  # a line cut by a crash mid-write is skipped
    if not rows:
        raise PlotError(f"{path}: no metrics yet")
    timed = [r for r in rows if UNIX_TIME in r]
    for r, seconds in zip(timed, training_seconds([r[UNIX_TIME] for r in timed]), strict=True):
        r[X_TIME] = seconds
    return rows


def training_seconds(unix_times: list[float]) -> np.ndarray:
    """Seconds of training at each line since the first: the steps between lines, where one
    over ``GAP_FACTOR`` x their median (the time a run stood stopped between two sittings)
    counts as the median. [n] -> [n]."""
    if not unix_times:
        return np.zeros(0)
    steps = np.diff(np.asarray(unix_times, float))
    if len(steps):
        typical = float(np.median(steps))
        steps = np.where(steps > GAP_FACTOR * max(typical, 1e-9), typical, steps)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _series(rows: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r[x], r[y]) for r in rows if x in r and y in r and r[y] is not None]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pairs, strict=True)
    return np.asarray(xs, float), np.asarray(ys, float)


def _curves(rows: list[dict], x: str, y: str) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(label, xs, ys) per demo when ``y`` is logged per demo (``demo_key``), else the one
    series of ``y`` (label None); empty series left out."""
    demos = 0
    while any(demo_key(y, demos) in r for r in rows):
        demos += 1
    if demos:
        curves = [(f"demo {d}", *_series(rows, x, demo_key(y, d))) for d in range(demos)]
    else:
        curves = [(None, *_series(rows, x, y))]
    return [c for c in curves if len(c[1])]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None,
             rows: list[dict] | None = None) -> list[Path]:
    """Writes the PNGs and returns their paths (a metric never logged is skipped); ``rows``:
    the run's ``read_metrics`` when already read. Raises ``PlotError`` (one line) when there is
    nothing to plot, ``disk.WriteError`` when ``out_dir`` takes no file."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir) if rows is None else rows
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    _check_writable(out)  # before matplotlib's seconds of start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, key, label in PLOTS:
        xs = [(X_STEPS, "agent steps")]
        if name in TIME_TOO:
            xs.append((X_TIME, "training time (s; gaps between sittings left out)"))
        series = [(x, xlabel, _curves(rows, x, key)) for x, xlabel in xs]
        series = [s for s in series if s[2]]
        if not series:
            continue
        fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4), squeeze=False)
        for ax, (_, xlabel, curves) in zip(axes[0], series, strict=True):
            for curve, xv, yv in curves:
                ax.plot(xv, yv, marker="." if len(xv) < 50 else None, label=curve)
            if curves[0][0] is not None:
                ax.legend()
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            # a log axis needs a positive value (one update's KL can be 0: matplotlib warns)
            if name in LOG_Y and any(v > 0 for _, _, yv in curves for v in yv):
                ax.set_yscale("log")
                ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            else:
                ax.ticklabel_format(axis="both", style="plain", useOffset=False)
        fig.suptitle(f"{run_dir.name}: {label}")
        fig.tight_layout()
        written.append(_save_figure(fig, out / f"{name}.png"))
    if not written:
        raise PlotError(f"{run_dir}/{metrics.JSONL_NAME} has none of the plotted metrics "
                        f"({', '.join(k for _, k, _ in PLOTS)})")
    return written


# What several runs are compared by, side by side on one axes each (``--run-dir`` repeated).
COMPARED = (("eval_score", metrics.EVAL_SCORE, "score from the game's start (evaluation mean)"),
            ("starting_point", cur.MAX_STARTING_POINT, "max starting point (demo frame)"))


def compared_curves(runs: list[tuple[str, list[dict]]], key: str,
                    ) -> list[tuple[str, tuple[np.ndarray, np.ndarray],
                                    tuple[np.ndarray, np.ndarray]]]:
    """``(run, (agent steps, ys), (training seconds, ys))`` of each run that logged ``key``.

    On the starting point a run whose every value is 0 is left out: it never started anywhere
    but the game's start (a no-demo baseline), and its flat line at 0 would read as a
    curriculum that reached the start at once."""
    curves = [(run, _series(rows, X_STEPS, key), _series(rows, X_TIME, key))
              for run, rows in runs]
    return [c for c in curves if len(c[1][0])
            and not (key == cur.MAX_STARTING_POINT and not np.any(c[1][1]))]


def compare_runs(run_dirs: list[Path], out: Path) -> list[Path]:
    """``compare_<name>.png`` in ``out`` for each of ``COMPARED`` that a run logged: one curve
    per run (labelled by its folder's name) against agent steps and against training time
    (``compared_curves``: a no-demo run has no starting-point curve).
    Raises ``PlotError`` when a run has no metrics or none logged the compared ones."""
    runs = [(Path(d).name, read_metrics(Path(d))) for d in run_dirs]
    _check_writable(out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, key, label in COMPARED:
        curves = compared_curves(runs, key)
        if not curves:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
        for ax, (index, xlabel) in zip(axes[0], ((1, "agent steps"),
                                                 (2, "training time (s)")), strict=True):
            for run, *series in curves:
                xv, yv = series[index - 1]
                ax.plot(xv, yv, marker="." if len(xv) < 50 else None, label=run)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
            ax.ticklabel_format(axis="both", style="plain", useOffset=False)
        fig.suptitle(label)
        fig.tight_layout()
        written.append(_save_figure(fig, out / f"compare_{name}.png"))
    if not written:
        raise PlotError("none of the runs logged "
                        f"{' or '.join(k for _, k, _ in COMPARED)}")
    return written


def run_milestones(run_dir: str | Path,
                   rows: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """``milestones.for_run`` per demo of the run (named in its config file) over its metrics
    ``rows`` (``read_metrics``), and a line for each demo that could not be read (then left
    out)."""
    run_dir = Path(run_dir)
    try:
        demo = json.loads((run_dir / CONFIG_NAME).read_text())["demo"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, [f"{run_dir}/{CONFIG_NAME}: no demo named; milestones skipped"]
    paths = demo.get("demo_paths") or [demo.get("demo_path")]
    per_demo, notes = {}, []
    for index, name in enumerate(p for p in paths if p):
        path = Path(name)
        if not path.exists() and (REPO_ROOT / path).exists():
            path = REPO_ROOT / path  # a relative path of a run started from the repository
        try:
            rewards = demos.load(path, check=False).rewards
        except (OSError, demos.DemoError) as err:
            notes.append(f"milestones of {name} skipped: {err}")
            continue
        key = demo_key(cur.MAX_STARTING_POINT, index)
        key = key if any(key in r for r in rows) else cur.MAX_STARTING_POINT
        per_demo[shown_path(name)] = milestones.for_run(rows, rewards, X_TIME, key)
    return per_demo, notes


def shown_path(name: str) -> str:
    """A demo's name in the milestones (and an exported config): relative to the repository
    when it lies inside it (a run saves its demo paths absolute; published milestones stay free
    of this machine's folders), else as the run saved it."""
    path = Path(name)
    if path.is_absolute() and path.resolve().is_relative_to(REPO_ROOT):
        return str(path.resolve().relative_to(REPO_ROOT))
    return name


def _save_figure(fig: Any, path: Path) -> Path:
    """Writes ``fig`` as a PNG at ``path`` and closes it; a refused write is one line."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=100)
    except OSError as err:  # a full disk fails here, after the probe's empty file passed
        raise _write_error(err, path) from None
    finally:
        plt.close(fig)
    return path


def _write_error(err: OSError, where: Path) -> disk.WriteError:
    """The one line for a plot (or its milestones) that the file system refused."""
    kind = disk.problem(err) or err.strerror or type(err).__name__
    return disk.WriteError(f"{kind} writing {err.filename or where} (choose another folder "
                           "for the plots with --out)")


def _check_writable(out: Path) -> None:
    probe = out / f".write-check-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as err:
        raise _write_error(err, out) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jax_reset.plot", description=__doc__)
    parser.add_argument("--run-dir", required=True, action="append",
                        help="a training run directory; repeat it to compare runs (a demo run "
                             "and its no-demo baseline, seeds) on shared axes")
    parser.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots; required "
                                      "with several runs)")
    args = parser.parse_args(argv)
    if len(args.run_dir) > 1:
        if not args.out:
            print("error: comparing runs needs --out (where the comparison goes)",
                  file=sys.stderr)
            return 2
        try:
            for path in compare_runs([Path(d) for d in args.run_dir], Path(args.out)):
                print(path)
        except PlotError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except disk.WriteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    args.run_dir = args.run_dir[0]
    try:
        rows = read_metrics(Path(args.run_dir))
        written = plot_run(args.run_dir, args.out, rows)
        for path in written:
            print(path)
        per_demo, notes = run_milestones(args.run_dir, rows)
        for note in notes:
            print(note, file=sys.stderr)
        for path, passed in per_demo.items():
            print(f"\n{path}: agent steps (training time) until the maximum starting point is "
                  "below each frame where the demo scores")
            print(milestones.table(passed))
        if per_demo:
            out = written[0].parent / milestones.JSON_NAME
            try:
                out.write_text(json.dumps(per_demo, indent=1) + "\n")
            except OSError as err:
                raise _write_error(err, out) from None
            print(out)
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except disk.WriteError as err:  # the run directory is read-only, full, not ours
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
