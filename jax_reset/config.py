"""The run configuration: one typed, frozen schema, read from TOML, validated once.

A config file is TOML with one table per section (``[demo]``, the one required, ``[env]``,
``[network]``, ``[ppo]``, ``[curriculum]``, ``[stall]``, ``[train]``). Every key must exist in the
schema and have the declared type, and each problem is reported as one line naming the dotted key
(the sizes that must divide depend on the number of processes and devices:
``jax_reset.sizes.derive`` checks them when the run starts). Command-line overrides use the same
dotted names (``ppo.learning_rate=3e-4 train.num_envs=32``) and are parsed as TOML values, so
``x=3e-4`` is a float, ``x=true`` a bool, ``x=[16,32]`` a list and anything that is not a TOML
value (``demo.demo_path=demos/Pong.npz``) a string.

Presets (TOML has no include, so three reserved top-level keys link files):

- ``base = "base.toml"``: the file this one extends, a path relative to the file naming it. The
  base is read first (its own ``base`` too: chains are allowed, a cycle is refused with one
  line), then this file's keys are merged over it, table by table. ``configs/base.toml`` holds
  the reference's hyperparameters; ``configs/<game>.toml`` names it and adds only what differs
  (the demo, a comment on scale, ...).
- ``cpu = "cpu.toml"``: the CPU overlay, a file of the same form holding only the keys that
  change where no GPU is found (the trainer applies it, and says so, before the command line's
  overrides): the reference network needs minutes per update on a CPU (``docs/cpu.md``), so
  every preset has a CPU-sized variant. Inherited from the base like any key
  (``configs/base.toml`` names ``configs/cpu.toml``); a file's own ``cpu`` replaces its base's.
- ``[on_cpu]``: the overlay inline, as dotted overrides (``train.num_envs = 8``), for a config
  kept in a single file; merged over the ``cpu`` file's keys when both are given.

The overlay is checked even when it is not applied, so a typo in it fails on a GPU machine
too. Whatever its source, ``read_file`` returns it as the file's ``[on_cpu]`` table, so the rest
of the loader sees one form; a run's resolved config (``RUN_DIR/config.json``) has no links.

A saved config (``config.json``, a checkpoint's metadata) may hold keys that this code no longer
has: ``RETIRED_KEYS`` lists them with the one value the code they were removed from behaved
like today's, and ``drop_retired`` takes them out of a saved config (a user's TOML file must
not name them).

The generic part (``from_dict``, ``to_dict``, ``apply_overrides``, ``read_file``, ``merge``,
``diff``, ``save_json``) works for any tree of frozen dataclasses and lives in
``jax_reset.config_tree`` (re-exported here); each section is owned by the module that uses it
(``EnvConfig`` and ``DemoResetConfig`` by the pool, ``NetworkConfig`` by the network,
``PPOConfig`` by the PPO update, ``CurriculumConfig`` by the curriculum, ``StallConfig`` by the
stall controller) and they are composed here with ``TrainConfig``, the run's own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jax_reset import config_tree
from jax_reset.config_tree import (
    BASE_KEY,
    CPU_KEY,
    CPU_TABLE,
    ConfigError,
    apply_overrides,
    diff,
    from_dict,
    merge,
    parse_override,
    parse_value,
    save_json,
    to_dict,
)
from jax_reset.curriculum import CurriculumConfig
from jax_reset.envs.config import DemoResetConfig, EnvConfig
from jax_reset.networks import NetworkConfig
from jax_reset.ppo.config import PPOConfig
from jax_reset.stall import StallConfig
from jax_reset.train_config import TrainConfig

__all__ = [
    "BASE_KEY", "CPU_KEY", "CPU_TABLE", "RESUME_FROZEN", "RETIRED_KEYS", "Config",
    "ConfigError", "apply_overrides", "diff", "drop_retired", "from_dict", "load", "merge",
    "parse_override", "parse_value", "read_file", "resolve", "save_json", "to_dict",
]

# What a checkpoint's arrays and episodes depend on: a resume may not change these (a lower
# learning rate or entropy coefficient, the authors' advice when progress stalls, is allowed).
RESUME_FROZEN = ("env", "demo", "network", "train.num_envs")
# Keys removed from the schema -> the only value a saved config may hold for them: the one the
# code behaved like today's with (any other value trained something this code cannot restore).
RETIRED_KEYS: dict[str, Any] = {
    "network.obs_layout": "chw",  # the pool always emitted [stack * C, H, W]; "hwc" never ran
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def drop_retired(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config (nested) without its ``RETIRED_KEYS`` (a copy); a retired key with another
    value than the accepted one is a ``ConfigError``."""
    return config_tree.drop_retired_keys(data, RETIRED_KEYS)


def read_file(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Reads a config file into a nested dict, with its ``base`` chain merged in and its CPU
    overlay (a ``cpu`` file, an ``[on_cpu]`` table or both) as the ``[on_cpu]`` table; a saved
    config (JSON) without its ``RETIRED_KEYS``.

    A cycle of ``base``/``cpu`` links is refused with one line naming the files.
    """
    return config_tree.read_file(path, _chain, retired=RETIRED_KEYS)


def _parse(path: Path) -> dict[str, Any]:
    """One config file as it is written, without its links resolved (``config_tree._parse``;
    a saved config without its ``RETIRED_KEYS``)."""
    return config_tree._parse(path, RETIRED_KEYS)


# --------------------------------------------------------------------------------------------
# The run's schema and its loader.


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs; saved resolved in the run directory as ``config.json``."""

    demo: DemoResetConfig  # the demo file and the per-frame episode rules (pool)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)  # preprocessing (pool)
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)  # learner
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)  # learner
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    # Lowering the learning rate and entropy coefficient when the curriculum stalls (off).
    stall: StallConfig = dataclasses.field(default_factory=StallConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        h, w = self.env.img_height, self.env.img_width
        for k, s in zip(self.network.conv_kernels, self.network.conv_strides, strict=True):
            h, w = (h - k) // s + 1, (w - k) // s + 1
        _check(h >= 1 and w >= 1,
               f"the convolutions {self.network.conv_kernels} / {self.network.conv_strides} "
               f"leave nothing of a {self.env.img_height}x{self.env.img_width} frame")


def resolve(data: Mapping[str, Any], overrides: Sequence[str] = (), on_cpu: bool = False,
            ) -> Config:
    """A config from a file's nested dict: ``[on_cpu]`` merged when asked, then the overrides.

    The ``[on_cpu]`` table is checked even when it is not applied, so a typo in it fails on
    a GPU machine too.
    """
    data = dict(data)
    cpu = data.pop(CPU_TABLE, {})
    if not isinstance(cpu, Mapping):
        raise ConfigError(f"{CPU_TABLE}: expected a table of overrides")
    config = from_dict(Config, apply_overrides(data, overrides))
    try:
        cpu_config = from_dict(Config, apply_overrides(merge(data, cpu), overrides))
    except ConfigError as err:
        raise ConfigError(f"[{CPU_TABLE}] {err}") from None
    return cpu_config if on_cpu else config


def load(path: str | os.PathLike, overrides: Sequence[str] = (), on_cpu: bool = False,
         ) -> Config:
    """Reads and validates a config file (``configs/<game>.toml`` or a run's ``config.json``)."""
    data = read_file(path)  # its errors name the file already
    try:
        return resolve(data, overrides, on_cpu)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
