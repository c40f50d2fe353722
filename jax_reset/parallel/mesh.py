"""The data-parallel device mesh: one axis over every device of every process of the job.

With one process this is the local devices (1 CPU, N fake CPU devices, the GPUs of a node).
With several (``jax_reset.parallel.distributed``), the mesh spans all processes' devices, each
process's devices forming one contiguous block of the axis: process p feeds the environments
``process_env_slice`` names, the same block of the global batch its devices hold.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_reset.ppo.data import DATA_AXIS


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``DATA_AXIS`` ("data") over ``devices`` (default: all devices).

    The axis is ``Auto`` so that jitted code may take host arrays or arrays placed otherwise and
    let XLA move them; with ``shard_batch`` the batch is already where the update wants it.
    Works the same on 1 CPU, on N fake CPU devices (``XLA_FLAGS=
    --xla_force_host_platform_device_count=N``, set by an entry point before importing jax), on
    the GPUs of a node, and over several processes (devices ordered by process, then id, so
    that each process holds one contiguous block of the axis).
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def process_env_slice(mesh: Mesh, num_envs: int) -> tuple[int, int]:
    """``(lo, hi)``: the environments (global indices) this process's devices hold.

    ``num_envs`` must split evenly over the mesh's devices (``jax_reset.parallel.sizes.derive``).
    Raises ``ValueError`` if this process's devices are not one contiguous block of the axis.
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    spans = sorted((s[0].start or 0, num_envs if s[0].stop is None else s[0].stop)
                   for s in sharding.addressable_devices_indices_map((num_envs,)).values())
    if any(b0 != a1 for (_, b0), (a1, _) in itertools.pairwise(spans)):
        raise ValueError(f"this process's devices hold environments {spans}: not one "
                         "contiguous block of the mesh")
    return spans[0][0], spans[-1][1]


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` replicated over ``mesh`` (every process must pass the same values).

    One process: ``jax.device_put``. Several: each leaf is built from a host copy with
    ``jax.make_array_from_callback`` (a local array cannot be put on other processes' devices).
    """
    replicated = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated)

    def one(x: Any) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, replicated, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def local_copy(tree: Any) -> Any:
    """A copy of a replicated tree on this process's first device, for process-local work
    (acting, warm-up) that must not become a computation over every process's devices."""
    import jax.numpy as jnp

    return jax.tree.map(lambda x: jnp.copy(x.addressable_data(0)), tree)
