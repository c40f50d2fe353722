"""Every size of a run, derived once from the config and the job's shape: the only place that
checks that ``train.num_envs`` divides.

``train.num_envs`` is the job's total (all processes). Process p steps the contiguous block
``[env_lo, env_hi)`` of ``num_envs_local`` environments, the block its devices hold in the data
mesh; the update takes the global batch of ``num_envs_global`` environments and splits it into
``ppo.minibatches`` minibatches of ``minibatch_envs`` environments, ``minibatch_envs_per_device``
on each device.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class SizeError(ValueError):
    """``train.num_envs`` does not split over the job; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of one process of a job (every field a count of environments or steps)."""

    num_processes: int
    process_index: int
    num_devices: int  # in the whole job (the data mesh)
    num_envs_global: int  # train.num_envs
    num_envs_local: int  # stepped by this process
    env_lo: int  # this process's environments are [env_lo, env_hi) of the global batch
    env_hi: int
    rollout_steps: int  # agent steps per environment per update
    agent_steps_per_update: int  # rollout_steps x num_envs_global
    minibatches: int
    minibatch_envs: int  # environments per minibatch, all devices
    minibatch_envs_per_device: int
    # This process's acting devices (``jax_reset.parallel.placement``): acting splits over them.
    acting_devices: int = 1


def derive(config: Any, num_processes: int = 1, num_devices: int = 1,
           process_index: int = 0, acting_devices: int = 1) -> Sizes:
    """The sizes of process ``process_index`` of a job of ``num_processes`` processes over
    ``num_devices`` learning devices in all (processes hold equal, contiguous blocks of the
    mesh), each process acting on ``acting_devices`` devices.

    ``config``: a ``jax_reset.config.Config`` (reads ``train.num_envs``, ``train.env_groups``,
    ``ppo.minibatches``, ``ppo.rollout_steps``). Raises ``SizeError`` (one line naming the key)
    unless the environments split into whole blocks per process and per device x minibatch,
    and each process has at least ``train.env_groups`` of them; with several acting devices,
    every group's environments split evenly over them (``num_envs / processes`` divisible by
    acting devices x ``train.env_groups``: each act call splits its group into contiguous
    blocks, one per acting device).
    """
    n = config.train.num_envs
    mb = config.ppo.minibatches
    if num_processes < 1 or num_devices < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"bad job shape: process {process_index} of {num_processes}, "
                         f"{num_devices} devices")
    if n % num_processes:
        raise SizeError(f"train.num_envs={n} does not split over {num_processes} processes "
                        "(each steps num_envs / processes environments): choose a multiple")
    if n % (num_devices * mb):
        raise SizeError(f"train.num_envs={n} must be divisible by devices ({num_devices}) x "
                        f"ppo.minibatches ({mb}) = {num_devices * mb}: every device holds "
                        "whole environments and every minibatch takes the same number of them "
                        "from each device")
    windows = config.ppo.imitation_windows  # the demo's windows split like the environments
    if windows % (num_devices * mb) or windows % num_processes:
        raise SizeError(f"ppo.imitation_windows={windows} must be divisible by devices "
                        f"({num_devices}) x ppo.minibatches ({mb}) = {num_devices * mb} and by "
                        f"processes ({num_processes}): the windows split like the environments")
    local = n // num_processes
    groups = config.train.env_groups
    if groups > local:
        raise SizeError(f"train.env_groups={groups} exceeds the {local} environments each "
                        "process steps (train.num_envs / processes)")
    if acting_devices > 1 and local % (acting_devices * groups):
        raise SizeError(f"train.num_envs={n} must give each process a multiple of acting devices "
                        f"({acting_devices}, train.placement) x train.env_groups ({groups}) = "
                        f"{acting_devices * groups} environments: each group's inference splits "
                        f"evenly over the acting devices (each process steps {local})")
    return Sizes(
        num_processes=num_processes, process_index=process_index, num_devices=num_devices,
        num_envs_global=n, num_envs_local=local,
        env_lo=process_index * local, env_hi=(process_index + 1) * local,
        rollout_steps=config.ppo.rollout_steps,
        agent_steps_per_update=config.ppo.rollout_steps * n,
        minibatches=mb, minibatch_envs=n // mb, minibatch_envs_per_device=n // (mb * num_devices),
        acting_devices=acting_devices)
