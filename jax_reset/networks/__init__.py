"""The recurrent actor-critic of the reference: its config section and its Flax model.

- ``jax_reset.networks.config``: ``NetworkConfig``, the ``[network]`` section of a run config.
- ``jax_reset.networks.model``: ``ActorCritic``, ``make_network``, ``init_params``,
  ``init_carry``, ``forward_flops`` (the layer-by-layer description is there).

All of them can be imported from ``jax_reset.networks``. The model's names are loaded on first
use: reading a config must not import JAX and Flax, because the environment pool's worker
processes start with "spawn" and re-import the trainer's imports (with JAX and Flax each worker
would take about 150 MB and 0.6 s more).
"""

from __future__ import annotations

from typing import Any

from jax_reset.networks.config import NetworkConfig

_MODEL_NAMES = frozenset({
    "INPUT_MEAN", "ActorCritic", "Carry", "Params", "Torso", "forward_flops", "init_carry",
    "init_params", "make_network", "set_input_mean",
})

__all__ = ["NetworkConfig", *sorted(_MODEL_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        # Flax and JAX: only when a model name is used (reading a config stays JAX-free)
        from jax_reset.networks import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
