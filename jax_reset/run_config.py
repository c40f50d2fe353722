"""The config a run trains with on this machine: the platform JAX found and the run directory's
precedence (a new run's file and overrides, or a resume's checkpointed config with the command
line on top, ``jax_reset.run_dir``), with the CPU overlay applied when no accelerator was found
(unless the full size is asked for) and the notes the run prints about it. ``resolve`` and
``detect_platform`` are re-exported by ``jax_reset.trainer``; ``jax_reset.train_setup`` uses
them to build the run.
"""

from __future__ import annotations

from typing import Any

import jax

from jax_reset import run_dir as rd


def detect_platform() -> tuple[bool, str]:
    """(on_cpu, description): whether no accelerator was found, and what was."""
    devices = jax.local_devices()
    kinds = sorted({d.device_kind for d in devices})
    on_cpu = jax.default_backend() == "cpu"
    return on_cpu, f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()})"


def resolve(req: rd.Request, full_size: bool) -> tuple[Any, list[str]]:
    """The config this run trains with (``run_dir``'s precedence) and the notes to print."""
    on_cpu = not full_size and detect_platform()[0]
    if not req.resume:
        return rd.new_config(req, on_cpu), rd.cpu_notes(req, on_cpu)
    saved = runtime = None
    if rd.has_checkpoints(req.run_dir):
        with rd.open_checkpoints(req.run_dir, keep_last=1) as checkpoints:
            found = rd.saved_config(checkpoints, req.checkpoint)
        if found is not None:
            saved, runtime = found
    notes = []
    if saved is None:  # a restart before the first checkpoint: from update 0
        from jax_reset import config as config_lib

        saved = config_lib.read_file(req.run_dir / rd.CONFIG_NAME)
        notes.append(f"no checkpoint in {req.run_dir} yet: starting from update 0 with its "
                     f"{rd.CONFIG_NAME}")
    config, more = rd.resume_config(saved, req, runtime, on_cpu=on_cpu)
    return config, notes + more
