"""`python -m jax_reset.export --run-dir R --out DIR`: a trained policy as a folder to share.

    python -m jax_reset.export --run-dir runs/pong --out pretrained/pong
    python -m jax_reset.export --run-dir runs/pong --out /tmp/p --checkpoint 9200 --episodes 8
    python -m jax_reset.evaluate --run-dir pretrained/pong        # plays it, from a clone

DIR holds what the policy needs and what a reader asks, nothing of the run's training state:

- ``policy.json`` + ``params/``: the checkpoint's parameters and metadata (``jax_reset.run.
  policy``; no optimizer state, RNG or curriculum), read by ``evaluate`` like a run directory;
- ``config.json``: the run's resolved config (``train --config DIR/config.json`` trains it again);
- ``evaluation.json``: ``--episodes`` full games per protocol from the game's start, every game's
  score and length (as ``evaluate --json``);
- ``game.mp4``: one game under the plain protocol with the score drawn on it (``--no-video``);
- ``README.md``: a model card whose YAML header the Hugging Face Hub reads (library, tags,
  environment, the mean score per protocol), then the evaluation table, how the run trained
  (updates, agent steps, training time, the curriculum's position, its milestones) and the
  command that trains it again. The folder is what ``huggingface-cli upload`` takes.

DIR is written beside itself and renamed into place at the end: an existing DIR is refused, a
failure or Ctrl-C leaves none. Exit codes: 0 written, 2 bad input (one line), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from jax_reset.parallel.huge_pages import restart_with_huge_pages

if __name__ == "__main__":  # before JAX is imported, so that the new start costs little
    restart_with_huge_pages()  # XLA's host buffers on huge pages (a new start, once)

from jax_reset import config_tree, metrics, milestones
from jax_reset import curriculum as cur
from jax_reset.evaluation.envs import PROTOCOLS
from jax_reset.evaluation.errors import EmulatorCrash, EvalError
from jax_reset.evaluation.play import NetworkPolicy, run_protocol
from jax_reset.evaluation.video import FILM_AGENT_STEPS, record_episode
from jax_reset.plot import X_TIME, PlotError, read_metrics, run_milestones, shown_path
from jax_reset.run.layout import UsageError
from jax_reset.run.policy import save_policy
from jax_reset.run.state import load_params

EVALUATION_FILE = "evaluation.json"
VIDEO_FILE = "game.mp4"
CARD_FILE = "README.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jax_reset.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a training run directory")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist)")
    parser.add_argument("--checkpoint", default="latest",
                        help="latest (default), best, or an update number")
    parser.add_argument("--episodes", type=int, default=30, help="full games per protocol")
    parser.add_argument("--envs", type=int, default=16, help="games played in parallel")
    parser.add_argument("--protocol", action="append", choices=PROTOCOLS,
                        help="repeat for several; default: all four")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-video", action="store_true", help="no game.mp4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists: export writes a new folder (remove it or pick another)",
              file=sys.stderr)
        return 2
    partial = out.parent / f".{out.name}.partial"
    try:
        shutil.rmtree(partial, ignore_errors=True)  # a previous try's leftovers
        export(Path(args.run_dir), partial, args, name=out.name)
        partial.rename(out)
    except EmulatorCrash as err:  # not the input's fault: another --seed plays other games
        print(f"error: {err}; nothing written", file=sys.stderr)
        return 1
    except (UsageError, EvalError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def export(run_dir: Path, out: Path, args: argparse.Namespace, name: str) -> None:
    """Writes the policy folder ``out`` from ``run_dir``'s checkpoint ``args.checkpoint``."""
    if args.episodes < 1:
        raise UsageError(f"--episodes must be at least 1, got {args.episodes}")
    step, meta, config, params = load_params(run_dir, args.checkpoint)
    # The demo paths relative to the repository where they lie in it (a run saves them
    # absolute): the config trains again from any clone, and neither it nor the policy's
    # metadata names a folder of this machine.
    demo = config.demo
    config = dataclasses.replace(config, demo=dataclasses.replace(
        demo, demo_path=shown_path(demo.demo_path) if demo.demo_path else demo.demo_path,
        demo_paths=tuple(shown_path(p) for p in demo.demo_paths)))
    meta = {**meta, "config": config_tree.to_dict(config),
            **({"demos": [{**d, "path": shown_path(d["path"])} if "path" in d else d
                          for d in meta["demos"]]} if "demos" in meta else {})}
    save_policy(out, step, meta, params)
    config_tree.save_json(config, out / "config.json")
    game, protocols = str(meta["game"]), args.protocol or list(PROTOCOLS)
    policy = NetworkPolicy(config.network, params, int(meta["num_actions"]))
    results = []
    for protocol in protocols:
        result = run_protocol(game, config.env, policy, protocol, args.episodes,
                              num_envs=args.envs, seed=args.seed)
        results.append(result.summary())
        print(f"{protocol}: mean {results[-1]['score_mean']:g} over {args.episodes} games",
              flush=True)
    evaluation = {"checkpoint": step, "game": game, "seed": args.seed, "protocols": results}
    (out / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n")
    video = None
    if not args.no_video:
        score, frames = record_episode(game, config.env, policy, out / VIDEO_FILE, "plain",
                                       seed=args.seed, max_agent_steps=FILM_AGENT_STEPS)
        video = {"file": VIDEO_FILE, "score": score, "frames": frames}
    training = training_facts(run_dir, step, meta)
    (out / CARD_FILE).write_text(model_card(name, game, step, evaluation, training, video,
                                            config.plays_the_demo))


def training_facts(run_dir: Path, step: int, meta: dict[str, Any]) -> dict[str, Any]:
    """What ``metrics.jsonl`` says of the run up to update ``step`` (empty without it)."""
    try:
        rows = [r for r in read_metrics(run_dir) if r.get("update", 0) <= step]
    except PlotError:  # an exported folder or a run without its log: no training facts
        return {}
    if not rows:
        return {}
    last = rows[-1]
    facts = {"updates": int(last["update"]), "agent_steps": int(last.get(metrics.AGENT_STEPS, 0)),
             "frames": int(last.get(metrics.FRAMES, 0)),
             "training_hours": round(float(last.get(X_TIME, 0.0)) / 3600, 2),
             "max_starting_point": last.get(cur.MAX_STARTING_POINT),
             "demo_frames": meta.get("num_frames")}
    per_demo, _ = run_milestones(run_dir, rows)  # a demo not on this machine is left out
    if len(per_demo) == 1:
        facts["milestones"] = milestones.table(next(iter(per_demo.values())))
    elif per_demo:
        facts["milestones"] = "\n\n".join(f"{name}:\n{milestones.table(passed)}"
                                          for name, passed in per_demo.items())
    return facts


def model_card(name: str, game: str, step: int, evaluation: dict[str, Any],
               training: dict[str, Any], video: dict[str, Any] | None,
               from_demo: bool = True) -> str:
    """README.md with the Hub's YAML metadata; every number from ``evaluation``/``training``."""
    results = evaluation["protocols"]
    metric_blocks = "".join(
        f"      - type: mean_reward\n"
        f"        name: mean score, {r['protocol']} protocol ({r['episodes']} games)\n"
        f"        value: {r['score_mean']:.2f} +/- {statistics.pstdev(r['scores']):.2f}\n"
        f"        verified: false\n" for r in results)
    header = (
        "---\nlibrary_name: jax-reset\ntags:\n- reinforcement-learning\n- deep-reinforcement-"
        f"learning\n- atari\n- jax\n- ppo\n"
        f"{'- learning-from-demonstration' + chr(10) if from_demo else ''}- {game}\n"
        f"model-index:\n- name: {name}\n  results:\n  - task:\n      type: reinforcement-"
        f"learning\n      name: reinforcement-learning\n    dataset:\n      type: ALE/{game}-v5\n"
        f"      name: {game} (full games from the game's start)\n    metrics:\n"
        f"{metric_blocks}---\n")
    table = ("| protocol | games | mean | median | min | max | length (agent steps) |\n"
             "|---|---|---|---|---|---|---|\n" + "".join(
                 f"| {r['protocol']} | {r['episodes']} | {r['score_mean']:.2f} | "
                 f"{r['score_median']:g} | {r['score_min']:g} | {r['score_max']:g} | "
                 f"{r['length_mean_agent_steps']:.0f} |\n" for r in results))
    how = ("starting its episodes from states of one human demonstration, first near its end "
           "and then ever earlier (the backward curriculum of 2018)" if from_demo else
           "without a demonstration: every episode from the game's reset (the no-demo "
           "baseline)")
    lines = [header, f"\n# {name}: {game}\n\n",
             f"A recurrent PPO policy trained by jax-reset on {game}, {how}. Checkpoint "
             f"{step:,}. Play it: `python -m jax_reset.evaluate --run-dir {name}`.\n\n",
             f"## Evaluation\n\nFull games from the game's start, seed {evaluation['seed']}; "
             f"every game's score in `{EVALUATION_FILE}`.\n\n{table}"]
    if video is not None:
        lines.append(f"\nOne game under the plain protocol: [`{video['file']}`]({video['file']}) "
                     f"(score {video['score']:g}, {video['frames']:,} agent steps).\n")
    if training:
        sp, t = training.get("max_starting_point"), training.get("demo_frames")
        # A run without a demo has no curriculum: every episode began at frame 0.
        where = ("; the curriculum's maximum starting point "
                 f"{'-' if sp is None else f'{int(sp):,}'} of the demo's "
                 f"{'-' if not t else f'{int(t):,}'} frames (0: the game's start)"
                 if from_demo else "")
        lines.append(
            f"\n## Training\n\n{training['updates']:,} updates, {training['agent_steps']:,} "
            f"agent steps ({training['frames']:,} emulator frames), {training['training_hours']}"
            f" h of training{where}.\n")
        if from_demo and training.get("milestones"):
            lines.append(f"\nWhen the curriculum passed the demo's scoring frames:\n\n"
                         f"```\n{training['milestones']}\n```\n")
    lines.append("\n## Train it again\n\n```bash\npython -m jax_reset.train --config "
                 f"{name}/config.json --run-dir runs/{name}\n```\n\n`config.json` is the run's "
                 "resolved config, its demo paths relative to the repository's root.\n")
    return "".join(lines)


if __name__ == "__main__":
    sys.exit(main())
