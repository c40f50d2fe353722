"""`python -m jax_reset.bench learner`: throughput of the PPO update and of the demo warm-up.

For each case: the compile time (first call), the time of one full update (all epochs x
minibatches, forward + backward through burn-in and rollout, Adam), and from it

  rollout samples/s    = envs x rollout_steps / update time  (agent steps the learner absorbs)
  processed samples/s  = envs x (burn_in + rollout) x epochs / update time (fwd+bwd samples)
  TFLOP/s              = 3 x analytic forward FLOPs x processed samples / update time
  share of peak        = TFLOP/s / the device's dense peak (GPUs in ``PEAK_TFLOPS``)
  utilization          = achieved GFLOP/s / this machine's dense float32 matmul rate, measured
                         in the same process just before the case (``matmul_gflops``: the
                         ceiling on a CPU, where no peak table applies)

The torso's convolutions take the path ``networks.model.conv_impl`` picks (``conv`` in the
output: "matmul", the CPU's matmul-form backward, or "xla"); ``JAX_RESET_CONV=xla`` times XLA's
own convolution gradients for a side-by-side comparison.

and the warm-up's throughput in demo frames per second, and ``parts``: each part of the update
(every convolution's forward and backward, the dense layer, the recurrent core, the optimizer)
timed alone, in seconds per update, with the "rest" the parts leave (``jax_reset.bench.parts``;
``--no-parts`` skips them), and ``flop_check``: the analytic FLOP count against XLA's cost
analysis of the compiled forward + backward pass (without the recurrent core). With
``--target-kl`` and/or ``--max-grad-norm`` each case also times the update with those guards (KL
early stopping, the gradient-norm clip), its calls alternating with the plain update's: their
cost as a ratio, and the optimiser steps the guarded update took. Random uint8 frames: the cost
does not depend on the content. Without size flags a CPU runs a reduced network plus the
reference network on a tiny batch (the reference sizes take minutes per update there, see
``docs/benchmarks.md``); a GPU runs the reference sizes. ``--json`` prints one JSON object on
the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_reset.bench.parts import time_parts
from jax_reset.networks import NetworkConfig, forward_flops, init_carry, init_params, make_network
from jax_reset.networks import model as net_model
from jax_reset.networks.model import conv_impl
from jax_reset.parallel.mesh import make_data_mesh
from jax_reset.parallel.sizes import derive
from jax_reset.ppo.config import PPOConfig
from jax_reset.ppo.data import shard_batch
from jax_reset.ppo.synthetic import random_batch
from jax_reset.ppo.train_state import create_train_state
from jax_reset.ppo.update import make_update
from jax_reset.ppo.warmup import make_warmup_fn

# Dense peak TFLOP/s by device kind (substring match), for (bfloat16, float32). float32 on these
# GPUs runs as TF32 on tensor cores under JAX's default matmul precision, hence its peak.
PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H100": (989.0, 494.0),  # SXM; PCIe is ~25% lower
    "A100": (312.0, 156.0),
    "L4": (121.0, 60.0),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jax_reset.bench learner", description=__doc__)
    p.add_argument("--envs", type=int, help="environments in the batch (reference: 256)")
    p.add_argument("--steps", type=int, help="sequence length burn-in + rollout (ref.: 192)")
    p.add_argument("--burn-in", type=int, help="burn-in steps (reference: 64)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, help="default: 4 (1 for tiny batches)")
    p.add_argument("--conv-channels", type=_ints, help="e.g. 64,128,128 (reference)")
    p.add_argument("--conv-kernels", type=_ints, default=NetworkConfig.conv_kernels,
                   help="square kernel sizes (default 8,4,3; e.g. 4,4,3: a first layer of "
                        "non-overlapping 4x4 patches)")
    p.add_argument("--conv-strides", type=_ints, default=NetworkConfig.conv_strides,
                   help="strides (default 4,2,1)")
    p.add_argument("--dense", type=int, help="dense width (reference: 800)")
    p.add_argument("--core", choices=["lstm", "gru", "none"], default="lstm")
    p.add_argument("--core-size", type=int, help="core units (reference: 800)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--obs", type=_ints, default=(12, 105, 80), help="channel-first frame shape")
    p.add_argument("--actions", type=int, default=18)
    p.add_argument("--iters", type=int, default=3, help="timed updates after the first")
    p.add_argument("--warmup-envs", type=int, help="environments warmed up at once")
    p.add_argument("--warmup-len", type=int, default=128, help="demo steps per warm-up")
    p.add_argument("--no-reference", action="store_true", help="CPU: skip the reference-net case")
    p.add_argument("--target-kl", type=float, help="also time the update with this KL stop")
    p.add_argument("--max-grad-norm", type=float, help="also time it with this gradient clip")
    p.add_argument("--no-parts", action="store_true",
                   help="skip timing each part of the update alone (jax_reset.bench.parts)")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    return p.parse_args(argv)


@dataclasses.dataclass
class Case:
    name: str
    envs: int
    steps: int
    burn_in: int
    epochs: int
    minibatches: int
    channels: tuple[int, ...]
    dense: int
    core_size: int
    warmup_envs: int
    note: str = ""


def plan_cases(args: argparse.Namespace, platform: str) -> list[Case]:
    """The cases to run: what the flags ask for, else sizes suited to the platform."""
    sized = any(
        v is not None
        for v in (args.envs, args.steps, args.conv_channels, args.dense, args.core_size)
    )
    cpu = platform == "cpu"

    def case(name, envs, steps, burn_in, channels, dense, core, warm_envs, mbs=4, note=""):
        return Case(
            name=name,
            envs=args.envs or envs,
            steps=args.steps or steps,
            burn_in=args.burn_in if args.burn_in is not None else burn_in,
            epochs=args.epochs,
            minibatches=args.minibatches or mbs,
            channels=args.conv_channels or channels,
            dense=args.dense or dense,
            core_size=args.core_size or core,
            warmup_envs=args.warmup_envs or warm_envs or args.envs or envs,
            note=note,
        )

    if sized or not cpu:
        return [
            case(
                "requested" if sized else "reference", 256, 192, 64, (64, 128, 128), 800, 800, None
            )
        ]
    cases = [
        case(
            "reduced (CPU)",
            16,
            48,
            16,
            (16, 32, 32),
            256,
            128,
            16,
            mbs=4,
            note="16 envs x (16+32) steps, channels 16/32/32, dense 256, core 128",
        ),
    ]
    if not args.no_reference:
        cases.append(
            case(
                "reference net, tiny batch (CPU)",
                4,
                24,
                8,
                (64, 128, 128),
                800,
                800,
                4,
                mbs=1,
                note="reference network, 4 envs x (8+16) steps",
            )
        )
    return cases


def matmul_gflops(size: int = 1024, calls: int = 20) -> float:
    """This machine's dense float32 matmul rate through ``jax.jit`` (GFLOP/s, median of
    ``calls``): the ceiling the update's achieved rate is compared with."""
    a = jax.device_put(np.random.default_rng(0).standard_normal((size, size), np.float32))
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a))
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9


def xla_flop_check(net_cfg: NetworkConfig, obs_shape: tuple[int, ...], actions: int,
                   samples: int = 64) -> dict[str, float]:
    """The analytic FLOP count against XLA's cost analysis of the compiled forward + backward
    pass (per sample), for the network without its recurrent core (the core is a ``scan``,
    whose body XLA's cost analysis counts once, not once per step) and with XLA's own
    convolutions (the CPU's chunked first layer is a loop too). Expected: 3 x forward minus
    the first convolution's forward (the frames take no input gradient)."""
    cfg = dataclasses.replace(net_cfg, core="none")
    before = os.environ.get(net_model.CONV_IMPL_ENV)
    os.environ[net_model.CONV_IMPL_ENV] = "xla"  # read when the network is traced, below
    try:
        network = make_network(cfg, actions)
        params = init_params(network, jax.random.key(0), obs_shape)
        obs = jnp.zeros((1, samples, *obs_shape), jnp.uint8)
        flags = jnp.zeros((1, samples), bool)

        def loss(p):
            _, logits, value = network.apply({"params": p}, obs, flags, flags,
                                             init_carry(cfg, samples))
            return jnp.sum(logits) + jnp.sum(value)

        cost = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()
    finally:
        if before is None:
            os.environ.pop(net_model.CONV_IMPL_ENV, None)
        else:
            os.environ[net_model.CONV_IMPL_ENV] = before
    cost = cost[0] if isinstance(cost, list) else cost
    xla = float(cost["flops"]) / samples
    forward = forward_flops(cfg, obs_shape, actions)
    c, h, w = obs_shape
    k, st, o = cfg.conv_kernels[0], cfg.conv_strides[0], cfg.conv_channels[0]
    conv0 = 2 * ((h - k) // st + 1) * ((w - k) // st + 1) * o * k * k * c
    expected = 3 * forward - conv0
    return {"analytic_mflop_per_sample": round(expected / 1e6, 3),
            "xla_mflop_per_sample": round(xla / 1e6, 3), "xla_over_analytic": round(
                xla / expected, 3)}


def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    net_cfg = NetworkConfig(
        conv_channels=case.channels,
        conv_kernels=tuple(args.conv_kernels),
        conv_strides=tuple(args.conv_strides),
        dense_size=case.dense,
        core=args.core,
        core_size=case.core_size,
        compute_dtype=args.dtype,
    )
    ppo = PPOConfig(
        rollout_steps=case.steps - case.burn_in,
        burn_in_steps=case.burn_in,
        epochs=case.epochs,
        minibatches=case.minibatches,
    )
    mesh = make_data_mesh()
    n_dev = mesh.size
    # The trainer's one divisibility check, on this case's sizes.
    derive(types.SimpleNamespace(train=types.SimpleNamespace(num_envs=case.envs, env_groups=1),
                                 ppo=ppo),
           num_devices=n_dev)
    obs_shape = tuple(args.obs)
    network, state = create_train_state(net_cfg, ppo, obs_shape, args.actions, jax.random.key(0))
    update = make_update(network, ppo, mesh)
    rng = np.random.default_rng(0)
    batch = shard_batch(random_batch(rng, net_cfg, ppo, case.envs, obs_shape, args.actions), mesh)

    guarded_update = None  # the same start, with the guards asked for
    if args.target_kl is not None or args.max_grad_norm is not None:
        guarded_update = make_update(network, dataclasses.replace(
            ppo, target_kl=args.target_kl, max_grad_norm=args.max_grad_norm), mesh)
        guarded_state = state

    def timed(fn, state):
        t0 = time.perf_counter()
        state, metrics = fn(state, batch)
        jax.block_until_ready(metrics)
        return state, metrics, time.perf_counter() - t0

    state, metrics, compile_s = timed(update, state)
    if guarded_update is not None:
        guarded_state, _, _ = timed(guarded_update, guarded_state)  # its compile
    times, guarded_times, guarded_steps = [], [], []
    for _ in range(args.iters):  # alternating: the same machine state for both
        state, metrics, seconds = timed(update, state)
        times.append(seconds)
        if guarded_update is not None:
            guarded_state, guarded_metrics, seconds = timed(guarded_update, guarded_state)
            guarded_times.append(seconds)
            guarded_steps.append(float(guarded_metrics["sgd_steps"]))
    update_s = statistics.median(times)
    guards = None
    if guarded_update is not None:
        guards = {
            "target_kl": args.target_kl,
            "max_grad_norm": args.max_grad_norm,
            "update_s": round(statistics.median(guarded_times), 4),
            "over_plain": round(statistics.median(
                g / p for g, p in zip(guarded_times, times, strict=True)), 3),
            "sgd_steps_mean": round(statistics.mean(guarded_steps), 2),
            "sgd_steps_full": case.epochs * case.minibatches,
        }

    processed = case.envs * case.steps * case.epochs
    fwd = forward_flops(net_cfg, obs_shape, args.actions)
    tflops = 3 * fwd * processed / update_s / 1e12
    ceiling = matmul_gflops()
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)
    share = None
    if peak is not None and jax.devices()[0].platform == "gpu":
        share = tflops / (n_dev * (peak[0] if args.dtype == "bfloat16" else peak[1]))

    parts = None
    if not args.no_parts and args.dtype == "float32":  # the parts are timed in float32
        seconds = time_parts(net_cfg, state.params, obs_shape,
                             envs=case.envs // (case.minibatches * n_dev), steps=case.steps,
                             steps_per_update=case.epochs * case.minibatches,
                             calls=max(3, args.iters))
        # negative when the parts alone cost more than inside the one compiled update
        seconds["rest"] = update_s - sum(seconds.values())
        parts = {k: round(v, 6) for k, v in seconds.items()}  # a tiny net's parts take µs

    # Warm-up: demo frames -> recurrent states.
    warmup = make_warmup_fn(network)
    wobs = rng.integers(0, 256, (case.warmup_envs, args.warmup_len, *obs_shape), dtype=np.uint8)
    wobs = jax.device_put(wobs)
    wmask = np.ones((case.warmup_envs, args.warmup_len), bool)
    jax.block_until_ready(warmup(state.params, wobs, wmask))
    wtimes = []
    for _ in range(max(1, args.iters)):
        t0 = time.perf_counter()
        jax.block_until_ready(warmup(state.params, wobs, wmask))
        wtimes.append(time.perf_counter() - t0)
    warm_s = statistics.median(wtimes)

    return {
        "case": case.name,
        "note": case.note,
        "envs": case.envs,
        "burn_in": case.burn_in,
        "rollout": case.steps - case.burn_in,
        "epochs": case.epochs,
        "minibatches": case.minibatches,
        "conv_channels": list(case.channels),
        "conv_kernels": list(args.conv_kernels),
        "conv_strides": list(args.conv_strides),
        "dense": case.dense,
        "core": args.core,
        "core_size": case.core_size,
        "dtype": args.dtype,
        "obs": list(obs_shape),
        "compile_s": round(compile_s, 2),
        "update_s": round(update_s, 4),
        "rollout_samples_per_s": round(case.envs * (case.steps - case.burn_in) / update_s, 1),
        "processed_samples_per_s": round(processed / update_s, 1),
        "fwd_mflop_per_sample": round(fwd / 1e6, 2),
        "tflops": round(tflops, 4),
        "peak_share": None if share is None else round(share, 4),
        "conv": conv_impl(),
        "matmul_gflops": round(ceiling, 1),
        "achieved_gflops": round(1e3 * tflops, 1),
        "utilization": round(1e3 * tflops / ceiling, 3),
        "warmup_envs": case.warmup_envs,
        "warmup_len": args.warmup_len,
        "warmup_s": round(warm_s, 4),
        "warmup_frames_per_s": round(case.warmup_envs * args.warmup_len / warm_s, 1),
        "loss": float(metrics["loss"]),
        "guarded": guards,
        "parts": parts,
        "flop_check": xla_flop_check(net_cfg, obs_shape, args.actions),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # the torso's shape flags, checked before any case compiles
        NetworkConfig(conv_channels=args.conv_channels or NetworkConfig.conv_channels,
                      conv_kernels=args.conv_kernels, conv_strides=args.conv_strides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    devices = jax.devices()
    platform = devices[0].platform
    device = f"{len(devices)} x {devices[0].device_kind} ({platform})"
    cases = plan_cases(args, platform)
    if platform == "cpu" and not any(
        v is not None for v in (args.envs, args.steps, args.conv_channels)
    ):
        print(
            "CPU only: the reference sizes (256 envs x 192 steps, 64/128/128 conv, 800 units) "
            "take minutes per update here; running reduced sizes (size flags override)."
        )
    results = []
    for case in cases:
        print(f"running: {case.name} ...", flush=True)
        results.append(run_case(case, args))

    header = (
        f"{'case':<34} {'envs':>5} {'seq':>7} {'compile s':>9} {'update s':>9} "
        f"{'rollout/s':>10} {'fwd+bwd/s':>10} {'TFLOP/s':>8} {'peak':>6} {'util':>5} "
        f"{'warm-up fr/s':>12}"
    )
    print(f"device: {device}")
    print(header)
    print("-" * len(header))
    for r in results:
        peak = "-" if r["peak_share"] is None else f"{100 * r['peak_share']:.1f}%"
        seq = f"{r['burn_in']}+{r['rollout']}"
        print(
            f"{r['case']:<34} {r['envs']:>5} {seq:>7} {r['compile_s']:>9.1f} "
            f"{r['update_s']:>9.3f} {r['rollout_samples_per_s']:>10.1f} "
            f"{r['processed_samples_per_s']:>10.1f} {r['tflops']:>8.3f} {peak:>6} "
            f"{r['utilization']:>5.2f} {r['warmup_frames_per_s']:>12.1f}"
        )
        print(f"  conv gradients: {r['conv']}; achieved {r['achieved_gflops']:.1f} GFLOP/s of "
              f"the {r['matmul_gflops']:.0f} GFLOP/s a float32 matmul reaches here "
              f"(utilization {r['utilization']:.2f})")
        f = r["flop_check"]
        print(f"  FLOPs per sample, forward + backward without the core: analytic "
              f"{f['analytic_mflop_per_sample']:.3f} M, XLA's cost analysis "
              f"{f['xla_mflop_per_sample']:.3f} M ({f['xla_over_analytic']:.3f}x)")
        if r["parts"] is not None:
            print("  where an update's time goes (each part timed alone, s per update):")
            for part, seconds in r["parts"].items():
                print(f"    {part:<18} {seconds:>8.4f}  {100 * seconds / r['update_s']:>5.1f}%")
        g = r["guarded"]
        if g is not None:
            print(f"  with target_kl={g['target_kl']}, max_grad_norm={g['max_grad_norm']}: "
                  f"update {g['update_s']:.3f} s, {g['over_plain']:.3f} x the plain update's "
                  f"(pairwise median), {g['sgd_steps_mean']:g} of {g['sgd_steps_full']} "
                  "optimiser steps")
    if args.json:
        summary = {
            "benchmark": "learner",
            "device": device,
            "platform": platform,
            "date": datetime.date.today().isoformat(),
            "jax": jax.__version__,
            "results": results,
        }
        print(json.dumps(summary))
    return 0
