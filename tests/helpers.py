"""Helpers shared by several test modules (test modules import from here, never from each
other): a short Pong demo for multi-demo runs, and acting step by step like the trainer."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest

from jax_reset import demos
from jax_reset.ppo.synthetic import TINY_OBS_SHAPE, random_transition
from tests.conftest import REPO

A = 6  # actions of the synthetic rollouts (Pong's minimal set)
PONG = REPO / "demos" / "Pong.npz"
PREFIX_FRAMES = 3000


def make_prefix_demo(out: Path) -> Path:
    """A 3,000-frame Pong demo from the first actions of Pong's (``demo from-actions``)."""
    actions = np.asarray(demos.load(PONG, check=False).actions[:PREFIX_FRAMES])
    np.save(out.with_suffix(".npy"), actions)
    proc = subprocess.run([sys.executable, "-m", "jax_reset.demo", "from-actions", "--game",
                           "Pong", "--minimal", str(out.with_suffix(".npy")), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def paths_override(*paths: Path | str) -> str:
    return "demo.demo_paths=[" + ",".join(f'"{p}"' for p in paths) + "]"


def collect_rollout(act, warmup, params, cfg, ppo, carry, rng, key, first):
    """Act step by step like the trainer; record what the acting function saw and returned.

    Random episode starts (all environments at the very first step); half the episodes begin
    from a demo warm-up state. Returns (rollout, bootstrap_value, tail_carry, carry_after).
    """
    b = jax.tree.leaves(carry)[0].shape[0]
    steps = ppo.rollout_steps
    tr = random_transition(rng, steps, b, TINY_OBS_SHAPE, A)
    if first:
        tr = tr.replace(episode_start=np.ones_like(tr.episode_start))
    demo = rng.integers(0, 256, (b, 5, *TINY_OBS_SHAPE), dtype=np.uint8)
    warm = warmup(params, demo, rng.random((b, 5)) < 0.8)
    from_demo = rng.random(b) < 0.5
    start_carry = jax.tree.map(
        lambda w: np.where(from_demo[:, None], np.asarray(w), 0.0).astype(np.float32), warm
    )
    rec = {"action": [], "logp": [], "value": []}
    tail_carry = None
    for t in range(steps):
        if t == steps - ppo.burn_in_steps:
            tail_carry = carry  # the state entering step T - K
        key, sub = jax.random.split(key)
        out = act(
            params, tr.obs[t], tr.episode_start[t], tr.entropy_boost[t], carry, sub, start_carry
        )
        carry = out.carry
        for name in rec:
            rec[name].append(np.asarray(getattr(out, name)))
    tr = tr.replace(
        start_carry=jax.tree.map(lambda x: np.broadcast_to(x, (steps, *x.shape)), start_carry),
        **{name: np.stack(v) for name, v in rec.items()},
    )
    # Bootstrap: act once on the next observation (the next rollout's step 0 in the trainer).
    nxt = random_transition(rng, 1, b, TINY_OBS_SHAPE, A)
    boot = act(params, nxt.obs[0], nxt.episode_start[0], nxt.entropy_boost[0], carry, key)
    return tr, np.asarray(boot.value), tail_carry, carry


IN_CI = bool(os.environ.get("CI"))


@contextlib.contextmanager
def mounted(where: Path, *options: str, source: str = "tmpfs") -> Iterator[Path]:
    """A real mount (root only); skipped outside CI when mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    args = ["-t", "tmpfs", "-o", ",".join(options), "tmpfs"] if source == "tmpfs" else [
        "--bind", source]
    ok = os.geteuid() == 0 and subprocess.run(["mount", *args, str(where)],
                                              capture_output=True).returncode == 0
    if not ok:
        if IN_CI:
            pytest.fail("CI runs as root and must be able to mount (tmpfs, bind)")
        pytest.skip("needs root and permission to mount (runs in CI)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
