"""The ``[train]`` section of the config: the run's sizes and the schedule of its checkpoints
and logs (``TrainConfig``). Pure Python, no JAX and no other module of this package, so that
``jax_reset.config`` composes it without importing the run directory or the checkpoints (and a
bad command line fails before JAX is imported); ``jax_reset.run_dir`` re-exports it.
"""

from __future__ import annotations

import dataclasses
import re

#: ``train.placement`` values besides "A+L" (A acting and L learning devices per process).
PLACEMENTS = ("auto", "shared", "host")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run: sizes, schedule of checkpoints and logs."""

    # Environments in total (all processes; ``jax_reset.sizes.derive`` splits them) and CPU
    # worker processes on each host.
    num_envs: int = 32
    workers: int = 2
    # PPO updates to run in total (a resumed run continues to this number).
    total_updates: int = 1000
    seed: int = 0
    # Collect the next rollout with the previous parameters while the learner updates
    # (Cleanba-style, one policy version behind; the stored log-probabilities keep the PPO
    # ratio right). False: exact on-policy, acting and learning alternate.
    overlap: bool = True
    # Split each process's environments into this many contiguous groups and step them
    # EnvPool's asynchronous way: while one group's workers emulate, the policy infers for the
    # next group (``jax_reset.actor``). 1: infer for all, then step all. Each environment
    # samples with its own key, so the grouping changes only the float order of inference.
    env_groups: int = 1
    # Which of each process's devices act (policy inference and warm-up, with a copy of the
    # parameters refreshed once per update) and which learn (the update's data mesh spans the
    # learning devices of every process), Cleanba's split (``jax_reset.placement``):
    #   "auto": "shared" on a CPU or a single accelerator, "1+(N-1)" on N >= 2 accelerators;
    #   "shared": every device learns and the first also acts (the learner's own arrays);
    #   "host": acting on the host CPU while every accelerator learns (one GPU: both busy);
    #   "A+L", e.g. "1+7": the first A devices act, the next L learn. On a CPU-only machine
    #     the trainer starts A+L fake CPU devices (XLA's host device count) when it has fewer.
    placement: str = "auto"
    # Save a checkpoint every this many updates (and always on SIGTERM/SIGINT and at the end).
    checkpoint_every: int = 50
    # Keep the last K checkpoints, plus the best one (lowest maximum starting point).
    keep_last: int = 3
    # Write metrics every this many updates.
    log_every: int = 1
    # Live terminal display (turned off automatically when stdout is not a terminal).
    progress: bool = True
    # Agent steps of the demo before each episode's start that warm the recurrent state up
    # (a scan over stored demo observations; no environment steps). 0: start from zeros.
    warmup_steps: int = 128

    def __post_init__(self) -> None:
        for ok, message in (
                (self.num_envs >= 1, "num_envs must be at least 1"),
                (self.workers >= 1, "workers must be at least 1"),
                (self.env_groups >= 1, "env_groups must be at least 1"),
                (placement_split(self.placement) is not None or self.placement in PLACEMENTS,
                 f"placement must be one of {', '.join(PLACEMENTS)} or A+L (acting+learning "
                 f"devices per process, e.g. 1+7), got {self.placement!r}"),
                (self.env_groups <= self.num_envs,
                 f"env_groups ({self.env_groups}) must not exceed num_envs ({self.num_envs})"),
                (self.total_updates >= 1, "total_updates must be at least 1"),
                (self.checkpoint_every >= 1, "checkpoint_every must be at least 1"),
                (self.keep_last >= 1, "keep_last must be at least 1"),
                (self.log_every >= 1, "log_every must be at least 1"),
                (self.warmup_steps >= 0, "warmup_steps must be non-negative"),
                (self.workers <= self.num_envs,
                 f"workers ({self.workers}) must not exceed num_envs ({self.num_envs})")):
            if not ok:
                raise ValueError(message)


def placement_split(placement: str) -> tuple[int, int] | None:
    """``(A, L)`` of a ``train.placement`` "A+L" (both at least 1); None for any other value."""
    found = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", placement)
    if found is None or min(int(found[1]), int(found[2])) < 1:
        return None
    return int(found[1]), int(found[2])
