"""One shared-memory segment holding every per-environment array of a pool.

The parent creates it, workers attach by name; both build the same numpy views from the same
layout, so a step moves no array through a pipe.
"""

from __future__ import annotations

import dataclasses
from multiprocessing import shared_memory

import numpy as np

from jax_reset.envs import contract

_ALIGN = 64  # cache line: rows written by different workers never share a line at array starts


def pool_fields(num_envs: int, obs_shape: tuple[int, ...]) -> dict[str, tuple[str, tuple]]:
    """name -> (dtype, shape) of every shared array, from the contract's declaration
    (`contract.INPUT_FIELDS`, then `contract.OUTPUT_FIELDS`); all are indexed by env id on
    axis 0."""
    fields = {**contract.INPUT_FIELDS, **contract.OUTPUT_FIELDS}
    return {name: (f.dtype, f.shape(num_envs, obs_shape)) for name, f in fields.items()}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Byte offsets of named arrays inside one segment (picklable, sent to workers)."""

    fields: dict[str, tuple[str, tuple, int]]  # name -> (dtype, shape, offset)
    size: int

    @staticmethod
    def build(fields: dict[str, tuple[str, tuple]]) -> Layout:
        out, offset = {}, 0
        for name, (dtype, shape) in fields.items():
            out[name] = (dtype, tuple(shape), offset)
            nbytes = int(np.dtype(dtype).itemsize * np.prod(shape, dtype=np.int64))
            offset += -(-nbytes // _ALIGN) * _ALIGN
        return Layout(out, max(offset, _ALIGN))

    def views(self, buf: memoryview) -> dict[str, np.ndarray]:
        return {
            name: np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)
            for name, (dtype, shape, offset) in self.fields.items()
        }


def create(layout: Layout) -> shared_memory.SharedMemory:
    shm = shared_memory.SharedMemory(create=True, size=layout.size)
    np.ndarray((layout.size,), np.uint8, buffer=shm.buf)[:] = 0
    return shm


def attach(name: str) -> shared_memory.SharedMemory:
    # With the "spawn" context the child shares the parent's resource tracker, so this
    # attach's registration is the same entry the parent's unlink() removes: no leak warning.
    return shared_memory.SharedMemory(name=name)
