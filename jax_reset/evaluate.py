"""`python -m jax_reset.evaluate`: play full games from the start under the standard protocols.

Evaluation runs on **EnvPool** (the standard, independent implementation of the Atari pipeline)
with the training preprocessing, from the game's reset with no demo, and with the test-time
policy (logits doubled, no entropy boost):

* ``plain``: one NOOP frame after the reset (FIRE in a game with a fire reset; as training's plain
  reset);
* ``noop``: 1 to 30 NOOP frames after the reset;
* ``sticky``: ALE repeats the previous action with probability 0.25 per emulator frame;
* ``epsilon``: a uniformly random action with probability 0.01 per agent step.

    python -m jax_reset.evaluate --run-dir runs/pong --protocol noop --episodes 32 --json

EnvPool plays in a child process: when the emulator crashes (a segmentation fault, known in
ALE for some games, Montezuma's Revenge among them), that protocol's games are lost with a
one-line error, the other protocols are still played and reported, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
from typing import Any

from jax_reset.parallel.huge_pages import restart_with_huge_pages

if __name__ == "__main__":  # before JAX is imported, so that the new start costs little
    restart_with_huge_pages()  # XLA's host buffers on huge pages (a new start, once)

from jax_reset.evaluation.envs import PROTOCOLS
from jax_reset.evaluation.errors import EmulatorCrash, EvalError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jax_reset.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a training run directory")
    parser.add_argument("--checkpoint", default="latest",
                        help="latest (default), best, or an update number")
    parser.add_argument("--protocol", action="append", choices=PROTOCOLS,
                        help="repeat for several; default: all four")
    parser.add_argument("--episodes", type=int, default=16, help="full games per protocol")
    parser.add_argument("--envs", type=int, default=16, help="games played in parallel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", help="also record one game (the first protocol) to this .mp4")
    parser.add_argument("--score-at-frame", type=int, default=None, metavar="FRAME",
                        help="also report each game's score after FRAME emulator frames "
                             "(default: the run's demo length; 0: off)")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args(argv)
    try:
        return _evaluate(args)
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _number(value: Any) -> str:
    """A table cell: scores and lengths to two decimals at most (-20.97, not -20.9688)."""
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    # Here, not at the top: EnvPool's child process imports this module again (spawn), and
    # with JAX it would take seconds more to start, once per protocol.
    from jax_reset.evaluation.play import load_run, run_protocol
    from jax_reset.evaluation.video import record_episode

    console = Console(stderr=True)
    run = load_run(args.run_dir, args.checkpoint)
    console.print(f"{run.game}: checkpoint {run.step} of {run.run_dir}")
    protocols = args.protocol or list(PROTOCOLS)
    at_frame = run.demo_frames if args.score_at_frame is None else args.score_at_frame
    if at_frame is not None and at_frame < 0:
        raise EvalError(f"--score-at-frame must be at least 0, got {at_frame}")
    at_frame = at_frame or None  # 0: off
    summaries = []
    crashes: list[dict[str, str]] = []  # protocols whose emulator died: reported, not fatal
    for protocol in protocols:
        with Progress(TextColumn(f"{protocol:>8}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True,
                      disable=not console.is_terminal) as progress:  # piped: no blank lines
            task = progress.add_task(protocol, total=args.episodes)
            try:
                result = run_protocol(
                    run.game, run.env, run.policy, protocol, args.episodes,
                    num_envs=args.envs, seed=args.seed, at_frame=at_frame,
                    on_episode=lambda n, t=task: progress.update(t, completed=n))
            except EmulatorCrash as crash:
                print(f"error: {crash}", file=sys.stderr)
                crashes.append({"protocol": protocol, "error": str(crash)})
                continue
        summaries.append(result.summary())
    table = Table(title=f"{run.game}, checkpoint {run.step}: full games from the start")
    columns = {"protocol": "protocol", "episodes": "games", "score_mean": "mean",
               "score_median": "median", "score_min": "min", "score_max": "max",
               "length_mean_agent_steps": "length (steps)"}
    if at_frame is not None:
        columns["score_at_frame_mean"] = f"mean at frame {at_frame:,}"
    for label in columns.values():
        table.add_column(label, justify="right")
    for s in summaries:
        table.add_row(*(_number(s[c]) for c in columns))
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    out: dict[str, Any] = {"run_dir": str(run.run_dir), "checkpoint": run.step,
                           "game": run.game, "protocols": summaries}
    if crashes:
        out["crashed"] = crashes
    if args.video:
        protocol = next((p for p in protocols if p != "epsilon"), "plain")
        score, frames = record_episode(run.game, run.env, run.policy, args.video, protocol,
                                       seed=args.seed)
        console.print(f"video: {args.video} ({frames} frames, score {score:g}, {protocol})")
        out["video"] = {"path": args.video, "frames": frames, "score": score}
    if args.json:
        print(json.dumps(out))
    if crashes:
        print(f"error: the emulator crashed under {len(crashes)} of {len(protocols)} "
              f"protocols ({', '.join(c['protocol'] for c in crashes)}): not in the table",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # A crash in native code (the emulator: ALE's long-known fault in Montezuma's Revenge)
    # then names the Python stacks it happened under, for the bug report. The command only:
    # a caller's stderr (a test's capture) may have no file descriptor.
    faulthandler.enable()
    sys.exit(main())
