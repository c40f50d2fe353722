"""The update: acting/learning agreement, compile once, same result on 1, 2 and 4 devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jax_reset.networks import init_carry
from jax_reset.parallel.mesh import make_data_mesh
from jax_reset.ppo.acting import make_act_fn
from jax_reset.ppo.data import assemble_batch, initial_burn_in
from jax_reset.ppo.losses import sequence_forward
from jax_reset.ppo.synthetic import (
    TINY_OBS_SHAPE,
    random_batch,
    random_transition,
    tiny_network_config,
    tiny_ppo_config,
)
from jax_reset.ppo.train_state import (
    create_train_state,
    current_hyperparams,
    lift_train_state,
    v1_target,
    with_hyperparams,
)
from jax_reset.ppo.update import make_update
from jax_reset.ppo.warmup import make_warmup_fn
from jax_reset.run.checkpoint import Checkpoints
from jax_reset.run.checkpoint_meta import CheckpointError
from tests.conftest import xla_flags
from tests.helpers import A, collect_rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup():
    """One network, state and compiled update shared by the tests (compile time is the cost).

    One epoch of one minibatch: the update's single optimiser step sees the acting parameters.
    """
    cfg, ppo = tiny_network_config(), tiny_ppo_config(epochs=1, minibatches=1)
    net, state = create_train_state(cfg, ppo, TINY_OBS_SHAPE, A, jax.random.key(0))
    return cfg, ppo, net, state, make_update(net, ppo, make_data_mesh())


def test_acting_and_learning_agree(setup):
    """The learner's first-epoch logp/values after burn-in equal those recorded while acting.

    Two consecutive updates: the first with the padded burn-in, the second with the real
    64-step-style burn-in carried over from the first rollout, its stored state, resets inside
    it and demo warm-up states at episode starts.
    """
    cfg, ppo, net, state, update = setup
    act, warmup = make_act_fn(net), make_warmup_fn(net)
    rng, key = np.random.default_rng(0), jax.random.key(1)
    b = 4
    carry = init_carry(cfg, b)
    apply = lambda p, *a: net.apply({"params": p}, *a)  # noqa: E731
    forward = jax.jit(lambda p, batch: sequence_forward(apply, p, batch, ppo.burn_in_steps))
    for i in range(2):
        rollout, boot, tail, carry = collect_rollout(
            act, warmup, state.params, cfg, ppo, carry, rng, key, first=i == 0
        )
        if i == 0:
            burn_in = initial_burn_in(rollout, init_carry(cfg, b), ppo.burn_in_steps)
        batch, burn_in = assemble_batch(burn_in, rollout, boot, tail)
        logits, value = forward(state.params, batch)
        logp = np.take_along_axis(
            np.asarray(jax.nn.log_softmax(logits)), rollout.action[..., None], -1
        )[..., 0]
        np.testing.assert_allclose(logp, rollout.logp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(value, rollout.value, rtol=1e-5, atol=1e-5)
        # Through the update itself: its one optimiser step sees ratio 1 everywhere.
        _, metrics = update(state, batch)
        assert float(metrics["approx_kl"]) < 1e-9, metrics
        assert float(metrics["clip_fraction"]) == 0.0


def test_update_compiles_once_and_changes_parameters(setup):
    cfg, ppo, _, state, update = setup
    rng = np.random.default_rng(0)
    first = jax.tree.map(np.asarray, state.params)
    for _ in range(3):
        batch = random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A)  # fresh host arrays each time
        state, metrics = update(state, batch)
    assert int(state.update_step) == 3
    assert int(state.grad_step) == 3 * ppo.epochs * ppo.minibatches
    assert all(np.isfinite(float(v)) for v in metrics.values())
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, first)
    assert all(m > 0 for m in jax.tree.leaves(moved))
    # One program for batches with start_carry (acting test, if it ran) and one without.
    assert update.jitted._cache_size() <= 2
    before = update.jitted._cache_size()
    update(state, random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A))
    assert update.jitted._cache_size() == before


def test_assemble_batch_carries_the_tail_over():
    cfg, ppo = tiny_network_config(), tiny_ppo_config()
    rng = np.random.default_rng(1)
    r1 = random_transition(rng, ppo.rollout_steps, 2, TINY_OBS_SHAPE, A)
    r2 = random_transition(rng, ppo.rollout_steps, 2, TINY_OBS_SHAPE, A)
    c0, c1, c2 = (init_carry(cfg, 2) for _ in range(3))
    bi = initial_burn_in(r1, c0, ppo.burn_in_steps)
    assert not np.any(bi.data.valid)
    b1, bi = assemble_batch(bi, r1, np.zeros(2), c1)
    b2, _ = assemble_batch(bi, r2, np.zeros(2), c2)
    k = ppo.burn_in_steps
    assert b1.data.obs.shape[0] == ppo.sequence_steps
    np.testing.assert_array_equal(b1.data.obs[k:], r1.obs)
    np.testing.assert_array_equal(b2.data.obs[:k], r1.obs[-k:])
    np.testing.assert_array_equal(b2.data.reward[k:], r2.reward)
    assert b2.carry is c1 and b1.carry is c0


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax_reset.parallel.mesh import make_data_mesh
    from jax_reset.ppo.synthetic import *
    from jax_reset.ppo.train_state import create_train_state
    from jax_reset.ppo.update import make_update

    assert len(jax.devices()) == 4, jax.devices()
    cfg, ppo = tiny_network_config(), tiny_ppo_config()
    imitating = tiny_ppo_config(imitation_coef=0.5, imitation_windows=8)
    out = {}
    # And with the demo-imitation term (its windows split over devices like the environments).
    for n, ppo in [(1, ppo), (2, ppo), (4, ppo), ("1i", imitating), ("4i", imitating)]:
        devices = int(str(n).rstrip("i"))
        net, state = create_train_state(cfg, ppo, TINY_OBS_SHAPE, 6, jax.random.key(0))
        update = make_update(net, ppo, make_data_mesh(jax.devices()[:devices]))
        rng = np.random.default_rng(0)
        for _ in range(2):
            batch = random_batch(rng, cfg, ppo, 8, TINY_OBS_SHAPE, 6, with_start_carry=True)
            demo = (random_demo_batch(rng, cfg, ppo, 8, TINY_OBS_SHAPE, 6)
                    if ppo.imitates else None)
            state, metrics = update(state, batch, demo)
        out[n] = {
            "params": [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
            "metrics": {k: float(v) for k, v in metrics.items()},
            "compiles": update.jitted._cache_size(),
        }
    print(json.dumps(out))
    """
)


def test_same_update_on_1_2_and_4_devices():
    env = dict(os.environ, XLA_FLAGS=xla_flags(4))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"imitation_loss", "imitation_accuracy"} <= out["4i"]["metrics"].keys()
    for ref, n in ((out["1"], "2"), (out["1"], "4"), (out["1i"], "4i")):
        assert out[n]["compiles"] == 1
        for a, b in zip(ref["params"], out[n]["params"], strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
        for k, v in ref["metrics"].items():
            np.testing.assert_allclose(out[n]["metrics"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)


def test_learner_benchmark_smoke(capsys):
    from jax_reset.bench.learner import main

    args = "--envs 4 --steps 6 --burn-in 2 --epochs 1 --minibatches 1 --conv-channels 8,16,16"
    args += " --dense 16 --core-size 16 --obs 6,42,40 --iters 2 --warmup-len 3 --json"
    assert main([*args.split(), "--target-kl", "1e-9", "--max-grad-norm", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (result,) = out["results"]
    assert result["processed_samples_per_s"] > 0 and result["warmup_frames_per_s"] > 0
    parts = result["parts"]  # each part timed alone; the rest is what they leave of the update
    assert [k for k in parts if k.startswith("conv")] == [
        f"conv{i} {d}" for i in range(3) for d in ("forward", "backward")]
    assert parts["conv0 forward"] > 0 and parts["optimizer"] > 0  # a backward is a difference
    assert all(v >= 0 for k, v in parts.items() if k != "rest")  # of medians: 0 at the least
    assert sum(parts.values()) == pytest.approx(result["update_s"], abs=1e-3)
    guarded = result["guarded"]  # timed beside the plain update; the random batch's KL is far
    assert guarded["update_s"] > 0 and guarded["over_plain"] > 0  # over a target this tight:
    assert guarded["sgd_steps_full"] == 1 and guarded["sgd_steps_mean"] == 0  # every step refused
    # The analytic FLOP count agrees with XLA's cost analysis of the compiled pass (within 2%:
    # XLA also counts the heads' softmax and the layer norm, the count leaves them out).
    assert 1.0 <= result["flop_check"]["xla_over_analytic"] <= 1.02


def test_learner_benchmark_times_another_torso_shape(capsys):
    """``--conv-kernels/--conv-strides`` time a torso of another shape (the CPU candidates of
    docs/cpu.md: a first layer of non-overlapping 4x4 patches), recorded in the JSON, with
    the FLOP count still XLA's."""
    from jax_reset.bench.learner import main

    args = "--envs 4 --steps 6 --burn-in 2 --epochs 1 --minibatches 1 --conv-channels 8,16,16"
    args += " --conv-kernels 4,4,3 --conv-strides 4,2,1 --dense 16 --core-size 16"
    args += " --obs 6,42,40 --iters 1 --warmup-len 3 --no-parts --json"
    assert main(args.split()) == 0
    (result,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert result["conv_kernels"] == [4, 4, 3] and result["conv_strides"] == [4, 2, 1]
    assert result["update_s"] > 0
    assert 1.0 <= result["flop_check"]["xla_over_analytic"] <= 1.02
    assert main([*args.split(), "--conv-kernels", "4,4"]) == 2  # lengths differ: one line


def test_scan_and_host_loops_compute_the_same_update():
    """The accelerator program (one scan) and the CPU loop (a compiled step per minibatch)."""
    cfg, ppo = tiny_network_config(), tiny_ppo_config()
    net, state0 = create_train_state(cfg, ppo, TINY_OBS_SHAPE, A, jax.random.key(1))
    results = {}
    for loop in ("scan", "host"):
        update = make_update(net, ppo, make_data_mesh(), loop=loop)
        rng, state = np.random.default_rng(2), state0
        for i in range(2):
            batch = random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A, with_start_carry=True)
            state, metrics = update(state, batch)
            if i == 0:  # both programs read the runtime values, neither compiles again
                state = with_hyperparams(state, learning_rate=ppo.learning_rate / 3,
                                         ent_coef=0.05)
        assert update.jitted._cache_size() == 1
        results[loop] = (state, metrics)
    (s_scan, m_scan), (s_host, m_host) = results["scan"], results["host"]
    assert int(s_host.grad_step) == int(s_scan.grad_step) == 2 * ppo.epochs * ppo.minibatches
    np.testing.assert_array_equal(jax.random.key_data(s_host.rng), jax.random.key_data(s_scan.rng))
    for a, b in zip(jax.tree.leaves(s_scan.params), jax.tree.leaves(s_host.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    for k, v in m_scan.items():
        np.testing.assert_allclose(float(m_host[k]), float(v), rtol=1e-4, atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="loop must be"):
        make_update(net, ppo, make_data_mesh(), loop="python")


def host(x):
    """A leaf as NumPy (typed PRNG keys as their raw data)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def tree_delta(a, b):
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y), a, b)


def test_runtime_hyperparams_take_effect_without_recompiling(setup):
    """Learning rate and entropy coefficient are inputs of the compiled update, not constants."""
    cfg, ppo, _, state, update = setup
    assert current_hyperparams(state) == {
        "learning_rate": float(np.float32(ppo.learning_rate)),
        "ent_coef": float(np.float32(ppo.ent_coef)),
    }
    batch = random_batch(np.random.default_rng(3), cfg, ppo, 4, TINY_OBS_SHAPE, A)
    update(state, batch)
    compiled = update.jitted._cache_size()

    def one_update(lr, ent):
        new, metrics = update(with_hyperparams(state, learning_rate=lr, ent_coef=ent), batch)
        return new, metrics, tree_delta(new.params, state.params)

    _, m1, d1 = one_update(1e-4, 0.0)
    new, _, d3 = one_update(3e-4, 0.0)
    # Adam's first step is lr * m / (sqrt(v) + eps), whatever the gradient's size: three times
    # the rate moves every parameter three times as far.
    for a, b in zip(jax.tree.leaves(d1), jax.tree.leaves(d3), strict=True):
        assert np.abs(a).max() > 3e-5  # ~lr: far above the tolerance below
        # (atol: the deltas are differences of float32 parameters of size ~1)
        np.testing.assert_allclose(b, 3 * a, rtol=1e-3, atol=3e-7)
    assert current_hyperparams(new)["learning_rate"] == float(np.float32(3e-4))
    # The entropy bonus enters the loss and its gradient (the step changes direction).
    _, m_ent, d_ent = one_update(1e-4, 0.5)
    np.testing.assert_allclose(float(m_ent["entropy"]), float(m1["entropy"]),
                               rtol=1e-6)
    np.testing.assert_allclose(float(m_ent["loss"]) - float(m1["loss"]),
                               -0.5 * float(m1["entropy"]), rtol=1e-3)
    assert float(m_ent["grad_norm"]) != float(m1["grad_norm"])
    assert max(float(np.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(d1), jax.tree.leaves(d_ent), strict=True)) > 0
    assert update.jitted._cache_size() == compiled
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        with_hyperparams(state, learning_rate=0.0)


def test_checkpoint_without_hyperparams_restores_through_lift(setup, tmp_path):
    """A version-1 train state (before the runtime hyperparameters), saved with real Orbax,
    is refused by today's target, restores into ``v1_target`` and trains on once lifted."""
    cfg, ppo, _, state, update = setup
    rng = np.random.default_rng(4)
    trained, _ = update(state, random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A))
    counters = {"update": np.asarray(1, np.int64)}
    with Checkpoints(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, {"train_state": v1_target(trained), "counters": counters}, {},
                  {"format": 1}, {"curriculum/max_starting_point": 5.0})
    with Checkpoints(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match="no 'train_state/hyperparams/") as err:
            ckpt.restore({"train_state": state, "counters": counters})
        assert "\n" not in str(err.value)
        _, restored, _, _ = ckpt.restore({"train_state": v1_target(state), "counters": counters})
    lifted = lift_train_state(restored["train_state"], ppo)
    assert current_hyperparams(lifted) == current_hyperparams(state)
    for a, b in zip(jax.tree.leaves(v1_target(trained)), jax.tree.leaves(v1_target(lifted)),
                    strict=True):
        np.testing.assert_array_equal(host(b), host(a))
    # The lifted state continues exactly as the uninterrupted one, with the same program.
    compiled = update.jitted._cache_size()
    batch = random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A)
    after, _ = update(trained, batch)
    after_lifted, _ = update(lifted, batch)
    for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(after_lifted.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert int(after_lifted.grad_step) == int(after.grad_step)
    assert update.jitted._cache_size() == compiled


def test_cut_mode_end_keeps_the_reward_of_the_cut_step():
    """cut_mode "zero" (the reference) drops a reward earned in the cut step itself; "end"
    learns it like an episode's end: it flows back to the steps before."""
    from jax_reset.ppo.gae import gae
    from jax_reset.ppo.update import prepare

    cfg = tiny_network_config()
    rng = np.random.default_rng(3)
    ppo_zero = tiny_ppo_config(cut_mode="zero", burn_in_steps=0)
    ppo_end = tiny_ppo_config(cut_mode="end", burn_in_steps=0)
    batch = random_batch(rng, cfg, ppo_zero, 4, TINY_OBS_SHAPE, A)
    d = batch.data
    t = ppo_zero.rollout_steps
    d.done[:] = False
    d.cut[:] = False
    d.valid[:] = True
    d.reward[:] = 0.0
    d.reward[t // 2, 0] = 1.0  # the reward arrives in the step that is cut
    d.cut[t // 2, 0] = True
    mesh = make_data_mesh()
    out = {}
    for name, ppo in (("zero", ppo_zero), ("end", ppo_end)):
        fn = jax.jit(jax.shard_map(lambda b, ppo=ppo: prepare(ppo, b), mesh=mesh,
                                   in_specs=jax.P(), out_specs=jax.P(), check_vma=False))
        out[name] = fn(batch)
    adv_zero, _ = gae(d.reward, d.value, d.done, d.cut, batch.bootstrap_value, ppo_zero.gamma,
                      ppo_zero.gae_lambda)
    adv_end, target_end = gae(d.reward, d.value, d.done | d.cut, np.zeros_like(d.cut),
                              batch.bootstrap_value, ppo_end.gamma, ppo_end.gae_lambda)
    np.testing.assert_allclose(np.asarray(out["end"].target), np.asarray(target_end), rtol=1e-5,
                               atol=1e-5)
    # With "end" the step before the cut sees the reward; with "zero" it does not.
    assert float(adv_end[t // 2 - 1, 0]) - float(adv_zero[t // 2 - 1, 0]) > 0.5
    assert float(out["zero"].advantage[t // 2, 0]) == 0.0
    assert float(out["end"].advantage[t // 2, 0]) > 0.0


def on_policy_batch(net, ppo, params, rng):
    """A random batch whose behaviour logp and values are the network's own under ``params``:
    the update's first optimiser step sees ratio 1 (approximate KL ~0)."""
    cfg = tiny_network_config()
    batch = random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A, with_start_carry=True)
    apply = lambda p, *a: net.apply({"params": p}, *a)  # noqa: E731
    logits, value = sequence_forward(apply, params, batch, ppo.burn_in_steps)
    k, d = ppo.burn_in_steps, batch.data
    logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                              np.asarray(d.action[k:])[..., None], -1)[..., 0]
    return batch.replace(data=d.replace(
        logp=np.concatenate([np.asarray(d.logp[:k]), logp]).astype(np.float32),
        value=np.concatenate([np.asarray(d.value[:k]), np.asarray(value)]).astype(np.float32)))


@pytest.mark.parametrize("loop", ["scan", "host"])
def test_target_kl_stops_the_update_at_the_first_step_that_drifted(loop):
    """With a high learning rate the second step's KL is far above a tiny target_kl: the update
    keeps the first step only (the same parameters as a one-epoch update), and counts it;
    a target below the first step's KL refuses every step; a loose one changes nothing."""
    cfg = tiny_network_config()
    base = tiny_ppo_config(epochs=3, minibatches=1, learning_rate=3e-2)
    net, state = create_train_state(cfg, base, TINY_OBS_SHAPE, A, jax.random.key(4))
    batch = on_policy_batch(net, base, state.params, np.random.default_rng(5))

    def update_with(**overrides):
        ppo = tiny_ppo_config(**{**dict(epochs=3, minibatches=1, learning_rate=3e-2),
                                 **overrides})
        return make_update(net, ppo, make_data_mesh(), loop=loop)

    full, m_full = update_with()(state, batch)
    one_epoch, _ = update_with(epochs=1)(state, batch)
    tight = update_with(target_kl=1e-6)  # compiled once, used twice (compiles are the cost)
    stopped, m_stopped = tight(state, batch)
    loose, m_loose = update_with(target_kl=1e6)(state, batch)
    assert int(m_full["sgd_steps"]) == int(m_loose["sgd_steps"]) == 3
    assert float(m_full["approx_kl"]) > 1e-3  # steps 2 and 3 drifted far (lr 3e-2)
    assert int(m_stopped["sgd_steps"]) == 1 and int(stopped.grad_step) == 1
    for a, b in zip(jax.tree.leaves(stopped.params), jax.tree.leaves(one_epoch.params),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(loose.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The means cover the applied step and the refused one: (~0 + KL_2) / 2.
    assert 1e-6 < float(m_stopped["approx_kl"]) < float(m_full["approx_kl"]) * 1.5
    # A target the first step already exceeds (a batch from other parameters): no step at all.
    other = on_policy_batch(net, base, full.params, np.random.default_rng(5))
    none, m_none = tight(state, other)
    assert int(m_none["sgd_steps"]) == 0 and int(none.grad_step) == 0
    assert int(none.update_step) == 1
    for a, b in zip(jax.tree.leaves((none.params, none.opt_state)),
                    jax.tree.leaves((state.params, state.opt_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_max_grad_norm_clips_outside_the_optimiser_state():
    """The clip bounds the step's gradient, not Adam's state: a state made without it trains
    with it (a resume may switch it on), and a norm far below the gradient's changes the step."""
    cfg = tiny_network_config()
    ppo = tiny_ppo_config(epochs=1, minibatches=1)
    net, state = create_train_state(cfg, ppo, TINY_OBS_SHAPE, A, jax.random.key(6))
    batch = random_batch(np.random.default_rng(7), cfg, ppo, 4, TINY_OBS_SHAPE, A)
    plain, m_plain = make_update(net, ppo, make_data_mesh())(state, batch)
    clipped_ppo = tiny_ppo_config(epochs=1, minibatches=1, max_grad_norm=1e-3)
    clipped, m_clipped = make_update(net, clipped_ppo, make_data_mesh())(state, batch)
    # grad_norm is measured before the clip: the same gradient in both.
    np.testing.assert_allclose(float(m_clipped["grad_norm"]),
                               float(m_plain["grad_norm"]), rtol=1e-6)
    assert float(m_plain["grad_norm"]) > 1e-2
    assert jax.tree.structure(clipped.opt_state) == jax.tree.structure(plain.opt_state)
    # Adam's first step is lr * sign-like whatever the scale, but its second moment keeps the
    # scale: a second update with an unclipped gradient moves much further after a clipped one.
    mu_plain = jax.tree.leaves(plain.opt_state)[1]
    mu_clipped = jax.tree.leaves(clipped.opt_state)[1]
    assert float(np.abs(np.asarray(mu_clipped)).max()) < 0.1 * float(
        np.abs(np.asarray(mu_plain)).max())
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        tiny_ppo_config(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="target_kl must be positive"):
        tiny_ppo_config(target_kl=-1.0)


def test_the_input_offset_stays_where_it_was_set():
    """``network.input_norm``'s offset is a constant: updates (with the L2 term, a large
    learning rate, several epochs) leave it bit for bit, while every trained parameter moves.
    It once took the L2 term's gradient alone and Adam shrank it by lr * l2 / eps per step."""
    import dataclasses

    from jax_reset.networks import INPUT_MEAN, set_input_mean

    cfg = dataclasses.replace(tiny_network_config(), input_norm="demo_mean")
    ppo = dataclasses.replace(tiny_ppo_config(epochs=2, minibatches=1), learning_rate=1e-2,
                              l2_coef=1e-3)
    net, state = create_train_state(cfg, ppo, TINY_OBS_SHAPE, A, jax.random.key(5))
    mean = np.random.default_rng(6).random(TINY_OBS_SHAPE).astype(np.float32)
    state = state.replace(params=set_input_mean(state.params, mean))
    first = jax.tree.map(np.asarray, state.params)
    update = make_update(net, ppo, make_data_mesh())
    rng = np.random.default_rng(7)
    for _ in range(3):
        state, _ = update(state, random_batch(rng, cfg, ppo, 4, TINY_OBS_SHAPE, A))
    np.testing.assert_array_equal(np.asarray(state.params["torso"][INPUT_MEAN]), mean)
    moved = jax.tree_util.tree_flatten_with_path(jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, first))[0]
    assert all(d > 0 for path, d in moved if path[-1].key != INPUT_MEAN)
