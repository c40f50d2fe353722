"""Benchmark of the Atari pool: raw ALE emulation, EnvPool and the pool, side by side.

    python -m jax_reset.bench env [--game MontezumaRevenge] [--num-envs 16] [--workers 2]
                                  [--seconds 3] [--repeats 2] [--json]

All three run in one process tree on the same cores with the same game and preprocessing
(frame skip 4, 105x80 RGB, stack 4). Measurements alternate over `--repeats` rounds and the
median of each is reported, because the machine is shared. Units: agent steps per second
(one agent step = frame_skip emulator frames). The raw-emulation bound is
(single-process ALE frames/s) x workers / frame_skip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from jax_reset.envs import AtariPool, DemoResetConfig, EnvConfig, rom_id, shm
from jax_reset.envs.worker import Worker, WorkerSpec, make_ale


def _config() -> EnvConfig:
    # Rewards and resets as EnvPool's, so the two do the same work.
    return EnvConfig(reward_clip=False, fire_reset=False, autoreset="next_step")


def raw_ale_frames_per_s(game: str, seconds: float, frame_skip: int) -> float:
    """Emulator frames/s of one ale-py env in this process: act() only, no screens."""
    import ale_py


    ale = make_ale(str(ale_py.roms.get_rom_path(rom_id(game))), 0, 0.0)
    action_set = ale.getMinimalActionSet()
    actions = np.random.default_rng(0).integers(0, len(action_set), 4096)
    frames, i = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = action_set[actions[i & 4095]]
        for _ in range(frame_skip):
            ale.act(a)
        frames += frame_skip
        i += 1
        if ale.game_over():
            ale.reset_game()
    return frames / (time.perf_counter() - t0)


def _raw_worker(args: tuple[str, float, int]) -> float:
    return raw_ale_frames_per_s(*args)


def raw_parallel_frames_per_s(game: str, seconds: float, frame_skip: int, workers: int) -> float:
    """Emulator frames/s of `workers` raw ALE processes running at once: what the cores give
    right now, which on a shared machine is less than one process's rate times the cores."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as procs:
        # Each process times its own loop; they overlap, so the rates add up.
        return float(sum(procs.map(_raw_worker, [(game, seconds, frame_skip)] * workers)))


def envpool_steps_per_s(game: str, num_envs: int, threads: int, seconds: float) -> float:
    import envpool

    cfg = _config()
    env = envpool.make(f"{game}-v5", env_type="gym", num_envs=num_envs, batch_size=num_envs,
                       num_threads=threads, **cfg.envpool_kwargs(game))
    n_actions = env.action_space.n
    actions = np.random.default_rng(0).integers(0, n_actions, (64, num_envs)).astype(np.int32)
    env.reset()
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(actions[steps & 63])
        steps += 1
    rate = steps * num_envs / (time.perf_counter() - t0)
    env.close()
    return rate


def pool_steps_per_s(pool: AtariPool, seconds: float, asynchronous: bool) -> float:
    """Sync: step() of all envs. Async: two halves, one emulating while the other's results
    are taken (the way a trainer overlaps inference with emulation)."""
    n = pool.num_envs
    actions = np.random.default_rng(0).integers(0, pool.num_actions, (64, n)).astype(np.int32)
    pool.reset()
    steps = 0
    t0 = time.perf_counter()
    if not asynchronous:
        while time.perf_counter() - t0 < seconds:
            pool.step(actions[steps & 63])
            steps += n
        return steps / (time.perf_counter() - t0)
    # Each half holds envs of every worker, so both workers stay busy.
    halves = (np.arange(0, n, 2), np.arange(1, n, 2))
    pool.send(actions[0, halves[0]], halves[0])
    k = 0
    while time.perf_counter() - t0 < seconds:
        other = halves[(k + 1) & 1]
        pool.send(actions[k & 63, other], other)
        steps += len(pool.recv().env_ids)
        k += 1
    steps += len(pool.recv().env_ids)
    return steps / (time.perf_counter() - t0)


def cpu_us_per_step(game: str, num_envs: int, steps: int) -> tuple[float, float]:
    """CPU time (process_time, not wall) per agent step of the pool's worker loop run in this
    process, and of bare ALE emulation of the same frames: the pool's own overhead, measured
    without the scheduling noise of a shared machine. Returns (worker_us, raw_us)."""
    import ale_py


    cfg = _config()
    rom = str(ale_py.roms.get_rom_path(rom_id(game)))
    layout = shm.Layout.build(shm.pool_fields(num_envs, cfg.obs_shape))
    seg = shm.create(layout)
    try:
        worker = Worker(WorkerSpec(0, 0, num_envs, game, rom, cfg, None, seg.name, layout, 0))
        n_actions = len(worker.action_set)
        actions = np.random.default_rng(0).integers(0, n_actions, (64, num_envs))
        worker.reset(range(num_envs))
        t0 = time.process_time()
        for k in range(steps):
            worker.v["action"][:] = actions[k & 63]
            worker.step(range(num_envs))
        worker_us = (time.process_time() - t0) / (steps * num_envs) * 1e6
        worker.close()
        del worker
    finally:
        seg.close()
        seg.unlink()
    ales = [make_ale(rom, i, 0.0) for i in range(num_envs)]
    action_set = ales[0].getMinimalActionSet()
    t0 = time.process_time()
    for k in range(steps):
        for i, ale in enumerate(ales):
            a = action_set[actions[k & 63, i]]
            for _ in range(cfg.frame_skip):
                ale.act(a)
            if ale.game_over():
                ale.reset_game()
    raw_us = (time.process_time() - t0) / (steps * num_envs) * 1e6
    return worker_us, raw_us


def restore_ms(game: str, workers: int, demo_dir: Path, count: int = 40) -> dict | None:
    """Latency of one env's demo restore (round trip), and the batched cost per env."""
    path = demo_dir / f"{game}.npz"
    if not path.exists():
        return None
    with AtariPool(None, 2 * workers, workers, demo=DemoResetConfig(str(path))) as pool:
        rng = np.random.default_rng(0)
        t_frames = pool.demo_num_frames
        frames = rng.integers(200, t_frames, count)
        pool.restore([0], frames[:1])
        t0 = time.perf_counter()
        for f in frames:
            pool.restore([0], [f])
        single = (time.perf_counter() - t0) / count * 1e3
        batch = rng.integers(200, t_frames, (count // 4, pool.num_envs))
        t0 = time.perf_counter()
        for row in batch:
            pool.restore(None, row)
        per_env = (time.perf_counter() - t0) / batch.size * 1e3
        return {
            "restore_ms": single,
            "restore_batched_ms_per_env": per_env,
            "demo_states_build_s": pool.demo_states_build_s,
            "dense_stride": pool.demo_config.dense_stride,
        }


def run(args: argparse.Namespace) -> dict:
    cfg = _config()
    rounds: dict[str, list[float]] = {
        "raw": [],
        "raw_parallel": [],
        "envpool": [],
        "sync": [],
        "async": [],
    }
    with AtariPool(args.game, args.num_envs, args.workers, config=cfg) as pool:
        for _ in range(args.repeats):
            rounds["raw"].append(raw_ale_frames_per_s(args.game, args.seconds, cfg.frame_skip))
            rounds["raw_parallel"].append(
                raw_parallel_frames_per_s(args.game, args.seconds, cfg.frame_skip, args.workers)
            )
            rounds["envpool"].append(
                envpool_steps_per_s(args.game, args.num_envs, args.workers, args.seconds)
            )
            rounds["sync"].append(pool_steps_per_s(pool, args.seconds, asynchronous=False))
            rounds["async"].append(pool_steps_per_s(pool, args.seconds, asynchronous=True))
    cpu = [cpu_us_per_step(args.game, 8, max(50, int(100 * args.seconds))) for _ in range(2)]
    worker_us = statistics.median(c[0] for c in cpu)
    raw_us = statistics.median(c[1] for c in cpu)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    bound = med["raw"] * args.workers / cfg.frame_skip
    result = {
        "benchmark": "env",
        "game": args.game,
        "num_envs": args.num_envs,
        "workers": args.workers,
        "preprocessing": "frame_skip 4, max-pool 2, 105x80 RGB, stack 4",
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "raw_ale_frames_per_s": med["raw"],
        "raw_bound_steps_per_s": bound,
        "raw_parallel_steps_per_s": med["raw_parallel"] / cfg.frame_skip,
        "envpool_steps_per_s": med["envpool"],
        "pool_steps_per_s": med["sync"],
        "pool_async_steps_per_s": med["async"],
        "pool_over_envpool": med["sync"] / med["envpool"],
        "pool_async_over_envpool": med["async"] / med["envpool"],
        "pool_over_raw_bound": med["sync"] / bound,
        "pool_async_over_raw_bound": med["async"] / bound,
        "pool_over_raw_parallel": med["sync"] * cfg.frame_skip / med["raw_parallel"],
        "load_average": os.getloadavg()[0],
        "worker_cpu_us_per_step": worker_us,
        "raw_cpu_us_per_step": raw_us,
        "worker_cpu_efficiency": raw_us / worker_us,
        "rounds": rounds,
    }
    restore = restore_ms(args.game, args.workers, Path(args.demo_dir))
    result.update(restore or {"restore_ms": None})
    return result


def _print_table(r: dict) -> None:
    rows = [
        ("raw ALE bound", r["raw_bound_steps_per_s"], "1 process x workers / frame skip"),
        ("raw ALE, W processes", r["raw_parallel_steps_per_s"], "measured at once / frame skip"),
        ("EnvPool", r["envpool_steps_per_s"], f"num_threads={r['workers']}"),
        ("pool, step()", r["pool_steps_per_s"], f"{r['workers']} workers"),
        ("pool, send/recv halves", r["pool_async_steps_per_s"], f"{r['workers']} workers"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{r['game']}, {r['num_envs']} envs, {r['preprocessing']}")
        for col in ("", "agent steps/s", "note"):
            table.add_column(col)
        for name, value, note in rows:
            table.add_row(name, f"{value:,.0f}", note)
        Console().print(table)
    except ImportError:
        for name, value, note in rows:
            print(f"{name:24s} {value:10,.0f}  {note}")
    print(
        f"pool/EnvPool {r['pool_over_envpool']:.2f} (async {r['pool_async_over_envpool']:.2f}), "
        f"pool/raw bound {r['pool_over_raw_bound']:.2f} "
        f"(async {r['pool_async_over_raw_bound']:.2f}), "
        f"pool/raw W processes {r['pool_over_raw_parallel']:.2f}; "
        f"load average {r['load_average']:.1f} on {r['cpu_count']} cores"
    )
    print(
        f"CPU per agent step: worker loop {r['worker_cpu_us_per_step']:.0f} us, bare emulation "
        f"{r['raw_cpu_us_per_step']:.0f} us (efficiency {r['worker_cpu_efficiency']:.2f})"
    )
    if r.get("restore_ms") is not None:
        print(
            f"demo restore: {r['restore_ms']:.2f} ms one env (round trip), "
            f"{r['restore_batched_ms_per_env']:.2f} ms per env batched; "
            f"dense states every {r['dense_stride']} frames built in "
            f"{r['demo_states_build_s']:.1f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jax_reset.bench env", description=__doc__)
    parser.add_argument("--game", default="MontezumaRevenge")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="pool workers = EnvPool threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds (median)")
    parser.add_argument("--demo-dir", default="demos", help="restore cost uses <dir>/<game>.npz")
    parser.add_argument("--json", action="store_true", help="JSON object on the last line")
    args = parser.parse_args(argv)
    result = run(args)
    _print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0
