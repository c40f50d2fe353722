"""`python -m jax_reset.demo {convert,verify,info,cut,from-actions,record,from-run}`: make,
check, cut and describe demos.

    python -m jax_reset.demo convert demos/original demos/
    python -m jax_reset.demo verify demos/                # every checkpoint of every demo
    python -m jax_reset.demo verify demos/Gravitar.npz --rom ~/roms/gravitar.bin
    python -m jax_reset.demo info demos/Pong.npz --json
    python -m jax_reset.demo cut demos/MontezumaRevenge.npz --end-frame 2301 --out mr2301.npz
    python -m jax_reset.demo from-actions --game Breakout log.txt --out breakout.npz
    python -m jax_reset.demo record --game Pong --out my.npz --speed 0.5
    python -m jax_reset.demo from-run --run-dir runs/pong --episodes 16 --seed 0 --out best.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jax_reset import demos
from jax_reset.demos.cut import cut
from jax_reset.demos.from_actions import from_actions
from jax_reset.demos.roms import RomError, file_md5

# Piped or redirected, rich would cut tables at 80 columns: a wide console keeps every column.
console = Console() if sys.stdout.isatty() else Console(width=200)


def _demo_files(path: Path, suffix: str) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob(f"*{suffix}"))
        if not files:
            raise demos.DemoError(f"{path}: no {suffix} files in this folder")
        return files
    if not path.exists():
        raise demos.DemoError(f"{path}: no such file or folder")
    return [path]


def cmd_convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    sources = _demo_files(src, ".demo")
    to_folder = src.is_dir() or args.dst.endswith("/") or dst.is_dir()
    for source in sources:
        target = dst / f"{source.stem}.npz" if to_folder else dst
        demos.convert(source, target, game=args.game)
        console.print(f"converted {source} -> {target}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    files = _demo_files(Path(args.path), ".npz")
    rom = Path(args.rom) if args.rom else None
    if rom is not None and not rom.is_file():
        raise RomError(f"ROM file {rom} does not exist")
    table = Table(title="demo verification: restore each checkpoint, replay to the next")
    for column in ("demo", "frames", "score", "ROM md5", "segments exact", "result"):
        table.add_column(column)
    failed = False
    for path in files:
        # A --rom given for a folder applies to the demos that name its md5.
        header = demos.load(path, check=False).header
        try:
            rom_path = rom if rom is not None and file_md5(rom) == header["rom_md5"] else None
            demo = demos.load(path, rom_path=rom_path)
        except (demos.DemoError, RomError) as err:
            # In a folder, a demo that needs the user's own ROM is reported, not failed.
            needs_rom = "--rom PATH" in str(err)
            if len(files) == 1 or not needs_rom:
                raise
            needs = f"[yellow]needs --rom (md5 {header['rom_md5']})[/]"
            table.add_row(path.name, str(header["num_frames"]), f"{header['score']:g}",
                          header["rom_md5"][:8], "-", needs)
            continue
        with Progress(TextColumn(f"{path.name}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True,
                      disable=not console.is_terminal) as progress:
            task = progress.add_task("verify", total=len(demo.checkpoint_frames))
            results = demos.verify(demo, progress=lambda _, t=task: progress.advance(t))
        exact = sum(r.exact for r in results)
        ok = exact == len(results)
        failed |= not ok
        bad = [r for r in results if not r.exact][:3]
        detail = "" if ok else " first bad: " + ", ".join(
            f"#{r.index} (frames {r.start}-{r.end}: " + (
                r.error or f"{r.reward_mismatches} rewards, {r.lives_mismatches} lives, "
                f"RAM {'ok' if r.ram_match is not False else 'differs'}") + ")" for r in bad)
        table.add_row(path.name, str(demo.num_frames), f"{demo.score:g}", demo.rom_md5[:8],
                      f"{exact}/{len(results)}",
                      "[green]exact[/]" if ok else f"[red]MISMATCH[/]{detail}")
    console.print(table)
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    for path in _demo_files(Path(args.path), ".npz"):
        demo = demos.load(path, check=False)
        info = dict(demo.header)
        info.update(path=str(path), num_checkpoints=len(demo.checkpoint_frames),
                    first_checkpoint_frame=int(demo.checkpoint_frames[0]),
                    last_checkpoint_frame=int(demo.checkpoint_frames[-1]),
                    has_lives=demo.lives is not None)
        if args.json:
            print(json.dumps(info, sort_keys=True))
            continue
        table = Table(title=str(path), show_header=False)
        for key, value in info.items():
            table.add_row(key, str(value))
        console.print(table)
    return 0


def cmd_cut(args: argparse.Namespace) -> int:
    source = demos.load(args.demo, rom_path=args.rom)
    prefix, results = cut(source, args.end_frame, args.out)
    exact = sum(r.exact for r in results)
    events = np.flatnonzero(prefix.rewards)
    last = (f"; its last reward: {prefix.rewards[events[-1]]:+g} at frame {events[-1]:,}"
            if len(events) else "; no reward in it")
    console.print(f"wrote {args.out}: {prefix.game}, frames 0-{prefix.num_frames - 1:,} of "
                  f"{source.num_frames:,}, score {prefix.score:g} of {source.score:g}, "
                  f"{len(prefix.checkpoint_frames)} states{last}; segments exact "
                  f"{exact}/{len(results)}", soft_wrap=True)
    return 0 if exact == len(results) else 1


def cmd_from_actions(args: argparse.Namespace) -> int:
    path, result = from_actions(args.game, args.actions, args.out,
                                per_agent_step=args.per_agent_step, minimal=args.minimal)
    _print_written(path, args.game, result)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    # pygame, the optional [record] extra: only for this subcommand
    from jax_reset.demos.record_window import record

    saved = record(args.game, args.out, speed=args.speed, rewind_s=args.rewind_seconds)
    print(f"saved {saved}" if saved else "quit without saving")
    return 0


def cmd_from_run(args: argparse.Namespace) -> int:
    # JAX and the network: only for this subcommand
    from jax_reset.evaluation.from_run import from_run

    path, result, scores = from_run(args.run_dir, args.out, checkpoint=args.checkpoint,
                                    episodes=args.episodes, seed=args.seed,
                                    max_agent_steps=args.max_agent_steps)
    console.print(f"episode scores: {', '.join(f'{s:g}' for s in scores)}; kept the best")
    _print_written(path, demos.load(path, check=False).game, result)
    return 0


def _print_written(path: Path, game: str, result) -> None:
    frames = len(result.rewards)
    console.print(f"wrote {path}: {game}, {frames:,} frames, score {result.rewards.sum():g}, "
                  f"{len(result.checkpoint_frames)} checkpoints; two replays agree")
    if result.game_over_frame is not None:
        console.print(f"the game ended at frame {result.game_over_frame:,}: the demo ends there")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jax_reset.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert original .demo pickles into .npz demo files")
    p.add_argument("src", help="an original .demo file or a folder of them")
    p.add_argument("dst", help="the .npz file, or a folder for a folder of sources")
    p.add_argument("--game", help="game name when the file name does not say it")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("verify", help="replay every checkpoint segment and compare")
    p.add_argument("path", help="a .npz demo file or a folder of them")
    p.add_argument("--rom", help="your own ROM file, for a demo recorded on another ROM build")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("info", help="print a demo's header and sizes")
    p.add_argument("path", help="a .npz demo file or a folder of them")
    p.add_argument("--json", action="store_true", help="one JSON object per demo")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("cut", help="a demo's first frames as a demo of their own (verified)")
    p.add_argument("demo", help="the .npz demo file to cut")
    p.add_argument("--end-frame", type=int, required=True,
                   help="keep frames 0 to END_FRAME - 1 (a reward at frame i needs i + 1)")
    p.add_argument("--out", required=True, help="the .npz demo file to write")
    p.add_argument("--rom", help="your own ROM file, for a demo recorded on another ROM build")
    p.set_defaults(func=cmd_cut)
    p = sub.add_parser("from-actions", help="replay an action log from the game's reset into a "
                                            "verified demo")
    p.add_argument("actions", help="the log: .txt/.csv (one action per line) or .npy")
    p.add_argument("--game", required=True, help="any game ale-py ships, e.g. Pong")
    p.add_argument("--out", required=True, help="the .npz demo file to write")
    p.add_argument("--per-agent-step", action="store_true",
                   help="one entry per agent step at frame skip 4 (default: per emulator frame)")
    p.add_argument("--minimal", action="store_true",
                   help="entries are indices into the game's minimal action set "
                        "(default: ALE's full action ids 0-17)")
    p.set_defaults(func=cmd_from_actions)
    p = sub.add_parser("record", help="play in a window with rewind; save the kept path")
    p.add_argument("--game", required=True, help="any game ale-py ships, e.g. Pong")
    p.add_argument("--out", required=True, help="the .npz demo file S writes")
    p.add_argument("--speed", type=float, default=1.0,
                   help="play speed, 1 = the Atari's 60 frames per second (default 1)")
    p.add_argument("--rewind-seconds", type=float, default=5.0,
                   help="how far R jumps back (default 5 s)")
    p.set_defaults(func=cmd_record)
    p = sub.add_parser("from-run", help="a run's best of K games from the start, as a demo")
    p.add_argument("--run-dir", required=True, help="a training run directory")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), latest, or an update number")
    p.add_argument("--episodes", type=int, default=8, help="games to play; the best is kept")
    p.add_argument("--seed", type=int, default=0, help="the pool's and the policy's seed")
    p.add_argument("--max-agent-steps", type=int,
                   help="cut a game after this many agent steps (default: the run's limit)")
    p.add_argument("--out", required=True, help="the .npz demo file to write")
    p.set_defaults(func=cmd_from_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (demos.DemoError, RomError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
