"""The data-parallel device mesh: one axis over all local devices (later: all hosts' devices)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

from jax_reset.ppo.data import DATA_AXIS


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``DATA_AXIS`` ("data") over ``devices`` (default: all local devices).

    The axis is ``Auto`` so that jitted code may take host arrays or arrays placed otherwise and
    let XLA move them; with ``shard_batch`` the batch is already where the update wants it.
    Works the same on 1 CPU, on N fake CPU devices (``XLA_FLAGS=
    --xla_force_host_platform_device_count=N``, set by an entry point before importing jax) and
    on the GPUs of a node.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )
