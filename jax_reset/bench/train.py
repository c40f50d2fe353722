"""`python -m jax_reset.bench train`: agent steps/s of a training job, variant by variant.

    python -m jax_reset.bench train [--config configs/pong.toml] [--updates 4] [--rounds 3]
                                    [--pool-steps 2000] [--placements 1+1,host] [--json]
                                    [KEY=VALUE ...]

The real ``Trainer`` (real pool, network, curriculum, update), once per variant of how acting
and learning are arranged (``VARIANTS``: ``train.overlap`` and ``train.env_groups``; with
``--placements``, one "overlap + halves @ P" variant per ``train.placement`` P, the others
then on the first device alone, as on a one-device machine), measured
side by side: after one warm-up round per variant (compiles), ``--rounds`` rounds visit the
variants in turn, each round timing ``--updates`` updates after one untimed update (the
overlapped actor's pipeline filling). Reported per variant: the median agent steps/s of its
rounds and the per-stage seconds per update (``actor/*``, ``timing/*``).

Besides: the pool alone with the same settings (random actions, ``step()``), and the CPU bound.
On a CPU the pool, inference, the warm-up and the learner share the same cores, so the bound is

    cores / (CPU-seconds per agent step of: pool stepping incl. its worker processes,
             inference, warm-up, learner)

each part measured alone with process CPU time: the pool in its own run, the others in the
"overlap off" variant's timed updates, where they run one after the other. ``best_over_bound``
is the best variant's steps/s over it. ``learner_steps_per_s``: agent steps the update absorbs
per second of its own. On a CPU the job's overlay applies, as in ``jax_reset.train``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jax_reset import config as config_lib
from jax_reset import curriculum as cur
from jax_reset.config_tree import ConfigError
from jax_reset.envs import AtariPool
from jax_reset.parallel.placement import PlacementError, ask_for_host_devices, host_device_count
from jax_reset.parallel.sizes import SizeError
from jax_reset.run.layout import UsageError

# name -> (train.overlap, train.env_groups); --placements adds "overlap + halves @ P"
VARIANTS: dict[str, tuple[bool, int]] = {
    "overlap off": (False, 1),
    "overlap on": (True, 1),
    "overlap + halves": (True, 2),
}


def variant_table(placements: list[str]) -> dict[str, tuple[bool, int, str | None]]:
    """name -> (train.overlap, train.env_groups, train.placement or None: the default one)."""
    return {**{name: (*v, None) for name, v in VARIANTS.items()},
            **{f"overlap + halves @ {p}": (True, 2, p) for p in placements}}
STAGES = ("actor/inference_s", "actor/warmup_s", "actor/env_step_s", "actor/wait_s",
          "timing/learner_s", "timing/learner_wait_s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jax_reset.bench train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pong.toml")
    p.add_argument("--updates", type=int, default=4, help="timed updates per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the variants")
    p.add_argument("--pool-steps", type=int, default=2000,
                   help="agent steps of the pool-alone measurement")
    p.add_argument("--full-size", action="store_true", help="no CPU overlay on a CPU")
    p.add_argument("--placements", default="", metavar="P,P",
                   help="train.placement variants to add (e.g. 1+1,host); on a CPU the bench "
                        "starts the fake devices the largest needs")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE")
    args = p.parse_args(argv)
    if args.updates < 1 or args.rounds < 1 or args.pool_steps < 1:
        p.error("--updates, --rounds and --pool-steps must be at least 1")
    args.placements = [x.strip() for x in args.placements.split(",") if x.strip()]
    return args


# ---- CPU time of a process tree -----------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds of this process (every thread) and of the processes ``pids``."""
    return time.process_time() + sum(_proc_cpu_s(p) for p in pids)


def worker_pids(pool: Any) -> list[int]:
    return [proc.pid for proc in pool._workers.procs]


# ---- the pool alone -------------------------------------------------------------------------


def pool_alone(config: Any, num_envs: int, steps: int) -> dict[str, float]:
    """The pool with the job's settings and random actions: agent steps/s (wall) and CPU
    seconds per agent step (this process and the workers)."""
    import numpy as np


    train = config.train
    with AtariPool(None, num_envs, train.workers, config=config.env, demo=config.demo,
                   seed=train.seed) as pool:
        pool.set_starting_points(None, cur.init(num_envs, pool.demo_num_frames,
                                                config.curriculum).starting_points)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, pool.num_actions, (64, num_envs)).astype(np.int32)
        pool.reset()
        pids = worker_pids(pool)
        done, k = 0, 0
        cpu0, t0 = tree_cpu_s(pids), time.perf_counter()
        while done < steps:
            pool.step(actions[k & 63])
            done += num_envs
            k += 1
        wall, cpu = time.perf_counter() - t0, tree_cpu_s(pids) - cpu0
    return {"pool_steps_per_s": done / wall, "pool_cpu_s_per_step": cpu / done}


# ---- the trainer's variants ---------------------------------------------------------------


class MetricsSink:
    """Takes the trainer's metric lines (in place of ``metrics.MetricsWriter``)."""
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def write(self, update: int, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))


class CpuMeter:
    """Process CPU seconds spent inside wrapped calls, by part (only while ``on``)."""
    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = {"inference": 0.0, "warmup": 0.0, "learner": 0.0}
        self.wall_s: dict[str, float] = dict.fromkeys(self.cpu_s, 0.0)
        self.on = False

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            cpu0, t0 = time.process_time(), time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            self.cpu_s[part] += time.process_time() - cpu0
            self.wall_s[part] += time.perf_counter() - t0
            return out

        return timed


def run_round(trainer: Any, sink: MetricsSink, updates: int,
              meter: CpuMeter | None = None) -> tuple[float, dict[str, float]]:
    """``1 + updates`` updates with a fresh rollout source; returns the agent steps/s of the
    last ``updates`` and their stages' mean seconds per update. The source is closed after,
    so that no actor thread runs while another variant is measured."""
    # JAX: only after main() asked for the fake CPU devices
    from jax_reset.training.rollout_source import make_source

    t = trainer
    t.source = make_source(t.actor, t.group.local_params(t.state.train_state.params),
                           t.state.update, t.config.train.overlap)
    stop, interrupt = threading.Event(), threading.Event()
    t.source.start()
    try:
        t.step(stop, interrupt)  # the pipeline fills: not timed
        sink.rows.clear()
        if meter is not None:
            meter.on = True
        t0 = time.perf_counter()
        for _ in range(updates):
            t.step(stop, interrupt)
        elapsed = time.perf_counter() - t0
    finally:
        if meter is not None:
            meter.on = False
        t.source.close()
    stages = {k: statistics.fmean(r.get(k, 0.0) for r in sink.rows) for k in STAGES}
    return updates * t.sizes.agent_steps_per_update / elapsed, stages


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    # JAX: only after main() asked for the fake CPU devices the placements need
    from jax_reset.training.setup import build_trainer, detect_platform, make_group
    from jax_reset.training.trainer import RunOutputs

    on_cpu, device = detect_platform()
    base = config_lib.load(args.config, args.overrides, on_cpu=on_cpu and not args.full_size)
    big = 1 << 40  # never reached: no checkpoint, no final-update branch
    meter = CpuMeter()
    trainers, sinks, pools = {}, {}, []
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        try:
            table = variant_table(args.placements)
            for name, (overlap, groups, placement) in table.items():
                config = config_lib.load(args.config, [
                    *args.overrides, f"train.overlap={str(overlap).lower()}",
                    f"train.env_groups={groups}", f"train.total_updates={big}",
                    f"train.checkpoint_every={big}", "train.log_every=1",
                    "train.progress=false",
                    *([f"train.placement={placement}"] if placement else [])],
                    on_cpu=on_cpu and not args.full_size)
                pool = AtariPool(None, config.train.num_envs, config.train.workers,
                                 config=config.env, demo=config.demo, seed=config.train.seed)
                pools.append(pool)
                sinks[name] = MetricsSink()
                # As a run builds its trainer, at update 0; no checkpoints (the bench never
                # reaches train.checkpoint_every). Without --placements every device learns
                # and the first acts; with them the plain variants use the first device alone.
                group = make_group(config, placement or ("first" if args.placements
                                                         else "shared"))
                trainer = build_trainer(config, group, pool,
                                        RunOutputs(Path(tmp) / str(len(pools)),
                                                   writer=sinks[name]))
                if not overlap and groups == 1:  # the parts, one after the other: the bound
                    trainer.actor.act_fn = meter.wrap("inference", trainer.actor.act_fn)
                    trainer.actor.warmup_fn = meter.wrap("warmup", trainer.actor.warmup_fn)
                    trainer.learn = meter.wrap("learner", trainer.learn)
                trainers[name] = trainer
            print(f"warm-up: one round per variant ({len(table)} variants)", flush=True)
            for name in table:
                run_round(trainers[name], sinks[name], 1)
            rates: dict[str, list[float]] = {name: [] for name in table}
            stages: dict[str, list[dict[str, float]]] = {name: [] for name in table}
            metered = 0
            for r in range(args.rounds):
                for name in table:
                    m = meter if name == "overlap off" else None
                    rate, st = run_round(trainers[name], sinks[name], args.updates, m)
                    metered += args.updates if m is not None else 0
                    rates[name].append(rate)
                    stages[name].append(st)
                    print(f"round {r + 1}/{args.rounds}: {name}: {rate:,.1f} agent steps/s",
                          flush=True)
            steps_per_update = trainers["overlap off"].sizes.agent_steps_per_update
        finally:
            for pool in pools:
                pool.close()
    alone = pool_alone(base, base.train.num_envs, args.pool_steps)
    metered_steps = metered * steps_per_update
    cpu = {part: s / metered_steps for part, s in meter.cpu_s.items()}
    cores = len(os.sched_getaffinity(0))
    total_cpu = alone["pool_cpu_s_per_step"] + sum(cpu.values())
    bound = cores / total_cpu
    variants = {name: statistics.median(v) for name, v in rates.items()}
    best = max(variants, key=variants.get)
    result.update(
        benchmark="train", device=device, platform=jax.default_backend(),
        date=datetime.date.today().isoformat(), jax=jax.__version__, config=args.config,
        overrides=list(args.overrides), num_envs=base.train.num_envs,
        workers=base.train.workers, agent_steps_per_update=steps_per_update,
        updates=args.updates, rounds=args.rounds, placements=list(args.placements),
        variants={k: round(v, 1) for k, v in variants.items()},
        variant_rounds={k: [round(x, 1) for x in v] for k, v in rates.items()},
        stages_s_per_update={k: {s: round(statistics.fmean(d[s] for d in v), 4) for s in STAGES}
                             for k, v in stages.items()},
        pool_steps_per_s=round(alone["pool_steps_per_s"], 1),
        learner_steps_per_s=round(metered_steps / meter.wall_s["learner"], 1),
        cpu_s_per_agent_step={"pool": round(alone["pool_cpu_s_per_step"], 7),
                              **{k: round(v, 7) for k, v in cpu.items()}},
        cores=cores, cpu_bound_steps_per_s=round(bound, 1), best=best,
        best_over_bound=round(variants[best] / bound, 3),
        load_average=round(os.getloadavg()[0], 2))
    return result


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench train: {r['config']} on {r['device']}, {r['num_envs']} envs, "
                        f"{r['workers']} workers, {r['agent_steps_per_update']:,} agent steps "
                        "per update (stages: seconds per update)")
    table.add_column("variant")
    table.add_column("agent steps/s", justify="right")
    for s in STAGES:
        table.add_column(s.split("/")[1].removesuffix("_s").replace("_", " "), justify="right")
    for name, rate in r["variants"].items():
        st = r["stages_s_per_update"][name]
        table.add_row(name, f"{rate:,.1f}", *(f"{st[s]:.3f}" for s in STAGES))
    cpu = r["cpu_s_per_agent_step"]
    table.add_row("pool alone", f"{r['pool_steps_per_s']:,.1f}", *[""] * len(STAGES))
    table.add_row("learner alone", f"{r['learner_steps_per_s']:,.1f}", *[""] * len(STAGES))
    table.add_row(f"CPU bound ({r['cores']} cores)", f"{r['cpu_bound_steps_per_s']:,.1f}",
                  *[""] * len(STAGES))
    console = Console(width=140)
    console.print(table)
    console.print(
        "CPU ms per agent step, each part alone: "
        + ", ".join(f"{k} {1e3 * v:.3f}" for k, v in cpu.items())
        + f"; best: {r['best']}, {r['best_over_bound']:.2f} of the bound "
        f"(load average {r['load_average']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before JAX starts: the fake CPU devices the largest placement needs (none on a GPU).
    ask_for_host_devices(max((host_device_count(p) or 1 for p in args.placements), default=1))

    try:
        result = measure(args)
    except (ConfigError, SizeError, PlacementError, UsageError) as err:
        print(f"error: {err}")
        return 2
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0
