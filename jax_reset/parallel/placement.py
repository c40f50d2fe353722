"""Device placement: which of this process's devices act and which learn (``train.placement``).

Cleanba's split: the learner's data mesh spans only the learning devices (of every process);
the actor infers and warms up on the acting devices with its own copy of the parameters,
refreshed once per update (``acting_params``, called where the trainer publishes). With the
acting and learning devices apart, the actor's small calls no longer queue behind the update's
convolutions on the same device (stream or XLA:CPU thread pool).

Placements (``jax_reset.config``): "shared" (today's arrangement: every device learns, the
first acts with the learner's own arrays), "host" (acting on the host CPU, learning on every
accelerator), "A+L" (the first A local devices act, the next L learn; on a CPU-only machine
``host_device_count`` says how many fake CPU devices the entry point must ask XLA for before JAX
starts) and "auto" ("shared" on a CPU or one accelerator, "1+(N-1)" on N >= 2 accelerators).

With A acting devices each act and warm-up call splits its environments over them (contiguous
blocks, ``jax_reset.parallel.sizes`` checks that they divide); each environment samples with its own
key, so the split changes only the float order of inference.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from jax_reset.config import placement_split

_HOST_FLAG = "--xla_force_host_platform_device_count"


class PlacementError(ValueError):
    """The placement does not fit this machine; the message is one line naming the key."""


def host_device_count(placement: str) -> int | None:
    """Fake CPU devices a CPU-only process needs for ``placement`` ("A+L": A + L; else None).

    Pure: called by the entry points before JAX starts."""
    split = placement_split(placement)
    return None if split is None else sum(split)


def ask_for_host_devices(count: int | None, environ: Any = os.environ) -> bool:
    """Adds ``--xla_force_host_platform_device_count=count`` to ``XLA_FLAGS`` unless a count is
    already set there (the caller's choice wins) or none is needed; True if it added it.

    Must run before JAX initialises its backends (entry points only). The flag only sizes the
    host (CPU) platform: on a GPU machine it adds idle CPU devices and changes nothing else."""
    flags = environ.get("XLA_FLAGS", "")
    if count is None or count <= 1 or _HOST_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {_HOST_FLAG}={count}".strip()
    return True


@dataclasses.dataclass(frozen=True)
class Placement:
    """This process's acting devices and the job's learning mesh.

    Attributes:
      name: the resolved placement ("shared", "host" or "A+L").
      acting: this process's acting devices (one or more).
      learning_mesh: the update's 1-D data mesh over every process's learning devices.
      shared: acting on the learner's own (replicated) arrays, no copy: today's arrangement.
    """

    name: str
    acting: tuple[Any, ...]
    learning_mesh: Any
    shared: bool

    @property
    def acting_mesh(self) -> Any:
        # JAX: this module runs before JAX starts (ask_for_host_devices)
        from jax_reset.parallel.mesh import make_data_mesh

        return make_data_mesh(self.acting)

    def describe(self) -> str:
        """One line: where acting and learning run."""
        learning = list(self.learning_mesh.devices.flat)
        local = [d for d in learning if d.process_index == self.acting[0].process_index]
        return (f"placement {self.name}: acting on {_names(self.acting)}, learning on "
                f"{_names(local)}" + (f" ({len(learning)} learning devices in the job)"
                                      if len(local) != len(learning) else ""))

    def acting_params(self, params: Any) -> Any:
        """The acting copy of the learner's replicated ``params``: replicated over the acting
        devices (from this process's first shard of each leaf). Shared: ``params`` as is."""
        if self.shared:
            return params
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        replicated = NamedSharding(self.acting_mesh, P())
        return jax.tree.map(lambda x: jax.device_put(x.addressable_data(0), replicated), params)

    def _place(self, fn: Callable[..., Any], batched: Sequence[int]) -> Callable[..., Any]:
        """``fn(params, *args)`` with the arguments at positions ``batched`` (of ``args``) split
        over the acting devices along their first axis and the others replicated there (host
        arrays, or device arrays from elsewhere, e.g. keys made on the default device)."""
        if self.shared:
            return fn
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        # JAX: this module runs before JAX starts (ask_for_host_devices)
        from jax_reset.ppo.data import DATA_AXIS

        mesh = self.acting_mesh
        split, replicated = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())

        def where(i: int, arg: Any) -> Any:
            if i not in batched:
                return replicated
            leaves = jax.tree.leaves(arg)
            # The environments divide over the acting devices (jax_reset.parallel.sizes); a warm-up
            # batch padded to a power of two may not: it is computed whole on each.
            even = bool(leaves) and leaves[0].shape[0] % mesh.devices.size == 0
            return split if even else replicated

        def placed(params: Any, *args: Any) -> Any:
            return fn(params, *(jax.device_put(a, where(i, a)) for i, a in enumerate(args)))

        return placed

    def place_act(self, act_fn: Callable[..., Any]) -> Callable[..., Any]:
        """``ppo.acting.make_act_fn``'s function on the acting devices: obs, episode_start,
        entropy_boost, carry, start_carry and env_ids split; the key replicated."""
        return self._place(act_fn, batched=(0, 1, 2, 3, 5, 6))

    def place_warmup(self, warmup_fn: Callable[..., Any]) -> Callable[..., Any]:
        """``ppo.warmup.make_warmup_fn``'s function on the acting devices (obs, mask split)."""
        return self._place(warmup_fn, batched=(0, 1))


def _names(devices: Sequence[Any]) -> str:
    return ", ".join(f"{d.platform}:{d.id}" for d in devices)


def shared(mesh: Any) -> Placement:
    """Today's arrangement over ``mesh``: every device learns, the first local one acts."""
    import jax

    return Placement("shared", (jax.local_devices()[0],), mesh, shared=True)


def resolve_placement(placement: str, fits: Callable[[int], bool] | None = None) -> Placement:
    """The ``train.placement`` on this process's devices (JAX started, ``jax.distributed`` too).

    ``fits(L)``: whether the batch splits over L learning devices per process; "auto" keeps
    "shared" where "1+(N-1)" does not fit (128 environments over 8 GPUs: not over 7).

    Raises ``PlacementError`` (one line naming the key) when it asks for more devices than a
    process has. Every process must have the same devices (the processes split the same way).
    """
    import jax

    # JAX: this module runs before JAX starts (ask_for_host_devices)
    from jax_reset.parallel.mesh import make_data_mesh

    platform = jax.default_backend()
    local = sorted(jax.local_devices(), key=lambda d: d.id)
    if placement == "auto":
        apart = platform != "cpu" and len(local) > 1 and (fits is None or fits(len(local) - 1))
        placement = f"1+{len(local) - 1}" if apart else "shared"
    if placement == "shared" or (placement == "host" and platform == "cpu"):
        return shared(make_data_mesh())
    if placement == "host":
        return Placement("host", (jax.local_devices(backend="cpu")[0],), make_data_mesh(),
                         shared=False)
    split = placement_split(placement)
    if split is None:
        raise PlacementError(f"train.placement={placement!r}: not a placement")
    acting, learning = split
    if acting + learning > len(local):
        hint = (f" (XLA_FLAGS asks for {len(local)} CPU devices)"
                if platform == "cpu" and _HOST_FLAG in os.environ.get("XLA_FLAGS", "") else "")
        raise PlacementError(f"train.placement={placement} needs {acting + learning} devices per "
                             f"process; this one has {len(local)} ({platform}){hint}")
    learners = [d for p in range(jax.process_count())
                for d in sorted((d for d in jax.devices() if d.process_index == p),
                                key=lambda d: d.id)[acting:acting + learning]]
    return Placement(placement.replace(" ", ""), tuple(local[:acting]), make_data_mesh(learners),
                     shared=False)
