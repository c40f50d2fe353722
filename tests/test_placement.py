"""Device placement (``train.placement``) on fake CPU devices: acting on one device, learning
on two. Each test is a subprocess (XLA's host device count is fixed when JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from jax_reset.metrics import read_jsonl
from tests.conftest import REPO, TEST_XLA_FLAGS, train_cmd, xla_flags

# 1 acting + 2 learning devices: where each part lives; one update on the same batch on the
# two learning devices against one device; acting and learning log-probabilities.
SPLIT_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from jax_reset.parallel.mesh import make_data_mesh
    from jax_reset.networks import init_carry
    from jax_reset.parallel.placement import PlacementError, resolve_placement
    from jax_reset.ppo.acting import make_act_fn
    from jax_reset.ppo.data import assemble_batch, initial_burn_in
    from jax_reset.ppo.synthetic import *
    from jax_reset.ppo.train_state import create_train_state
    from jax_reset.ppo.update import make_update
    from jax_reset.ppo.warmup import make_warmup_fn
    from jax_reset.parallel.process_group import ProcessGroup
    from jax_reset.parallel.sizes import Sizes
    from tests.helpers import collect_rollout

    devices = jax.devices()
    assert len(devices) == 3, devices
    out = {}
    p = resolve_placement("1+2")
    out["acting"] = [d.id for d in p.acting]
    out["learning"] = [d.id for d in p.learning_mesh.devices.flat]
    out["auto_on_cpu_shared"] = resolve_placement("auto").shared
    try:
        resolve_placement("2+2")
    except PlacementError as err:
        out["too_many"] = str(err)

    # One update on the same batch: the 2 learning devices against device 0 alone.
    cfg, ppo = tiny_network_config(), tiny_ppo_config()
    net, state0 = create_train_state(cfg, ppo, TINY_OBS_SHAPE, 6, jax.random.key(0))
    batch = random_batch(np.random.default_rng(0), cfg, ppo, 8, TINY_OBS_SHAPE, 6,
                         with_start_carry=True)
    params = {}
    for name, mesh in (("one", make_data_mesh(devices[:1])), ("split", p.learning_mesh)):
        state, metrics = make_update(net, ppo, mesh)(state0, batch)
        params[name] = [np.asarray(x) for x in jax.tree.leaves(state.params)]
        out["update_devices_" + name] = sorted(
            d.id for d in jax.tree.leaves(state.params)[0].sharding.device_set)
    out["update_max_diff"] = max(float(np.abs(a - b).max())
                                 for a, b in zip(params["one"], params["split"]))

    # Acting on device 0 with the published copy; learning on devices 1 and 2: the learner's
    # one optimiser step sees ratio 1 (the acting log-probabilities, reproduced).
    ppo = tiny_ppo_config(epochs=1, minibatches=1)
    net, state = create_train_state(cfg, ppo, TINY_OBS_SHAPE, 6, jax.random.key(0))
    sizes = Sizes(1, 0, 2, 4, 4, 0, 4, ppo.rollout_steps, 4 * ppo.rollout_steps, 1, 4, 2)
    group = ProcessGroup(p.learning_mesh, sizes, p)
    state = group.replicate(state)
    acting_params = group.local_params(state.params)  # what the trainer publishes
    out["acting_params_devices"] = sorted(
        {d.id for x in jax.tree.leaves(acting_params) for d in x.sharding.device_set})
    act, warmup = p.place_act(make_act_fn(net)), p.place_warmup(make_warmup_fn(net))
    update = make_update(net, ppo, p.learning_mesh)
    rng, key, carry = np.random.default_rng(0), jax.random.key(1), init_carry(cfg, 4)
    out["kl"], out["clip"] = [], []
    for i in range(2):
        rollout, boot, tail, carry = collect_rollout(act, warmup, acting_params, cfg, ppo,
                                                     carry, rng, key, first=i == 0)
        out["carry_devices"] = sorted(d.id for d in jax.tree.leaves(carry)[0].sharding.device_set)
        if i == 0:
            burn_in = initial_burn_in(rollout, init_carry(cfg, 4), ppo.burn_in_steps)
        batch, burn_in = assemble_batch(burn_in, rollout, boot, tail)
        _, metrics = update(state, batch)
        out["kl"].append(float(metrics["approx_kl"]))
        out["clip"].append(float(metrics["clip_fraction"]))
    print(json.dumps(out))
""")


def _env(**extra: str) -> dict[str, str]:
    # No device count unless given: the tests' own flags only.
    return {**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS, "PYTHONPATH": str(REPO), **extra}


def test_one_acting_two_learning_devices_update_and_act_as_one_device() -> None:
    proc = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=300,
                          env=_env(XLA_FLAGS=xla_flags(3)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["acting"] == [0] and out["learning"] == [1, 2]
    assert out["auto_on_cpu_shared"]
    assert out["too_many"].startswith("train.placement=2+2 needs 4 devices per process; this "
                                      "one has 3 (cpu)")
    assert out["update_devices_one"] == [0] and out["update_devices_split"] == [1, 2]
    assert out["update_max_diff"] < 1e-5, out["update_max_diff"]
    assert out["acting_params_devices"] == [0] and out["carry_devices"] == [0]
    assert all(kl < 1e-9 for kl in out["kl"]), out["kl"]
    assert out["clip"] == [0.0, 0.0]


def test_the_trainer_starts_its_own_fake_devices_and_trains_with_1_acting_2_learning(
        tmp_path: Path) -> None:
    """No XLA_FLAGS given: the trainer asks for the 3 CPU devices the placement needs."""
    run_dir = tmp_path / "run"
    run = subprocess.run(
        train_cmd("--config", "configs/smoke.toml", "--run-dir", str(run_dir),
                  "train.placement=1+2", "train.total_updates=3", "train.workers=1"),
        cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "devices: 3 x cpu (cpu)" in run.stdout
    assert "placement 1+2: acting on cpu:0, learning on cpu:1, cpu:2" in run.stdout
    assert "done: 3 updates" in run.stdout
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["train/approx_kl"]) for r in rows)
    # More devices than the machine was started with: one line, exit 2, nothing written.
    bad = subprocess.run(
        train_cmd("--config", "configs/smoke.toml", "--run-dir", str(tmp_path / "bad"),
                  "train.placement=2+2"),
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=_env(XLA_FLAGS=xla_flags(3)))
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines() == [
        "error: train.placement=2+2 needs 4 devices per process; this one has 3 (cpu) "
        "(XLA_FLAGS asks for 3 CPU devices)"]
