"""`python -m jax_reset.train`: PPO on a backward curriculum of demo states.

    python -m jax_reset.train --config configs/pong.toml --run-dir runs/pong
    python -m jax_reset.train --config configs/pong.toml --run-dir runs/pong ppo.learning_rate=3e-5
    python -m jax_reset.train --run-dir runs/pong --resume          # continues exactly there
    python -m jax_reset.train --run-dir runs/pong --resume ppo.learning_rate=5e-5  # persists
    python -m jax_reset.train --run-dir runs/pong --resume --checkpoint 400   # back to 400
    python -m jax_reset.train --config configs/smoke.toml --run-dir /tmp/s --profile-steps 3:5
    python -m jax_reset.train --config configs/smoke.toml --run-dir /tmp/s --local-processes 2

The command line only: the request's checks are ``jax_reset.run.request``, the config's
precedence ``jax_reset.run.resolve``, the run's phases ``jax_reset.training.setup``, the loop
``jax_reset.training.trainer``, the processes ``jax_reset.parallel``. Without a GPU the config's
``[on_cpu]`` table applies (and the run says so). Everything this module imports at its top is
free of JAX, so a bad command line fails before JAX starts.

``--resume`` continues exactly: update and step counters, parameters, optimizer state, RNG,
the curriculum's starting points, success table and pending records; the config is the newest
checkpoint's with the command line's overrides on top (they persist to the next resume). The
emulators start new episodes (their mid-episode states are not saved).

Several processes (hosts): ``--local-processes N`` starts N on this machine; ``--distributed``
(JAX's cluster auto-detection, e.g. SLURM) or ``--coordinator --num-processes --process-id``
(or the ``JAX_RESET_*`` variables) join a job, one process per host. A process that fails
prints one line and leaves at once; the others fail on the missing peer.

A resume continues from the newest checkpoint that restores (one that does not is named in
one line), or from ``--checkpoint N``; newer ones are moved to ``checkpoints-set-aside/``.

One trainer per run directory: ``RUN_DIR/train.lock`` (``jax_reset.run.lock``) is held for the
run's life; a second trainer says who holds it and exits 2. Before JAX starts, the run directory
must take a file and, on a resume, have room for one more checkpoint (``jax_reset.run.disk``).

Exit codes: 0 done or stopped cleanly by SIGTERM/SIGINT (a checkpoint was written), 2 bad
input or a run directory in use (one line on stderr, nothing written), 1 a failure during the
run, e.g. ``error: disk full writing <path>; last checkpoint: <N>`` (the last checkpoint stays;
a worker that hangs is one, reported within seconds), 130 a Ctrl-C before training could stop
cleanly, or a second one (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from jax_reset.parallel.huge_pages import restart_with_huge_pages
from jax_reset.training.stop import EarlyInterrupt

if __name__ == "__main__":  # the command's first instructions: from here a Ctrl-C is one line
    restart_with_huge_pages()  # XLA's host buffers on huge pages (a new start, once)
    EarlyInterrupt.install()

# After the handler, on purpose (a Ctrl-C during these imports used to be a traceback).
from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset.demos import DemoError
from jax_reset.envs import PoolError
from jax_reset.parallel import distributed as dist
from jax_reset.parallel.placement import ask_for_host_devices, host_device_count
from jax_reset.run import disk
from jax_reset.run.layout import CONFIG_NAME, Request, RunFailure, UsageError
from jax_reset.run.lock import LockHeld, RunLock
from jax_reset.run.request import check_request, profile_window


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jax_reset.train",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", help="configs/<game>.toml (default on --resume: the run's own)")
    p.add_argument("--run-dir", required=True, help="where checkpoints, config and logs go")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--checkpoint", type=int, metavar="N",
                   help="with --resume: continue from checkpoint N (newer ones are moved to "
                        "checkpoints-set-aside/, kept); default: the newest that restores")
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


def ask_for_placement_devices(args: argparse.Namespace) -> None:
    """Before JAX starts: the fake CPU devices ``train.placement`` "A+L" needs on a CPU-only
    machine (``jax_reset.parallel.placement.ask_for_host_devices``; a count already in ``XLA_FLAGS``
    wins). The placement is the command line's, else the config file's, else on ``--resume``
    the run's ``config.json``; a bad config is left for the run's own one-line error."""
    given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("train.placement=")]
    path = args.config or (Path(args.run_dir) / CONFIG_NAME if args.resume else None)
    placement = given[-1] if given else None
    if placement is None and path is not None and Path(path).is_file():
        try:
            placement = config_lib.load(path, args.overrides).train.placement
        except (config_tree.ConfigError, OSError):
            return
    if placement is not None:
        ask_for_host_devices(host_device_count(placement.strip().strip("\"'")))


def run(args: argparse.Namespace, take_lock: bool = True) -> int:
    """Checks the request before JAX starts, takes the run directory's lock (``take_lock``:
    process 0), checks it takes files, then trains."""
    EarlyInterrupt.check()  # main() catches KeyboardInterrupt from here
    req = Request(Path(args.run_dir), args.resume, args.config, tuple(args.overrides),
                     args.checkpoint)
    profile = profile_window(args.profile_steps)
    check_request(req)  # bad input: nothing written, not even the lock file
    with RunLock(req.run_dir) if take_lock else contextlib.nullcontext():
        if take_lock:
            # Again under the lock: a trainer that just ended may have created the run.
            check_request(req)
            disk.check_writable(req.run_dir, req.resume)
        from jax_reset.training import setup as train_setup  # JAX: only once checked

        EarlyInterrupt.check()  # one that came while a callback of the import ran

        return train_setup.run(req, full_size=args.full_size, profile=profile)


def _launch_local(args: argparse.Namespace, argv: list[str]) -> int:
    """``--local-processes N``: this command without that flag, as N processes of one job."""
    if EarlyInterrupt.seen:
        print("error: interrupted", file=sys.stderr)
        return 130
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher stops on Ctrl-C
    if args.distributed or args.coordinator or args.num_processes is not None or (
            args.process_id is not None):
        print("error: --local-processes starts its own processes; it does not combine with "
              "--distributed, --coordinator, --num-processes or --process-id", file=sys.stderr)
        return 2
    if args.config:
        try:  # bad input fails once, here, before any process starts
            config_lib.load(args.config, args.overrides)
        except config_tree.ConfigError as err:
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
        return dist.launch_local("jax_reset.train", rest, args.local_processes, grace_s=10,
                            stop_grace_s=300)
    except dist.DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ask_for_placement_devices(args)  # inherited by --local-processes' processes
    if args.local_processes is not None:
        return _launch_local(args, argv)
    bad_input = (UsageError, config_tree.ConfigError, DemoError)
    try:
        spec = dist.spec_from(args.coordinator, args.num_processes, args.process_id,
                              auto_detect=args.distributed,
                              heartbeat_timeout_s=args.heartbeat_timeout)
    except dist.DistributedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not spec.wanted:
        try:
            return run(args)
        except (*bad_input, LockHeld) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except RunFailure as err:  # diverged, or a state that cannot be saved: one line
            print(f"error: {err}", file=sys.stderr)
            return 1
        except PoolError as err:  # a worker died, raised or hangs: its message says which
            print(f"error: environment pool: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # Ctrl-C before the stop handler is installed (importing, checking) or a second
            # one that insists: nothing half-written, the last checkpoint (if any) stays.
            last = disk.last_checkpoint(Path(args.run_dir))
            print(f"error: interrupted; last checkpoint: {'none' if last is None else last}",
                  file=sys.stderr)
            return 130
        except Exception as err:
            line = disk.one_line(err, Path(args.run_dir))
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            return 1
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
        return run(args, take_lock=jax.process_index() == 0)
    except (*bad_input, LockHeld) as err:
        dist.exit_now(2, f"{who}: {err}")
    except RunFailure as err:
        dist.exit_now(1, f"{who}: {err}")
    except PoolError as err:
        dist.exit_now(1, f"{who}: environment pool: {err}")
    except KeyboardInterrupt:
        dist.exit_now(130, f"{who}: interrupted")
    except Exception as err:
        line = disk.one_line(err, Path(args.run_dir))
        if line is not None:
            dist.exit_now(1, f"{who}: {line}")
        lost = dist.peer_failure(err)
        if lost is None:
            import traceback

            traceback.print_exc()
        dist.exit_now(1, f"{who}: {lost or f'{type(err).__name__}: {err}'}")
    return 1  # not reached


if __name__ == "__main__":
    # A crash in native code (the emulator: ALE's long-known fault in Montezuma's Revenge)
    # then names the Python stacks it happened under, for the bug report. The command only:
    # a caller's stderr (a test's capture) may have no file descriptor.
    faulthandler.enable()
    sys.exit(main())
