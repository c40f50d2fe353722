"""A run, from the command line's request to the last checkpoint: the config resolved for this
machine (``jax_reset.run_config``), the sizes and the process group checked, the environment
pool opened, the network created and the run state started or restored from a checkpoint (newer
checkpoints set aside), the metrics writer and progress display opened, then the ``Trainer``
(``jax_reset.trainer``) created and run until done or stopped, and the closing line printed.
``python -m jax_reset.train`` calls ``run`` once it has checked the request and taken the lock.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np

from jax_reset import curriculum as cur
from jax_reset import metrics as m
from jax_reset import run_dir as rd
from jax_reset import stall as stall_lib
from jax_reset.process_group import ProcessGroup
from jax_reset.run_config import detect_platform, resolve
from jax_reset.trainer import Trainer


def run(req: rd.Request, full_size: bool = False, profile: tuple[int, int] | None = None,
        ) -> int:
    """Trains as ``req`` asks; 0 when done or stopped by a signal (a checkpoint was written).
    Raises ``run_dir.UsageError`` (and the config's, demo's and pool's errors) for the caller
    to map to exit codes."""
    from jax_reset import checkpoint as ckpt_lib
    from jax_reset.envs import AtariPool
    from jax_reset.placement import PlacementError, resolve_placement
    from jax_reset.ppo.update import TRAIN_STATE_VERSION, create_train_state
    from jax_reset.sizes import SizeError, derive

    config, notes = resolve(req, full_size)
    headers = rd.check_demo_paths(config)
    rd.check_profile(profile, config.train.total_updates)
    try:
        placement = resolve_placement(  # "auto" splits only where the batch still divides
            config.train.placement, fits=lambda learners: config.train.num_envs % (
                jax.process_count() * learners * config.ppo.minibatches) == 0)
        mesh = placement.learning_mesh  # the learner's devices, of every process
        sizes = derive(config, jax.process_count(), mesh.devices.size, jax.process_index(),
                       acting_devices=len(placement.acting))
        # Each environment's demo: contiguous blocks of the job's environments.
        env_demos = cur.env_demos(sizes.num_envs_global, len(config.demo.paths))
    except (SizeError, PlacementError, ValueError) as err:
        raise rd.UsageError(str(err)) from None
    group = ProcessGroup(mesh, sizes, placement)
    group.barrier("jax_reset.train: run directory checked")  # before any process writes to it
    if group.is_main:
        print(f"devices: {detect_platform()[1]}" + (
            f" per process; {sizes.num_processes} processes, {sizes.num_devices} devices in all"
            if group.multi else ""), flush=True)
        if not placement.shared:
            print(placement.describe(), flush=True)
        for note in notes:
            print(note, flush=True)
        for d, (path, h) in enumerate(zip(config.demo.paths, headers, strict=True)):
            which = f"demo {d} of {len(headers)}: " if len(headers) > 1 else "demo "
            print(f"game: {h['game']}, {which}{path} ({h['num_frames']:,} frames, score "
                  f"{h['score']:g})", flush=True)
    if group.multi:
        print(f"process {group.index} of {sizes.num_processes}: environments {sizes.env_lo} to "
              f"{sizes.env_hi - 1} of {sizes.num_envs_global}", flush=True)
    train = config.train
    with ckpt_lib.StopFlag() as stop, AtariPool(
            None, sizes.num_envs_local, train.workers, config=config.env, demo=config.demo,
            seed=train.seed + sizes.env_lo,
            env_demos=env_demos[sizes.env_lo:sizes.env_hi],
            wait=False) as pool, rd.open_checkpoints(  # workers start while the network builds
            req.run_dir, train.keep_last) as checkpoints:
        network, train_state = create_train_state(config.network, config.ppo,
                                                  config.env.obs_shape, pool.num_actions,
                                                  jax.random.PRNGKey(train.seed))
        resuming = req.resume and checkpoints.latest_step() is not None
        if config.network.input_norm == "demo_mean" and not resuming:  # (else restored)
            train_state = train_state.replace(params=input_mean_params(config,
                                                                       train_state.params))
        meta = ckpt_lib.make_meta(config, train_state.params, game=pool.game,
                                  num_actions=int(pool.num_actions),
                                  num_frames=pool.demo_num_frames,
                                  demos=[{"index": d, "path": p, "num_frames": t}
                                         for d, (p, t) in enumerate(zip(
                                             config.demo.paths, pool.demos_num_frames,
                                             strict=True))],
                                  **{rd.STATE_VERSION_KEY: TRAIN_STATE_VERSION})
        state = rd.RunState(train_state=group.replicate(train_state),  # Orbax restores into
                            update=0, agent_steps=0, frames=0,  # the target's shardings
                            curriculum=cur.init_curricula(sizes.num_envs_global,
                                                          pool.demos_num_frames,
                                                          config.curriculum), config=config)
        if resuming:
            state, _ = rd.restore_state(
                checkpoints, state, meta, where=str(req.run_dir), step=req.checkpoint,
                reconfigure=lambda saved: rd.resume_config(
                    saved.get("config", {}), req, saved.get(rd.RUNTIME_KEY, {}),
                    on_cpu=not full_size and detect_platform()[0])[0],
                report=(lambda line: print(line, flush=True)) if group.is_main else (
                    lambda line: None))
            config = state.config
            # Newer checkpoints (a --checkpoint N, or ones that did not restore) are moved
            # aside before anything is saved: the run continues from this one.
            moved = checkpoints.set_aside(state.update)
            group.barrier("jax_reset.train: newer checkpoints set aside")
            checkpoints.reload()
            if group.is_main:
                if moved:
                    print(f"moved the newer checkpoints to {moved[0].parent} (kept): "
                          f"{', '.join(p.name for p in moved)}", flush=True)
                lowered = ""
                if state.stall.scale != 1.0:  # a stalled run keeps its lowered values
                    lr, ent = stall_lib.hyperparams(config.ppo.learning_rate,
                                                    config.ppo.ent_coef, state.stall)
                    lowered = (f" (stall scale {state.stall.scale:g}: learning rate {lr:.3g}, "
                               f"ent_coef {ent:.3g})")
                print(f"resumed from update {state.update} at starting point "
                      f"{state.curriculum.max_starting_point}{lowered}", flush=True)
        rd.check_profile(profile, train.total_updates, state.update)
        if group.is_main:
            rd.write_config(config, req.run_dir)
        writer = display = None
        if group.is_main:
            writer = m.MetricsWriter(req.run_dir,
                                     resume_update=state.update if req.resume else None)
            if writer.set_aside_lines:
                print(f"moved the {writer.set_aside_lines} metrics lines after update "
                      f"{state.update} to {req.run_dir / m.SET_ASIDE_NAME} (kept)", flush=True)
            display = m.ProgressDisplay(train.total_updates, pool.demo_num_frames,
                                        start_update=state.update,
                                        enabled=None if train.progress else False,
                                        start_point=state.curriculum.max_starting_point)
        trainer = Trainer(config, sizes, group, pool, network, state, req.run_dir,
                          checkpoints, meta, writer, display)
        try:
            with display or contextlib.nullcontext():
                trainer.run(stop.event, profile if group.is_main else None)
        finally:
            if writer is not None:
                writer.close()
    if group.is_main:
        s = trainer.state
        if stop.requested or s.update < train.total_updates:
            print(f"stopped by {stop.signal_name or 'another process'} after update {s.update}: "
                  f"checkpoint saved; continue with --resume --run-dir {req.run_dir}", flush=True)
        else:
            print(f"done: {s.update} updates, starting point "
                  f"{s.curriculum.max_starting_point}", flush=True)
    return 0


def input_mean_params(config: Any, params: Any) -> Any:
    """``params`` with the torso's input offset set to the demo's mean observation
    (``network.input_norm = "demo_mean"``; several demos: the mean over all their frames, each
    demo weighted by its length): the same on every process (the same demos)."""
    import time

    from jax_reset import demos
    from jax_reset.envs.demo_obs import demo_mean_observation
    from jax_reset.networks import set_input_mean

    t0 = time.perf_counter()
    means, weights = [], []
    for path in config.demo.paths:
        demo = demos.load(path, rom_path=config.demo.rom_path, check=False)
        means.append(demo_mean_observation(demo, config.env, config.demo.rom_path))
        weights.append(float(demo.num_frames))
    mean = means[0] if len(means) == 1 else np.average(
        np.stack(means), axis=0, weights=weights).astype(means[0].dtype)
    if jax.process_index() == 0:
        whose = "the demos'" if len(means) > 1 else "the demo's"
        print(f"input offset: {whose} mean observation ({mean.shape[0]}x{mean.shape[1]}x"
              f"{mean.shape[2]}) in {time.perf_counter() - t0:.1f} s", flush=True)
    return set_input_mean(params, mean)
