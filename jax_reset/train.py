"""`python -m jax_reset.train`: PPO on a backward curriculum of demo states.

    python -m jax_reset.train --config configs/pong.toml --run-dir runs/pong
    python -m jax_reset.train --config configs/pong.toml --run-dir runs/pong ppo.learning_rate=3e-5
    python -m jax_reset.train --run-dir runs/pong --resume          # continues exactly there
    python -m jax_reset.train --config configs/smoke.toml --run-dir /tmp/s --profile-steps 3:5
    python -m jax_reset.train --config configs/smoke.toml --run-dir /tmp/s --local-processes 2

Wiring only: the pool (``jax_reset.envs``) steps the emulators in worker processes and applies
the per-frame episode rules; the learner (``jax_reset.ppo``) acts and updates; the curriculum
(``jax_reset.curriculum``) moves the starting points from the gathered episode records;
checkpoints (``jax_reset.checkpoint``) and metrics (``jax_reset.metrics``) write the run
directory. With ``train.overlap`` an actor thread collects the next rollout with the previous
parameters while the learner updates on the last one (Cleanba style, queue of one, exactly one
version behind); the stored behaviour log-probabilities keep the PPO ratio right. Everything
touching Orbax, signals and the curriculum stays on the main thread; the pool belongs to
whichever thread acts.

An episode that starts from demo frame s costs no environment step beyond its own: the pool
restores the emulator at s, and the recurrent state entering s is the learner's scanned warm-up
over the demo's observations of the ``train.warmup_steps`` agent steps before s (held in memory
by ``DemoHistory``, byte-identical to the pool's frames), computed once per start frame and
rollout. Without a GPU the config's ``[on_cpu]`` table applies (and the run says so).

``--resume`` continues exactly: update and step counters, parameters, optimizer state, RNG,
the curriculum's starting points, success table and pending records. The emulators start new
episodes (their mid-episode states are not saved).

Several processes (hosts; ``jax_reset.distributed``): ``--local-processes N`` starts N on this
machine; ``--distributed`` (JAX's cluster auto-detection, e.g. SLURM) or ``--coordinator
--num-processes --process-id`` (or the ``JAX_RESET_*`` variables) join a job, one process per
host. The mesh spans every process's devices; process p steps its own block of
``train.num_envs / processes`` environments and feeds that block of the global batch; the
parameters are replicated; each update gathers every process's episode records, so every
process takes the same curriculum decision, and every logged mean is global. One Orbax
checkpoint serves the whole job and resumes with any number of processes that divides the
batch. Only process 0 writes ``metrics.jsonl``, TensorBoard and the display; each process
appends digests of its parameters and curriculum to ``processes/p<i>.jsonl`` after each
decision and checkpoint, and the run fails if they differ. A process that fails prints one
line and leaves at once; the others fail on the missing peer (launcher, or JAX's heartbeat).

Exit codes: 0 done or stopped cleanly by SIGTERM/SIGINT (a checkpoint was written), 2 bad
input (one line on stderr, nothing written), 1 a failure during the run (the last checkpoint
stays).
"""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jax_reset import config as config_lib
from jax_reset import curriculum as cur

CONFIG_NAME = "config.json"
PROCESSES_DIR = "processes"  # per-process agreement digests (several processes only)
# A rollout's timings, averaged over the processes (a fixed set: every process sends the same).
EXCHANGED_TIMING = ("timing/inference_s", "timing/warmup_s", "timing/env_step_s",
                    "timing/actor_wait_s")
CHECKPOINT_DIR = "checkpoints"


class UsageError(ValueError):
    """Bad input found before anything is written."""


# --------------------------------------------------------------------------------------------
# Command line and run directory.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jax_reset.train",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", help="configs/<game>.toml (default on --resume: the run's own)")
    p.add_argument("--run-dir", required=True, help="where checkpoints, config and logs go")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--profile-steps", metavar="A:B",
                   help="write a jax.profiler trace of updates A..B into the run directory")
    p.add_argument("--full-size", action="store_true",
                   help="without a GPU, still use the full-size config (skip its [on_cpu])")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ppo.learning_rate=3e-5")
    g = p.add_argument_group("several processes (one per host)")
    g.add_argument("--local-processes", type=int, metavar="N",
                   help="start N processes of one job on this machine and wait for them")
    g.add_argument("--distributed", action="store_true",
                   help="join a job found by JAX's cluster auto-detection (SLURM, Open MPI, ...)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    g.add_argument("--heartbeat-timeout", type=int, default=30, metavar="S",
                   help="seconds without a peer's heartbeat before the job fails (default 30)")
    return p.parse_args(argv)


def parse_profile(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        a, b = (int(x) for x in spec.split(":"))
    except ValueError:
        raise UsageError(f"--profile-steps {spec!r}: expected A:B, two update numbers") from None
    if not 1 <= a <= b:
        raise UsageError(f"--profile-steps {spec!r}: need 1 <= A <= B (updates count from 1)")
    return a, b


def detect_platform() -> tuple[bool, str]:
    """(on_cpu, description): whether no accelerator was found, and what was."""
    import jax

    devices = jax.local_devices()
    kinds = sorted({d.device_kind for d in devices})
    on_cpu = jax.default_backend() == "cpu"
    return on_cpu, f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()})"


def resolve_config(args: argparse.Namespace, run_dir: Path,
                   ) -> tuple[config_lib.Config, list[str]]:
    """The run's config and the notes to print; refuses what a resume may not change.

    The run directory is checked before JAX is imported (detecting the platform does), so
    that a refusal is immediate.
    """
    notes = []
    saved_path = run_dir / CONFIG_NAME
    if args.resume:
        if not saved_path.is_file():
            raise UsageError(f"{run_dir}: no run to resume (no {CONFIG_NAME})")
        saved = config_lib.load(saved_path)
        if args.config:
            on_cpu = not args.full_size and detect_platform()[0]
            current = config_lib.load(args.config, args.overrides, on_cpu=on_cpu)
        else:
            current = config_lib.load(saved_path, args.overrides)
        changed = config_lib.diff(config_lib.to_dict(saved), config_lib.to_dict(current))
        frozen = [k for k in changed if any(k == f or k.startswith(f + ".")
                                            for f in config_lib.RESUME_FROZEN)]
        if frozen:
            raise UsageError(f"{run_dir}: a resume cannot change {', '.join(frozen[:4])}; start "
                             "a new run directory for that")
        if changed:
            notes.append(f"resuming with changed settings: {', '.join(changed)}")
        return current, notes
    if not args.config:
        raise UsageError("--config is required for a new run")
    if saved_path.exists() or (run_dir / CHECKPOINT_DIR).exists():
        raise UsageError(f"{run_dir} already holds a run: pass --resume, or choose a new "
                         "--run-dir")
    config_lib.load(args.config, args.overrides)  # bad input fails before JAX starts
    on_cpu = not args.full_size and detect_platform()[0]
    config = config_lib.load(args.config, args.overrides, on_cpu=on_cpu)
    if on_cpu and config_lib.CPU_TABLE in config_lib.read_file(args.config):
        notes.append("no GPU found: using the CPU-sized settings ([on_cpu]) of "
                     f"{args.config}; --full-size keeps the full-size ones")
    return config, notes


# --------------------------------------------------------------------------------------------
# Demo observations for the recurrent warm-up.


class DemoHistory:
    """The demo's frames as the pool's preprocessing shows them, built on demand, in memory.

    ``frames[f]`` is the preprocessed screen after ``f`` demo actions (max-pooled with the
    screen before it, as the pool does), uint8 [C, H, W]; the stacked observation of an agent
    following the demo at frame f is ``frames[f - skip * (stack - 1 - j)]`` for j < stack
    (clamped at 0): byte for byte what the pool's restore puts in the frame stack, made by the
    pool's own restore code (``jax_reset.envs.DemoRenderer``; tested).
    Only frames from ``lo`` to the demo's end are built: ``ensure`` extends them backwards as
    the curriculum moves, restoring the demo's checkpoints (exact, like the pool's dense
    states) and replaying, a few milliseconds per hundred frames. The array is allocated at
    full size but untouched pages cost no memory: T x C x H x W bytes once the curriculum has
    reached the game's start (Pong at 105x80 RGB: 0.6 GB; at the CPU size: 30-70 MB).
    """

    MARGIN = 2000  # frames built beyond what is asked, so that extensions are rare

    def __init__(self, demo_path: str | Path, env: Any, rom_path: str | None = None,
                 lo: int = 0) -> None:
        from jax_reset import demos
        from jax_reset.envs import DemoRenderer

        self.demo = demos.load(demo_path, rom_path=rom_path, check=False)
        self._renderer = DemoRenderer(self.demo, env, rom_path)
        self.env = env
        self.skip, self.stack = env.frame_skip, env.stack_num
        self.num_frames = t = self.demo.num_frames
        self.frames = np.zeros((t + 1, env.channels, env.img_height, env.img_width), np.uint8)
        self.lo = t + 1  # frames[lo:] are built
        self.build_s = 0.0
        self.ensure(lo)

    def ensure(self, lo: int) -> None:
        """Builds the frames from ``lo`` (at least) on, if they are not yet."""
        lo = max(int(lo), 0)
        if lo >= self.lo:
            return
        t0 = time.perf_counter()
        lo = max(lo - self.MARGIN, 0)
        self._build(lo, self.lo)
        self.lo = lo
        self.build_s += time.perf_counter() - t0

    def _build(self, a: int, b: int) -> None:
        """frames[a:b], in one replay from the latest checkpoint before them."""
        self._renderer.slots(np.arange(a, b), out=self.frames[a:b])

    def stacked(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B, stack * C, H, W]: the observations at demo frames ``frames`` int [B]."""
        from jax_reset.envs.demo_obs import stack_frames

        frames = np.asarray(frames, np.int64)
        idx = np.minimum(stack_frames(frames, self.env), self.num_frames)  # [B, stack]
        if idx.size and idx.min() < self.lo:
            raise ValueError(f"demo frame {idx.min()} is not built (from {self.lo} on)")
        obs = self.frames[idx]  # [B, stack, C, H, W]
        return obs.reshape(len(frames), -1, *obs.shape[3:])

    def needed_from(self, starting_point: int, length: int) -> int:
        """The first frame a warm-up of ``length`` steps before ``starting_point`` reads."""
        return starting_point - self.skip * (length + self.stack - 1)

    def history(self, starts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(obs uint8 [B, L, stack * C, H, W], mask bool [B, L]): the ``length`` agent steps
        before each start frame, oldest first (frames s - skip * L ... s - skip); steps before
        the game's start are masked out."""
        starts = np.asarray(starts, np.int64)
        steps = self.skip * np.arange(length, 0, -1)
        frames = starts[:, None] - steps[None, :]  # [B, L]
        mask = frames >= 0
        obs = self.stacked(np.maximum(frames, 0).reshape(-1))
        return obs.reshape(len(starts), length, *obs.shape[1:]), mask


# --------------------------------------------------------------------------------------------
# Acting.


@dataclasses.dataclass
class Rollout:
    """One rollout of T steps for all environments, ready for ``assemble_batch``."""

    transition: Any  # ppo.data.Transition, leaves [T, B, ...] (NumPy)
    bootstrap_value: np.ndarray  # [B]
    tail_carry: Any
    records: cur.EpisodeRecords
    frames: int  # emulator frames stepped
    timing: dict[str, float]
    policy_version: int | None = None  # updates that made the acting parameters (overlap)


class Actor:
    """Steps the pool with the policy; keeps the acting state between rollouts.

    Owned by one thread at a time. Starting points set from another thread are applied at the
    start of the next rollout (the pool only accepts them between steps).
    """

    def __init__(self, pool: Any, act_fn: Any, network_config: Any, rollout_steps: int,
                 burn_in_steps: int, act_key: Any, frame_skip: int,
                 history: DemoHistory | None = None, warmup_fn: Any = None,
                 warmup_steps: int = 0) -> None:
        import jax

        from jax_reset.networks import init_carry

        self.pool, self.act_fn = pool, act_fn
        self.t, self.k = rollout_steps, burn_in_steps
        self.act_key = act_key
        self.frame_skip = frame_skip
        self.carry = init_carry(network_config, pool.num_envs)
        self._jax = jax
        # Warm starts need a recurrent core, stored demo observations and a history length.
        self.warm = (history is not None and warmup_steps > 0 and bool(jax.tree.leaves(
            self.carry)))
        self.history, self.warmup_fn, self.warmup_steps = history, warmup_fn, warmup_steps
        self._pending_points: np.ndarray | None = None
        self._lock = threading.Lock()
        first = pool.reset()
        self.obs, self.start, self.boost = first.obs, first.episode_start, first.entropy_boost
        self.frame = first.frame
        self.next_out = None  # the action/value for self.obs, computed with the bootstrap
        self.next_start_carry = None
        self.warmup_s = 0.0
        self._warm_cache: dict[int, list[np.ndarray]] = {}  # start frame -> state, per rollout

    def _start_carry(self, params: Any) -> Any:
        """State to reset to where an episode starts: the warm-up over the demo's observations
        before its start frame (numpy leaves [N, core_size]); None without warm starts."""
        if not self.warm:
            return None
        jax = self._jax
        out = jax.tree.map(lambda c: np.zeros(c.shape, np.float32), self.carry)
        ids = np.flatnonzero(self.start)
        if not len(ids):
            return out
        t0 = time.perf_counter()
        starts = self.frame[ids]
        # 80% of episodes start at their environment's starting point: with the parameters
        # fixed for the rollout, each start frame is warmed up once (the cache is per rollout).
        missing = np.array(sorted(set(starts.tolist()) - self._warm_cache.keys()), np.int64)
        if len(missing):
            obs, mask = self.history.history(missing, self.warmup_steps)
            # Pad to a power of two: a few compiled sizes, not one per count.
            size = min(1 << (len(missing) - 1).bit_length(), self.pool.num_envs)
            if size > len(missing):
                pad = size - len(missing)
                obs = np.concatenate([obs, np.zeros((pad, *obs.shape[1:]), obs.dtype)])
                mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)])
            warm = [np.asarray(w) for w in jax.tree.leaves(self.warmup_fn(params, obs, mask))]
            for i, frame in enumerate(missing.tolist()):
                self._warm_cache[frame] = [w[i] for w in warm]
        for i, frame in zip(ids.tolist(), starts.tolist(), strict=True):
            for o, w in zip(jax.tree.leaves(out), self._warm_cache[frame], strict=True):
                o[i] = w
        self.warmup_s += time.perf_counter() - t0
        return out

    def set_starting_points(self, points: np.ndarray) -> None:
        with self._lock:
            self._pending_points = np.asarray(points, np.int64).copy()

    def _apply_points(self) -> None:
        with self._lock:
            points, self._pending_points = self._pending_points, None
        if points is not None:
            if self.warm:
                self.history.ensure(self.history.needed_from(int(points.min()),
                                                             self.warmup_steps))
            self.pool.set_starting_points(None, points)

    def collect(self, params: Any, index: int, stop: threading.Event | None = None) -> Rollout:
        """Rollout number ``index`` (its acting keys derive from it: resumable)."""
        from jax_reset.ppo.data import zeros_transition

        jax = self._jax
        self._apply_points()
        t_inf = t_env = 0.0
        self.warmup_s = 0.0
        self._warm_cache.clear()  # new parameters
        n = self.pool.num_envs
        buf = zeros_transition(self.t, n, self.obs.shape[1:],
                               carry=self.carry if self.warm else None)
        keys = jax.random.split(jax.random.fold_in(self.act_key, index), self.t + 1)
        records = []
        frames = 0
        tail_carry = self.carry
        out, start_carry = self.next_out, self.next_start_carry
        for step in range(self.t):
            if stop is not None and stop.is_set():
                raise _Stopped
            if step == self.t - self.k:
                tail_carry = self.carry
            t0 = time.perf_counter()
            if out is None:
                start_carry = self._start_carry(params)
                out = self.act_fn(params, self.obs, self.start, self.boost, self.carry,
                                  keys[step], start_carry)
            if start_carry is not None:
                for b, c in zip(jax.tree.leaves(buf.start_carry), jax.tree.leaves(start_carry),
                                strict=True):
                    b[step] = c
            action = np.asarray(out.action)
            t1 = time.perf_counter()
            res = self.pool.step(action)
            t2 = time.perf_counter()
            t_inf += t1 - t0
            t_env += t2 - t1
            buf.obs[step] = self.obs
            buf.episode_start[step] = self.start
            buf.entropy_boost[step] = self.boost
            buf.action[step] = action
            buf.logp[step] = np.asarray(out.logp)
            buf.value[step] = np.asarray(out.value)
            buf.reward[step] = res.reward
            buf.done[step] = res.done
            buf.cut[step] = res.cut
            buf.valid[step] = True  # the pool resets inside the ending step: no pseudo-steps
            frames += int(res.step_frames.sum())  # exact: skips cut by an end, no restores
            ended = res.ended
            if ended.any():
                records.append(cur.EpisodeRecords.make(
                    res.ep_start_frame[ended], res.ep_as_good_as_demo[ended],
                    res.ep_score[ended], res.ep_end_frame[ended]))
            self.carry = out.carry
            self.obs, self.start, self.boost = res.obs, res.episode_start, res.entropy_boost
            self.frame = res.frame
            out = start_carry = None
        if self.k == 0:
            tail_carry = self.carry
        t0 = time.perf_counter()
        # Acting once on the next observation gives both the bootstrap value and step 0 of the
        # next rollout (the learner's convention, ppo.data.TrainBatch).
        self.next_start_carry = self._start_carry(params)
        self.next_out = self.act_fn(params, self.obs, self.start, self.boost, self.carry,
                                    keys[self.t], self.next_start_carry)
        bootstrap = np.asarray(self.next_out.value)
        t_inf += time.perf_counter() - t0
        return Rollout(transition=buf, bootstrap_value=bootstrap, tail_carry=tail_carry,
                       records=cur.EpisodeRecords.concatenate(records), frames=frames,
                       timing={"timing/inference_s": t_inf - self.warmup_s,
                               "timing/warmup_s": self.warmup_s,
                               "timing/env_step_s": t_env})


class _Stopped(Exception):
    pass


class ParamsBox:
    """The latest parameters for the actor thread (a copy: the learner donates its own)."""

    def __init__(self, params: Any, version: int) -> None:
        self._cond = threading.Condition()
        self._params = params
        self.version = version  # the number of updates that made these parameters

    def set(self, params: Any, version: int) -> None:
        with self._cond:
            self._params, self.version = params, version
            self._cond.notify_all()

    def get(self, at_least: int, stop: threading.Event) -> tuple[Any, int] | None:
        """The parameters once their version reaches ``at_least``; None if stopped first."""
        with self._cond:
            while self.version < at_least:
                if stop.is_set():
                    return None
                self._cond.wait(timeout=0.1)
            return self._params, self.version


class ActorThread:
    """Collects rollouts into a queue of one while the learner updates (Cleanba style)."""

    def __init__(self, actor: Actor, box: ParamsBox, first_index: int) -> None:
        self.actor, self.box = actor, box
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.index = first_index
        self.thread = threading.Thread(target=self._run, name="actor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # Time blocked handing the previous rollout over: known only once it is in the queue
        # (and the learner's), so it is reported with the next rollout.
        put_wait = 0.0
        try:
            while not self.stop.is_set():
                # Rollout i is learned by update i + 1; acting with the parameters of update
                # i - 1 keeps the actor exactly one version behind (Cleanba), however fast it is.
                t0 = time.perf_counter()
                got = self.box.get(self.index - 1, self.stop)
                if got is None:
                    break
                params, version = got
                wait = time.perf_counter() - t0
                rollout = self.actor.collect(params, self.index, self.stop)
                rollout.policy_version = version
                rollout.timing["timing/actor_wait_s"] = wait + put_wait
                t0 = time.perf_counter()
                while not self.stop.is_set():
                    try:
                        self.queue.put(rollout, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                put_wait = time.perf_counter() - t0
                self.index += 1
        except _Stopped:
            pass
        except BaseException as err:  # handed to the learner, which raises it
            self._put_error(err)

    def _put_error(self, err: BaseException) -> None:
        while True:
            try:
                self.queue.put(err, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    return

    def get(self, stop: threading.Event) -> Rollout:
        """The next rollout; raises ``_Stopped`` as soon as ``stop`` is set."""
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError("the actor thread ended without a rollout") from None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


# --------------------------------------------------------------------------------------------
# The run.


def _episode_metrics(records: cur.EpisodeRecords, max_sp: int) -> dict[str, float]:
    if len(records) == 0:
        return {"env/episodes": 0.0}
    at_sp = records.start <= max_sp
    return {
        "env/episodes": float(len(records)),
        "env/episode_score": float(records.score.mean()),
        "env/episode_frames": float((records.final_frame - records.start).mean()),
        "env/as_good_as_demo": float(records.as_good_as_demo.mean()),
        # The reference's "as_good_as_demo_start": episodes started at or before the maximum.
        "curriculum/success_at_sp": (float(records.as_good_as_demo[at_sp].mean())
                                     if at_sp.any() else float("nan")),
    }


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    profile = parse_profile(args.profile_steps)
    config, notes = resolve_config(args, run_dir)
    platform = detect_platform()[1]
    demo_path = Path(config.demo.demo_path)
    if not demo_path.is_file():
        raise UsageError(f"demo.demo_path: {demo_path} does not exist (convert the originals "
                         "with `python -m jax_reset.demo convert`)")
    if config.demo.rom_path is not None and not Path(config.demo.rom_path).is_file():
        raise UsageError(f"demo.rom_path: {config.demo.rom_path} does not exist")

    import jax

    from jax_reset import checkpoint as ckpt_lib  # JAX and Orbax load only past the checks
    from jax_reset.distributed import ProcessGroup
    from jax_reset.envs import AtariPool
    from jax_reset.mesh import make_data_mesh, replicate
    from jax_reset.ppo.update import create_train_state

    mesh = make_data_mesh()
    num_devices = mesh.devices.size
    processes = jax.process_count()
    if config.train.num_envs % processes:
        raise UsageError(f"train.num_envs={config.train.num_envs} does not split over "
                         f"{processes} processes (each steps num_envs / processes "
                         "environments): choose a multiple")
    try:
        config.ppo.check_num_envs(config.train.num_envs, num_devices)
    except ValueError as err:
        raise UsageError(f"train.num_envs: {err}") from None
    group = ProcessGroup(mesh, config.train.num_envs)
    group.barrier("jax_reset.train: run directory checked")  # before any process writes to it
    if group.is_main:
        print(f"devices: {platform}" + (f" per process; {processes} processes, {num_devices} "
                                        "devices in all" if group.multi else ""), flush=True)
        for note in notes:
            print(note, flush=True)
    if group.multi:
        print(f"process {group.index} of {processes}: environments {group.env_lo} to "
              f"{group.env_hi - 1} of {config.train.num_envs}", flush=True)

    train = config.train
    # The user's ROM (Gravitar: ale-py ships another build) is needed by the pool's emulators.
    demo_config = dataclasses.replace(config.demo,
                                      rom_path=config.demo.rom_path)
    with ckpt_lib.StopFlag() as stop, AtariPool(
            None, group.num_local_envs, train.workers, config=config.env, demo=demo_config,
            seed=train.seed + group.env_lo) as pool:
        num_frames = pool.demo_num_frames
        network, state = create_train_state(config.network, config.ppo, config.env.obs_shape,
                                            pool.num_actions, jax.random.PRNGKey(train.seed))
        meta = ckpt_lib.make_meta(config, state.params, game=pool.game,
                                  num_actions=int(pool.num_actions), num_frames=num_frames)
        if group.multi:  # Orbax restores into the target's shardings: the global ones
            state = replicate(state, mesh)
        counters = {"update": np.asarray(0, np.int64), "agent_steps": np.asarray(0, np.int64),
                    "frames": np.asarray(0, np.int64)}
        checkpoints = ckpt_lib.Checkpoints(run_dir / CHECKPOINT_DIR, keep_last=train.keep_last)
        try:
            if args.resume:
                try:
                    saved_meta = checkpoints.read_meta()
                    changed = ckpt_lib.check_compatible(
                        saved_meta, meta, config_lib.RESUME_FROZEN, where=str(run_dir))
                    step, restored, cur_json, _ = checkpoints.restore(
                        {"train_state": state, "counters": counters})
                except ckpt_lib.CheckpointError as err:
                    raise UsageError(str(err)) from None
                state, counters = restored["train_state"], restored["counters"]
                curriculum = cur.from_json(cur_json)
                if changed and group.is_main:
                    print(f"checkpoint {step}: settings changed since: {', '.join(changed)}")
                if group.is_main:
                    print(f"resumed from update {step} at starting point "
                          f"{curriculum.max_starting_point}", flush=True)
            else:
                curriculum = cur.init(train.num_envs, num_frames, config.curriculum)
                if group.is_main:
                    config_lib.save_json(config, run_dir / CONFIG_NAME)
            return _loop(config, args, run_dir, profile, stop, pool, network, state, counters,
                         curriculum, checkpoints, meta, mesh, group)
        finally:
            checkpoints.close()


def _loop(config: config_lib.Config, args: argparse.Namespace, run_dir: Path,
          profile: tuple[int, int] | None, stop: Any, pool: Any, network: Any, state: Any,
          counters: dict[str, Any], curriculum: cur.CurriculumState, checkpoints: Any,
          meta: dict[str, Any], mesh: Any, group: Any) -> int:
    """Updates until the end or a stop; checkpoints, logs. Main thread only."""
    import jax
    import jax.numpy as jnp

    from jax_reset.mesh import local_copy, replicate
    from jax_reset.metrics import MetricsWriter, ProgressDisplay
    from jax_reset.ppo.acting import make_act_fn
    from jax_reset.ppo.data import assemble_batch, global_batch, initial_burn_in, zeros_transition
    from jax_reset.ppo.update import make_update
    from jax_reset.ppo.warmup import make_warmup_fn

    train, ppo = config.train, config.ppo
    update_fn = make_update(network, ppo, mesh)
    act_fn = make_act_fn(network)
    act_key = jax.random.fold_in(jax.random.PRNGKey(train.seed), 0x5EED)
    if group.multi:  # each process's environments draw their own actions
        act_key = jax.random.fold_in(act_key, group.index)
    if not group.is_main:
        profile = None  # one trace, process 0's

    def local_points(state: cur.CurriculumState) -> np.ndarray:
        """This process's environments' starting points."""
        return state.starting_points[group.env_lo:group.env_hi]

    pool.set_starting_points(None, local_points(curriculum))
    history = None
    if train.warmup_steps > 0 and config.network.core != "none":
        env = config.env
        lo = curriculum.min_starting_point - env.frame_skip * (
            train.warmup_steps + env.stack_num - 1)
        history = DemoHistory(config.demo.demo_path, env,
                              config.demo.rom_path, lo=lo)
        print(f"demo observations for the warm-up: frames {history.lo:,} to "
              f"{history.num_frames:,} in {history.build_s:.1f} s", flush=True)
    actor = Actor(pool, act_fn, config.network, ppo.rollout_steps, ppo.burn_in_steps, act_key,
                  config.env.frame_skip, history, make_warmup_fn(network), train.warmup_steps)
    update = int(counters["update"])
    agent_steps, frames = int(counters["agent_steps"]), int(counters["frames"])
    example = zeros_transition(1, group.num_local_envs, config.env.obs_shape,
                               carry=actor.carry if actor.warm else None)
    burn_in = initial_burn_in(example, actor.carry, ppo.burn_in_steps)
    # Replicated over the mesh from the start, as the update returns them: the acting function
    # then compiles once, not again when the first updated parameters arrive.
    state = replicate(state, mesh)
    # Acting is process-local: with several processes it uses a copy on this process's device
    # (the replicated parameters would make it a computation over every process's devices).
    acting = local_copy if group.multi else (lambda params: jax.tree.map(jnp.copy, params))
    box = ParamsBox(acting(state.params), update)
    thread = ActorThread(actor, box, first_index=update) if train.overlap else None
    window: list[cur.EpisodeRecords] = []
    window_t0, window_steps = time.perf_counter(), 0
    timing: dict[str, float] = {}
    profiling = False
    writer = (MetricsWriter(run_dir, resume_update=update if args.resume else None)
              if group.is_main else None)
    display = ProgressDisplay(train.total_updates, curriculum.num_frames, start_update=update,
                              enabled=None if train.progress and group.is_main else False)
    # With several processes a stop is agreed at the next exchange (every process then does
    # the same updates and saves): no process leaves a rollout or an update on its own.
    halt = threading.Event() if group.multi else stop.event
    stopping = False

    def save(metrics_sp: float) -> None:
        counters = {"update": np.asarray(update, np.int64),
                    "agent_steps": np.asarray(agent_steps, np.int64),
                    "frames": np.asarray(frames, np.int64)}
        # A copy: Orbax may still read the arrays after save returns, and the next update
        # donates the state's buffers.
        checkpoints.save(update, {"train_state": jax.tree.map(jnp.copy, state),
                                  "counters": counters},
                         cur.to_json(curriculum), meta,
                         {"curriculum/max_starting_point": metrics_sp})

    try:
        if thread is not None:
            thread.start()
        with display:
            while update < train.total_updates and not (
                    stopping if group.multi else stop.requested):
                if profile and update + 1 == profile[0] and not profiling:  # before update A
                    jax.profiler.start_trace(str(run_dir / "profile"))
                    profiling = True
                t0 = time.perf_counter()
                try:  # a stop does not wait for the rollout under way
                    if thread is not None:
                        rollout = thread.get(halt)
                        wait = time.perf_counter() - t0
                    else:
                        rollout = actor.collect(acting(state.params) if group.multi
                                                else state.params, update, halt)
                        wait = 0.0
                except _Stopped:
                    break
                t1 = time.perf_counter()
                valid_share = float(rollout.transition.valid.mean())
                if group.multi:  # every process's records, global sums, an agreed stop
                    local_timing = {k: rollout.timing.get(k, 0.0) for k in EXCHANGED_TIMING}
                    records, totals, stopping = group.exchange(
                        rollout.records, {"frames": rollout.frames,
                                          "valid": float(rollout.transition.valid.sum()),
                                          **local_timing}, stop.requested)
                    rollout.records, rollout.frames = records, int(totals["frames"])
                    rollout.timing.update({k: totals[k] / group.count for k in rollout.timing
                                           if k in local_timing})
                    valid_share = totals["valid"] / (ppo.rollout_steps * train.num_envs)
                curriculum, decision = cur.update(curriculum, rollout.records, ppo.rollout_steps,
                                                  config.curriculum)
                if decision.decided and decision.new_max != decision.old_max:
                    if thread is not None:
                        actor.set_starting_points(local_points(curriculum))
                    else:
                        pool.set_starting_points(None, local_points(curriculum))
                batch, burn_in = assemble_batch(burn_in, rollout.transition,
                                                rollout.bootstrap_value, rollout.tail_carry)
                if group.multi:  # this process's environments become its block of the batch
                    batch = global_batch(batch, mesh, train.num_envs)
                state, train_metrics = update_fn(state, batch)
                if thread is not None:
                    box.set(acting(state.params), update + 1)
                train_metrics = jax.device_get(train_metrics)
                t2 = time.perf_counter()
                # Updates between the acting parameters and the ones this update started from.
                lag = 0 if rollout.policy_version is None else update - rollout.policy_version
                update += 1
                steps = ppo.rollout_steps * train.num_envs
                agent_steps += steps
                frames += rollout.frames
                window.append(rollout.records)
                window_steps += steps
                for key, value in rollout.timing.items():
                    timing[key] = timing.get(key, 0.0) + value
                timing["train/policy_lag"] = timing.get("train/policy_lag", 0.0) + lag
                timing["timing/learner_wait_s"] = timing.get("timing/learner_wait_s", 0.0) + wait
                timing["timing/learner_s"] = timing.get("timing/learner_s", 0.0) + (t2 - t1)
                if profiling and update >= profile[1]:  # after update B
                    jax.profiler.stop_trace()
                    profiling = False
                if group.multi and (decision.decided or stopping
                                    or update % train.checkpoint_every == 0
                                    or update == train.total_updates):
                    group.check_agreement(update, state.params, cur.to_json(curriculum),
                                          run_dir / PROCESSES_DIR)
                if update % train.log_every == 0 or update == train.total_updates:
                    elapsed = time.perf_counter() - window_t0
                    records = cur.EpisodeRecords.concatenate(window)
                    metrics = {
                        **{k: float(v) for k, v in train_metrics.items()},
                        "train/update": float(update),
                        "train/agent_steps": float(agent_steps),
                        "train/frames": float(frames),
                        "train/agent_steps_per_s": window_steps / max(elapsed, 1e-9),
                        "env/valid_share": valid_share,
                        **cur.summary(curriculum),
                        **_episode_metrics(records, curriculum.max_starting_point),
                        **{k: v / len(window) for k, v in timing.items()},
                    }
                    if writer is not None:
                        writer.write(update, metrics)
                        display.update(update, metrics)
                    window, timing = [], {}
                    window_t0, window_steps = time.perf_counter(), 0
                if update % train.checkpoint_every == 0:
                    save(curriculum.max_starting_point)
            if thread is not None:
                thread.close()
            # At the end, or on SIGTERM/SIGINT: the state after the last finished update.
            save(curriculum.max_starting_point)
            checkpoints.wait()
    finally:
        if profiling:
            jax.profiler.stop_trace()
        if thread is not None:
            thread.close()
        if writer is not None:
            writer.close()
    if not group.is_main:
        pass
    elif stop.requested or stopping:
        print(f"stopped by {stop.signal_name or 'another process'} after update {update}: "
              f"checkpoint saved; continue with --resume --run-dir {run_dir}", flush=True)
    else:
        print(f"done: {update} updates, starting point {curriculum.max_starting_point}",
              flush=True)
    return 0


def _launch_local(args: argparse.Namespace, argv: list[str]) -> int:
    """``--local-processes N``: this command without that flag, as N processes of one job."""
    from jax_reset.distributed import DistributedError, launch_local

    if args.distributed or args.coordinator or args.num_processes is not None or (
            args.process_id is not None):
        print("error: --local-processes starts its own processes; it does not combine with "
              "--distributed, --coordinator, --num-processes or --process-id", file=sys.stderr)
        return 2
    if args.config:
        try:  # bad input fails once, here, before any process starts
            config_lib.load(args.config, args.overrides)
        except config_lib.ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--local-processes":
            skip = True
        elif not a.startswith("--local-processes="):
            rest.append(a)
    try:
        # A stop (Ctrl-C, SIGTERM) lets the processes agree, finish the update and save.
        return launch_local("jax_reset.train", rest, args.local_processes, grace_s=10,
                            stop_grace_s=300)
    except DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.local_processes is not None:
        return _launch_local(args, argv)
    from jax_reset import distributed as dist
    from jax_reset.demos import DemoError
    from jax_reset.envs import PoolError

    try:
        spec = dist.spec_from(args.coordinator, args.num_processes, args.process_id,
                              auto_detect=args.distributed,
                              heartbeat_timeout_s=args.heartbeat_timeout)
    except dist.DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not spec.wanted:
        return _run_single(args, DemoError, PoolError)
    # Several processes: JAX's runtime first (before any use of a device); every failure is one
    # line naming the process, and the process leaves at once: a normal exit would wait at
    # JAX's shutdown barrier for peers that may never arrive.
    try:
        dist.initialize(spec)
    except dist.DistributedError as err:
        dist.exit_now(1, f"error: {err}")
    import jax

    who = f"error (process {jax.process_index()} of {jax.process_count()})"
    try:
        return run(args)
    except (UsageError, config_lib.ConfigError, DemoError) as err:
        dist.exit_now(2, f"{who}: {err}")
    except PoolError as err:
        dist.exit_now(1, f"{who}: environment pool: {err}")
    except KeyboardInterrupt:
        dist.exit_now(130, f"{who}: interrupted")
    except Exception as err:
        lost = dist.peer_failure(err)
        if lost is None:
            import traceback

            traceback.print_exc()
        dist.exit_now(1, f"{who}: {lost or f'{type(err).__name__}: {err}'}")
    return 1  # not reached


def _run_single(args: argparse.Namespace, demo_error: type, pool_error: type) -> int:
    try:
        return run(args)
    except (UsageError, config_lib.ConfigError, demo_error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except pool_error as err:  # a worker died or raised: its message says which and why
        print(f"error: environment pool: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

