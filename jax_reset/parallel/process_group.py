"""This process among the job's processes: everything the trainer does differently with one
process or several, in one place.

One process is the degenerate case: every collective is the identity and no method branches in
the caller. With several (``jax_reset.parallel.distributed`` started them), process p steps the
block ``[sizes.env_lo, sizes.env_hi)`` of the job's environments, the block its devices hold in the
data mesh; the parameters are replicated over every process's devices; each update every
process exchanges its episode records and a declared set of sums and means, and agrees on a
stop. Every method that communicates must be called by every process, in the same order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_reset.curriculum import EpisodeRecords
from jax_reset.parallel import placement as placement_lib
from jax_reset.parallel.distributed import DistributedError
from jax_reset.parallel.mesh import local_copy, process_env_slice, replicate
from jax_reset.parallel.sizes import Sizes
from jax_reset.ppo.data import global_batch
from jax_reset.ppo.imitation import DemoBatch, global_demo


@dataclasses.dataclass(frozen=True)
class Exchanged:
    """What every process holds after an exchange (the same on every process)."""
    records: EpisodeRecords  # every process's, in process order
    sums: dict[str, float]  # summed over processes
    means: dict[str, float]  # averaged over processes
    stop: bool  # some process was asked to stop


class ProcessGroup:
    """The job's processes as the trainer needs them each update.

    Args:
      mesh: the data mesh over every process's learning devices.
      sizes: this process's sizes (``jax_reset.parallel.sizes.derive``); its block of
        environments must be the block its devices hold in ``mesh``.
      placement: where this process acts (``jax_reset.parallel.placement``; None: "shared" over
        ``mesh``, acting on the learner's devices).
    """

    def __init__(self, mesh: Any, sizes: Sizes, placement: Any = None) -> None:
        self.mesh, self.sizes = mesh, sizes
        self.placement = placement_lib.shared(mesh) if placement is None else placement
        self.index, self.count = jax.process_index(), jax.process_count()
        held = process_env_slice(mesh, sizes.num_envs_global)
        if (self.index, self.count) != (sizes.process_index, sizes.num_processes) or (
                held != (sizes.env_lo, sizes.env_hi)):
            raise DistributedError(
                f"process {self.index} of {self.count} holds environments {held} of the mesh, "
                f"not {sizes.env_lo, sizes.env_hi} (processes must have the same number of "
                "devices)")

    @property
    def multi(self) -> bool:
        return self.count > 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes logs, metrics and the progress display."""
        return self.index == 0

    # ---- arrays ----------------------------------------------------------------------------

    def replicate(self, tree: Any) -> Any:
        """``tree`` replicated over the mesh (as the update returns the state)."""
        return replicate(tree, self.mesh)

    def local_params(self, params: Any) -> Any:
        """Parameters for process-local acting: with a placement that acts apart, the acting
        copy on the acting devices (``Placement.acting_params``); shared, with several
        processes a copy on this process's device (the replicated ones would make acting a
        computation over every process's devices). Nothing is donated, so one process acts
        with the learner's own arrays when shared."""
        if not self.placement.shared:
            return self.placement.acting_params(params)
        return local_copy(params) if self.multi else params

    def own_key(self, key: jax.Array) -> jax.Array:
        """This process's key from the job's (each process's environments draw their own
        actions; one process keeps the job's key, as before several were possible)."""
        return jax.random.fold_in(key, self.index) if self.multi else key

    def global_batch(self, batch: Any) -> Any:
        """This process's environments as its block of the job's batch (one process: as is;
        the update places it)."""
        return global_batch(batch, self.mesh, self.sizes.num_envs_global) if self.multi else batch

    def global_demo(self, demo: DemoBatch, windows: int) -> DemoBatch:
        """This process's windows of the demo as its block of the job's ``windows`` (one
        process: as is; the update places them)."""
        return global_demo(demo, self.mesh, windows) if self.multi else demo

    # ---- control ---------------------------------------------------------------------------

    def interrupt_event(self, stop: threading.Event) -> threading.Event:
        """What may cut a rollout short: a stop request with one process; with several, nothing
        (a stop is agreed at the next exchange, so every process does the same updates)."""
        return threading.Event() if self.multi else stop

    def barrier(self, name: str) -> None:
        if self.multi:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def exchange(self, records: EpisodeRecords, sums: Mapping[str, float],
                 means: Mapping[str, float], stop: bool) -> Exchanged:
        """Every process's episode records (concatenated in process order), the sums over
        processes of ``sums`` and the averages of ``means`` (the same keys on every process),
        and whether any process was asked to stop. Two ``process_allgather`` calls: the counts
        and numbers, then the records padded to a power of two (a few compiled sizes)."""
        if not self.multi:
            return Exchanged(records, dict(sums), dict(means), stop)
        from jax.experimental import multihost_utils

        keys = [f"sum:{k}" for k in sorted(sums)] + [f"mean:{k}" for k in sorted(means)]
        values = [sums[k[4:]] for k in keys if k.startswith("sum:")] + [
            means[k[5:]] for k in keys if k.startswith("mean:")]
        tag = int.from_bytes(hashlib.sha256(",".join(keys).encode()).digest()[:3], "little")
        head = multihost_utils.process_allgather({
            "ints": np.asarray([len(records), int(stop), tag], np.int32),
            "numbers": np.asarray(values, np.float32)})
        ints, gathered = np.asarray(head["ints"]), np.asarray(head["numbers"])
        if (ints[:, 2] != tag).any():
            raise DistributedError("processes exchanged different quantities (mixed versions "
                                   "of the code?)")
        counts = ints[:, 0]
        size = 1 << max(int(counts.max()) - 1, 0).bit_length()

        def pad(x: np.ndarray, dtype: Any) -> np.ndarray:
            return np.pad(np.asarray(x, dtype), (0, size - len(x)))

        got = multihost_utils.process_allgather({
            "start": pad(records.start, np.int32), "good": pad(records.as_good_as_demo, np.int32),
            "score": pad(records.score, np.float32), "final": pad(records.final_frame, np.int32),
            "demo": pad(records.demo, np.int32)})
        got = {k: np.asarray(v) for k, v in got.items()}
        merged = EpisodeRecords.concatenate(
            EpisodeRecords.make(got["start"][p, :n], got["good"][p, :n].astype(bool),
                                got["score"][p, :n], got["final"][p, :n], got["demo"][p, :n])
            for p, n in enumerate(counts.tolist()))
        total = dict(zip(keys, gathered.sum(axis=0).tolist(), strict=True))
        return Exchanged(merged, {k[4:]: v for k, v in total.items() if k.startswith("sum:")},
                         {k[5:]: v / self.count for k, v in total.items()
                          if k.startswith("mean:")}, bool(ints[:, 1].any()))

    def check_agreement(self, update: int, params: Any, curriculum: dict[str, Any],
                        log_dir: str | Path | None = None) -> None:
        """Raises ``DistributedError`` unless every process holds bit-identical parameters and the
        same curriculum state (a digest of each, gathered). With ``log_dir``, appends this
        process's digests to ``log_dir/p<index>.jsonl`` (what the tests compare)."""
        if not self.multi:
            return
        from jax.experimental import multihost_utils

        h = hashlib.sha256()
        for leaf in jax.tree.leaves(params):
            h.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
        p_digest = h.digest()[:8]
        c_digest = hashlib.sha256(json.dumps(curriculum, sort_keys=True).encode()).digest()[:8]
        if log_dir is not None:
            log_dir = Path(log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            row = {"update": int(update), "process": self.index, "processes": self.count,
                   "params": p_digest.hex(), "curriculum": c_digest.hex(),
                   "starting_points": list(curriculum.get("starting_points", [])) or [
                       p for d in curriculum.get("demos", []) for p in d["starting_points"]]}
            with (log_dir / f"p{self.index}.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        mine = np.frombuffer(p_digest + c_digest, np.int32)
        got = np.asarray(multihost_utils.process_allgather(mine))
        for what, cols in (("parameters", slice(0, 2)), ("curriculum state", slice(2, 4))):
            differ = [p for p in range(self.count) if (got[p, cols] != got[0, cols]).any()]
            if differ:
                raise DistributedError(f"after update {update} process(es) {differ} hold "
                                 f"different {what} from process 0")
