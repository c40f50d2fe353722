"""The trainer's steps in-process, with a real pool, real emulators and real Orbax files: no
subprocess. Plus the resume-override sequence end to end (``python -m jax_reset.train``)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jax_reset import curriculum as cur
from jax_reset import metrics as m
from jax_reset.config import load
from jax_reset.curriculum import stall as stall_lib
from jax_reset.envs import AtariPool
from jax_reset.ppo.train_state import create_train_state
from jax_reset.run import checkpoint as ckpt_lib
from jax_reset.run import resolve as run_resolve
from jax_reset.run import state as run_state
from jax_reset.run.checkpoint_meta import make_meta
from jax_reset.run.layout import CHECKPOINT_DIR, CONFIG_NAME, Request, UsageError
from jax_reset.run.request import check_request
from jax_reset.training.rollout_source import SyncSource, ThreadedSource
from jax_reset.training.setup import build_trainer, make_group
from jax_reset.training.trainer import RunOutputs, Trainer
from tests.conftest import REPO, SMOKE, train_cmd


def fresh(config, run_dir: Path, pool: AtariPool, writer: m.MetricsWriter | None = None,
          ) -> tuple[Trainer, ckpt_lib.Checkpoints]:
    """A trainer at update 0 over ``pool``, built as a run builds it."""
    checkpoints = ckpt_lib.open_checkpoints(run_dir, keep_last=2)
    return build_trainer(config, make_group(config), pool,
                         RunOutputs(run_dir, checkpoints, writer=writer)), checkpoints


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_steps_collect_curriculum_learn_save_restore(tmp_path: Path) -> None:
    config = load(SMOKE, ["train.overlap=false"])
    with AtariPool(None, 4, 2, config=config.env, demo=config.demo, seed=0) as pool:
        trainer, checkpoints = fresh(config, tmp_path, pool)
        assert isinstance(trainer.source, SyncSource)
        before = trainer.state.train_state.params
        rollout, _ = trainer.collect(threading.Event())
        t, n = config.ppo.rollout_steps, config.train.num_envs
        assert rollout.transition.obs.shape == (t, n, *config.env.obs_shape)
        assert rollout.transition.valid.all() and rollout.policy_version == 0
        # Every emulator frame of the rollout: frame_skip per agent step, less where an
        # episode ended inside a skip.
        assert 0 < rollout.frames <= t * n * config.env.frame_skip
        assert set(rollout.metrics) == {m.ACTOR_INFERENCE_S, m.ACTOR_WARMUP_S,
                                        m.ACTOR_ENV_STEP_S}
        got = trainer.exchange(rollout, stop_requested=False)
        assert got.sums["frames"] == rollout.frames and not got.stop
        assert got.means == rollout.metrics and len(got.records) == len(rollout.records)
        trainer.advance_curriculum(got.records, rollout_index=0)
        assert trainer.state.curriculum.agent_steps == t
        update_metrics = trainer.learn(rollout, int(got.sums["frames"]))
        assert np.isfinite(update_metrics["train/loss"])
        assert (trainer.state.update, trainer.state.agent_steps, trainer.state.frames) == (
            1, t * n, rollout.frames)
        assert not leaves_equal(before, trainer.state.train_state.params)
        trainer.publish()
        # The next rollout acts with the new parameters (exact on-policy).
        second, _ = trainer.collect(threading.Event())
        assert second.policy_version == 1
        trainer.window.add(got.records, t * n, {m.LEARNER_S: 2.0})
        logged = trainer.log(update_metrics)
        assert logged[m.UPDATE] == 1 and logged[m.AGENT_STEPS] == t * n
        assert logged[m.LEARNER_S] == 2.0 and cur.MAX_STARTING_POINT in logged
        assert trainer.save()
        checkpoints.wait()
        saved = trainer.state

        # A new trainer restores exactly that run state.
        other, _ = fresh(config, tmp_path / "other", pool)
        restored = run_state.restore_state(checkpoints, other.state, trainer.outputs.meta,
                                           "here")
        checkpoints.close()
    assert (restored.update, restored.agent_steps, restored.frames) == (
        saved.update, saved.agent_steps, saved.frames)
    assert leaves_equal(restored.train_state, saved.train_state)
    assert cur.equal(restored.curriculum, saved.curriculum)
    assert restored.config == config


def test_overlapped_run_stays_one_version_behind_and_stops(tmp_path: Path) -> None:
    config = load(SMOKE, ["train.overlap=true", "train.total_updates=100",
                          "train.checkpoint_every=1000"])
    stop = threading.Event()
    with AtariPool(None, 4, 2, config=config.env, demo=config.demo, seed=0) as pool, \
            m.MetricsWriter(tmp_path, tensorboard=False) as writer:
        trainer, checkpoints = fresh(config, tmp_path, pool, writer)
        assert isinstance(trainer.source, ThreadedSource)
        real_log = trainer.log

        def log_then_stop(*args, **kwargs):  # a SIGTERM after the third update
            out = real_log(*args, **kwargs)
            if trainer.state.update == 3:
                stop.set()
            return out

        trainer.log = log_then_stop
        trainer.run(stop)
        assert not trainer.source.thread.is_alive()
        steps = checkpoints.steps()
        checkpoints.close()
    rows = m.read_jsonl(tmp_path / m.JSONL_NAME)
    assert [r["update"] for r in rows] == [1, 2, 3] and steps == [3]
    lags = [r[m.POLICY_LAG] for r in rows]
    assert lags[0] == 0 and set(lags) <= {0.0, 1.0}
    assert all(m.ACTOR_WAIT_S in r and m.LEARNER_WAIT_S in r for r in rows)


# Metrics that time things (they differ from run to run); every other logged value must not.
TIMED_KEYS = ("time", "timing/", "actor/env_step_s", "actor/inference_s", "actor/wait_s",
              "actor/warmup_s", m.AGENT_STEPS_PER_S)


def run_overlapped(config, run_dir: Path, slow: str) -> list[dict]:
    """An overlapped run of ``config`` where the learner (``slow="learner"``) or the actor
    (``"actor"``) takes 0.4 s longer per update: its metrics lines, the timings left out."""
    run_dir.mkdir()
    with AtariPool(None, 4, 2, config=config.env, demo=config.demo, seed=0) as pool, \
            m.MetricsWriter(run_dir, tensorboard=False) as writer:
        trainer, checkpoints = fresh(config, run_dir, pool, writer)
        target = trainer if slow == "learner" else trainer.actor
        name = "publish" if slow == "learner" else "collect"
        real = getattr(target, name)

        def delayed(*args, **kwargs):
            time.sleep(0.4)
            return real(*args, **kwargs)

        setattr(target, name, delayed)
        trainer.run(threading.Event())
        checkpoints.close()
    return [{k: v for k, v in r.items() if not k.startswith(TIMED_KEYS)}
            for r in m.read_jsonl(run_dir / m.JSONL_NAME)]


def test_an_overlapped_run_repeats_exactly_whichever_thread_is_slower(tmp_path: Path) -> None:
    """The actor thread acts with exactly the parameters one version behind and moves its
    starting points at a rollout fixed by the update that decided: a slow learner (the actor
    waits for parameters) and a slow actor (newer parameters are ready before it starts) give
    the same run, value for value."""
    config = load(SMOKE, ["train.overlap=true", "train.total_updates=8",
                          "train.checkpoint_every=1000", "curriculum.decision_interval=16"])
    slow_learner = run_overlapped(config, tmp_path / "a", "learner")
    slow_actor = run_overlapped(config, tmp_path / "b", "actor")
    assert [r["update"] for r in slow_learner] == list(range(1, 9))
    points = {r[cur.MAX_STARTING_POINT] for r in slow_learner}
    assert len(points) > 1, points  # the curriculum moved: the new points' timing is covered
    assert [r[m.POLICY_LAG] for r in slow_actor] == [0.0] + [1.0] * 7
    for a, b in zip(slow_learner, slow_actor, strict=True):
        assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}


def test_resume_overrides_persist_to_the_next_plain_resume(tmp_path: Path) -> None:
    """New run; ``--resume ppo.learning_rate=5e-5``; plain ``--resume``: the rate stays 5e-5
    in config.json, in the config the run trains with, and in the checkpoints it writes."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def train(*args: str) -> str:
        proc = subprocess.run(train_cmd("--run-dir", str(run_dir), *args), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    def rates() -> tuple[float, float]:
        with ckpt_lib.Checkpoints(run_dir / CHECKPOINT_DIR) as ckpt:
            meta = ckpt.read_meta()
        saved = json.loads((run_dir / CONFIG_NAME).read_text())
        return saved["ppo"]["learning_rate"], meta["config"]["ppo"]["learning_rate"]

    train("--config", str(SMOKE), "train.total_updates=1", "train.overlap=false")
    assert rates() == (1e-4, 1e-4)
    out = train("--resume", "ppo.learning_rate=5e-5", "train.total_updates=2")
    assert "ppo.learning_rate" in out and rates() == (5e-5, 5e-5)
    config, notes = run_resolve.resolve_config(Request(run_dir, True, None, ()), on_cpu=False)
    assert config.ppo.learning_rate == 5e-5 and config.train.total_updates == 2 and not notes
    out = train("--resume")  # plain: what `make train` does
    assert "done: 2 updates" in out and "changed settings" not in out
    assert rates() == (5e-5, 5e-5)
    # And a resume that trains, with another override, keeps it too, and updates with it.
    train("--resume", "train.total_updates=3")
    assert rates() == (5e-5, 5e-5)
    rows = m.read_jsonl(run_dir / m.JSONL_NAME)
    assert [r["update"] for r in rows] == [1, 2, 3]
    in_force = [r["train/learning_rate"] for r in rows]
    assert in_force == pytest.approx([1e-4, 5e-5, 5e-5])


def test_a_restart_before_the_first_checkpoint_starts_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load(SMOKE, ["train.total_updates=1"])
    run_resolve.write_config(config, run_dir)
    req = Request(run_dir, True, None, ("ppo.learning_rate=3e-5",))
    check_request(req)
    got, notes = run_resolve.resolve_config(req, on_cpu=False)
    # the demo path is saved absolute (from the working directory the command started in)
    demo = dataclasses.replace(config.demo, demo_path=os.path.abspath(config.demo.demo_path))
    assert got == dataclasses.replace(config, demo=demo, ppo=dataclasses.replace(
        config.ppo, learning_rate=3e-5))
    assert notes == [f"no checkpoint in {run_dir} yet: starting from update 0 with its config.json",
                     "resuming with changed settings: ppo.learning_rate"]
    with pytest.raises(UsageError, match=r"cannot change network\.core_size"):
        check_request(Request(run_dir, True, None, ("network.core_size=32",)))


def test_a_checkpoint_from_before_the_runtime_hyperparameters_restores(tmp_path: Path) -> None:
    """A version-1 train state (no hyperparameters, no version in the metadata) restores into
    today's, with the learning rate the resumed config chose."""
    from jax_reset.ppo.train_state import current_hyperparams, v1_target

    config = load(SMOKE)
    _, train_state = create_train_state(config.network, config.ppo, config.env.obs_shape, 6,
                                        jax.random.PRNGKey(3))
    old = run_state.RunState(train_state=v1_target(train_state), update=5, agent_steps=320,
                             frames=999, curriculum=cur.init(4, 1000, config.curriculum),
                             config=config)
    meta = make_meta(config, train_state.params, game="Pong", num_actions=6)
    with ckpt_lib.open_checkpoints(tmp_path, keep_last=2) as checkpoints:
        assert run_state.save_state(checkpoints, old, meta)
    resumed = load(SMOKE, ["ppo.learning_rate=5e-5"])
    _, fresh_state = create_train_state(config.network, config.ppo, config.env.obs_shape, 6,
                                        jax.random.PRNGKey(0))
    target = dataclasses.replace(old, train_state=fresh_state, update=0, agent_steps=0,
                                 frames=0, config=resumed)
    with ckpt_lib.open_checkpoints(tmp_path, keep_last=2) as checkpoints:
        got = run_state.restore_state(checkpoints, target,
                                      make_meta(resumed, fresh_state.params), "here")
    assert (got.update, got.agent_steps, got.frames) == (5, 320, 999)
    assert leaves_equal(got.train_state.params, train_state.params)
    assert current_hyperparams(got.train_state)["learning_rate"] == pytest.approx(5e-5)


# A curriculum that cannot move back: Pong at frame 13,840, where every action concedes the
# point (docs/results.md), and a 100% threshold; a decision at every update (16-step rollouts),
# each a failure that moves the starting point 100 frames later. No warm-up (not under test).
STALLED = ["train.overlap=false", "stall.enabled=true", "stall.patience_decisions=1",
           "curriculum.start_at=13840", "curriculum.success_threshold=1.0",
           "curriculum.decision_interval=16", "train.warmup_steps=0"]


def resumed(config, checkpoints: ckpt_lib.Checkpoints, run_dir: Path, pool: AtariPool,
            writer: m.MetricsWriter | None = None) -> Trainer:
    """A trainer from the newest checkpoint under ``config``, built as a resume builds it."""
    return build_trainer(
        config, make_group(config), pool, RunOutputs(run_dir, checkpoints, writer=writer),
        restore=lambda target, meta: run_state.restore_state(checkpoints, target, meta, "here"))


def test_a_stalled_curriculum_lowers_the_rate_in_force_and_a_resume_keeps_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jax_reset.curriculum import stall
    from jax_reset.ppo.train_state import current_hyperparams

    config = load(SMOKE, STALLED)
    lr, ent = config.ppo.learning_rate, config.ppo.ent_coef
    never = threading.Event()
    with AtariPool(None, 4, 2, config=config.env, demo=config.demo, seed=0) as pool:
        with m.MetricsWriter(tmp_path, tensorboard=False) as writer:
            trainer, checkpoints = fresh(config, tmp_path, pool, writer)
            assert trainer.state.stall == stall.init(13840)
            for _ in range(2):
                assert trainer.step(never, never)
            # Halved at each stalled decision, and used by that update already.
            assert trainer.state.curriculum.max_starting_point >= 13840  # never moved back
            assert trainer.state.stall.scale == 0.25
            assert current_hyperparams(trainer.state.train_state) == pytest.approx(
                {"learning_rate": lr / 4, "ent_coef": ent / 4})
            # Runtime values: the update compiled once for the three learning rates.
            assert trainer.update_fn.jitted._cache_size() == 1
            checkpoints.wait()  # step() saved update 2 (smoke's checkpoint_every = 2)
            assert checkpoints.latest_step() == 2 and not trainer.save()
        out = capsys.readouterr().out
        assert "update 1: curriculum stalled at starting point" in out
        assert "learning rate 5e-05, ent_coef 5e-05 (stall scale 0.5)" in out
        assert "update 2: curriculum stalled" in out and "(stall scale 0.25)" in out
        assert checkpoints.read_item(run_state.STALL_ITEM)["scale"] == 0.25

        # The resume continues with the lowered values, and lowers them once more.
        with m.MetricsWriter(tmp_path, resume_update=2, tensorboard=False) as writer:
            again = resumed(config, checkpoints, tmp_path, pool, writer)
            assert again.state.stall == trainer.state.stall and again.state.update == 2
            assert current_hyperparams(again.state.train_state) == pytest.approx(
                {"learning_rate": lr / 4, "ent_coef": ent / 4})
            assert again.step(never, never)
            assert again.update_fn.jitted._cache_size() == 1
        # An override of the configured rate changes the base the scale applies to; a resume
        # with the stall handling off trains with the configured values.
        higher = load(SMOKE, [*STALLED, "ppo.learning_rate=1e-3"])
        with_base = resumed(higher, checkpoints, tmp_path / "b", pool)
        assert current_hyperparams(with_base.state.train_state)["learning_rate"] == (
            pytest.approx(1e-3 / 4))
        off = resumed(load(SMOKE, [*STALLED, "stall.enabled=false"]), checkpoints,
                      tmp_path / "c", pool)
        assert off.state.stall.scale == 1.0
        assert current_hyperparams(off.state.train_state) == pytest.approx(
            {"learning_rate": lr, "ent_coef": ent})
        checkpoints.close()
    rows = m.read_jsonl(tmp_path / m.JSONL_NAME)
    assert [r["update"] for r in rows] == [1, 2, 3]
    assert [r[m.LEARNING_RATE] for r in rows] == pytest.approx([lr / 2, lr / 4, lr / 8])
    assert [r[m.ENT_COEF] for r in rows] == pytest.approx([ent / 2, ent / 4, ent / 8])
    assert [r[stall_lib.STALL_SCALE] for r in rows] == [0.5, 0.25, 0.125]
    assert all(r[stall_lib.STALL_DECISIONS] == 0 and r[cur.DECISIONS] == r["update"] for r in rows)


def test_a_checkpoint_without_the_stall_item_restores_with_a_fresh_controller(
        tmp_path: Path) -> None:
    """Checkpoints written before the stall state existed: ``stall.init`` at the restored
    curriculum's maximum, the configured values in force."""
    from jax_reset.curriculum import stall
    from jax_reset.ppo.train_state import current_hyperparams

    config = load(SMOKE, STALLED)
    _, train_state = create_train_state(config.network, config.ppo, config.env.obs_shape, 6,
                                        jax.random.PRNGKey(3))
    curriculum = cur.init(4, 22_869, dataclasses.replace(config.curriculum, start_at=20_000))
    meta = make_meta(config, train_state.params, game="Pong", num_actions=6)
    counters = {k: np.asarray(v, np.int64) for k, v in
                {"update": 4, "agent_steps": 256, "frames": 900}.items()}
    with ckpt_lib.open_checkpoints(tmp_path, keep_last=2) as checkpoints:  # no "stall" item
        assert checkpoints.save(4, {"train_state": train_state, "counters": counters},
                                cur.to_json(curriculum), meta,
                                {cur.MAX_STARTING_POINT: curriculum.max_starting_point})
    lowered = dataclasses.replace(stall.init(22_000), scale=0.5)
    target = run_state.RunState(train_state=train_state, update=0, agent_steps=0, frames=0,
                         curriculum=cur.init(4, 22_869, config.curriculum), config=config,
                         stall=lowered)
    with ckpt_lib.open_checkpoints(tmp_path, keep_last=2) as checkpoints:
        got = run_state.restore_state(checkpoints, target, meta, "here")
    assert got.update == 4 and got.stall == stall.init(20_000)
    assert current_hyperparams(got.train_state)["learning_rate"] == pytest.approx(
        config.ppo.learning_rate)
