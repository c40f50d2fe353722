"""The run configuration: one typed, frozen schema, read from TOML, validated once.

A config file is TOML with one table per section (``[demo]``, the one required, ``[env]``,
``[network]``, ``[ppo]``, ``[curriculum]``, ``[stall]``, ``[train]``, ``[eval]``, ``[wandb]``).
Every key must exist in the schema and have the declared type, and each problem is reported as
one line naming the dotted key (the sizes that must divide depend on the number of processes and
devices: ``jax_reset.parallel.sizes.derive`` checks them when the run starts). Command-line
overrides use the same dotted names (``ppo.learning_rate=3e-4 train.num_envs=32``) and are
parsed as TOML values, so ``x=3e-4`` is a float, ``x=true`` a bool, ``x=[16,32]`` a list and
anything that is not a TOML value (``demo.demo_path=demos/Pong.npz``) a string.

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
``jax_reset.config_tree`` (import them from there); each section is owned by the module that uses it
(``EnvConfig`` and ``DemoResetConfig`` by the pool, ``NetworkConfig`` by the network,
``PPOConfig`` by the PPO update, ``CurriculumConfig`` by the curriculum, ``StallConfig`` by the
stall controller) and they are composed here with ``TrainConfig``, the run's own (defined
here). Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jax_reset import config_tree
from jax_reset.config_tree import (
    CPU_TABLE,
    ConfigError,
    apply_overrides,
    from_dict,
    merge,
    to_dict,
)
from jax_reset.curriculum import CurriculumConfig
from jax_reset.curriculum.stall import StallConfig
from jax_reset.envs.config import DemoResetConfig, EnvConfig
from jax_reset.networks import NetworkConfig
from jax_reset.ppo.config import PPOConfig

# What a checkpoint's arrays and episodes depend on: a resume may not change these (a lower
# learning rate or entropy coefficient, the authors' advice when progress stalls, is allowed).
RESUME_FROZEN = ("env", "demo", "network", "train.num_envs")
# Keys removed from the schema -> the only value a saved config may hold for them: the one the
# code behaved like today's with (any other value trained something this code cannot restore).
RETIRED_KEYS: dict[str, Any] = {
    "network.obs_layout": "chw",  # the pool always emitted [stack * C, H, W]; "hwc" never ran
}


def frozen_keys(changed: Sequence[str], frozen: Sequence[str] = RESUME_FROZEN) -> list[str]:
    """The dotted keys of ``changed`` that ``frozen`` (keys or sections) covers."""
    return [k for k in changed if any(k == f or k.startswith(f + ".") for f in frozen)]


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config with the keys added to the schema since at their defaults (so a section
    added later, like ``[stall]``, is not a changed setting); as saved if it no longer reads."""
    try:
        return to_dict(from_dict(Config, saved))
    except ConfigError:
        return dict(saved)


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


# --------------------------------------------------------------------------------------------
# The ``[train]`` section, the run's own: its sizes and the schedule of its checkpoints and logs.

#: ``train.placement`` values besides "A+L" (A acting and L learning devices per process).
PLACEMENTS = ("auto", "shared", "host")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run: sizes, schedule of checkpoints and logs."""

    # Environments in total (all processes; ``jax_reset.parallel.sizes.derive`` splits them) and CPU
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
    # next group (``jax_reset.training.actor``). 1: infer for all, then step all. Each environment
    # samples with its own key, so the grouping changes only the float order of inference.
    env_groups: int = 1
    # Which of each process's devices act (policy inference and warm-up, with a copy of the
    # parameters refreshed once per update) and which learn (the update's data mesh spans the
    # learning devices of every process), Cleanba's split (``jax_reset.parallel.placement``):
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


# --------------------------------------------------------------------------------------------
# The ``[eval]`` section: full games from the game's start while the run trains.

#: The evaluation protocols (``jax_reset.evaluation.envs.PROTOCOLS``, which imports JAX).
EVAL_PROTOCOLS = ("plain", "noop", "sticky", "epsilon")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Every ``every`` updates (and at the last), process 0 plays ``episodes`` full games from
    the game's start under ``protocol`` with the parameters of that update (test-time policy,
    EnvPool, as ``python -m jax_reset.evaluate``): the score every RL reader asks for, beside
    the curriculum's position. Logged as ``eval/`` metrics; every game's score goes to
    ``RUN_DIR/evaluations.jsonl``. Its seconds are left out of ``train/agent_steps_per_s``."""

    # Updates between two evaluations; 0: none during training.
    every: int = 0
    episodes: int = 8
    protocol: str = "plain"
    # EnvPool environments playing them at once (at most ``episodes``).
    envs: int = 8
    # The games' seed: the same at every evaluation, so the curve moves with the policy only.
    seed: int = 12345
    # Every this many evaluations one more game (plain protocol) is filmed: an MP4 in
    # RUN_DIR/videos/, an animated image in TensorBoard (Images tab), a video in W&B. 0: none.
    video_every: int = 0
    # Stop the run (a checkpoint, exit 0) at the first evaluation whose mean score reaches this,
    # once every demo's curriculum is at the game's start (inf: never; the run ends at
    # ``train.total_updates``).
    stop_score: float = math.inf
    # Whether ``stop_score`` counts only once every curriculum is at the game's start (the
    # reference's end of training); false: at any evaluation, since they all play from the
    # game's start (a policy can play the whole game before its curriculum gets there, and a
    # run then ends on it rather than training on past it).
    stop_needs_start: bool = True

    def __post_init__(self) -> None:
        for ok, message in (
                (self.every >= 0, "every must be non-negative (0: no evaluation)"),
                (self.episodes >= 1, "episodes must be at least 1"),
                (self.envs >= 1, "envs must be at least 1"),
                (self.video_every >= 0, "video_every must be non-negative (0: no video)"),
                (self.protocol in EVAL_PROTOCOLS,
                 f"protocol must be one of {', '.join(EVAL_PROTOCOLS)}, got {self.protocol!r}"),
                (not math.isnan(self.stop_score), "stop_score must be a number (inf: never)"),
                (self.every > 0 or math.isinf(self.stop_score),
                 "stop_score needs evaluations: set eval.every")):
            if not ok:
                raise ValueError(message)


# --------------------------------------------------------------------------------------------
# The ``[wandb]`` section: Weights & Biases, optional.

WANDB_MODES = ("online", "offline")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging, off unless ``project`` is set (the extra: ``pip install -e
    '.[wandb]'``). Process 0 logs the resolved config, every metrics line and every evaluation
    (``jax_reset.training.wandb_log``); a resumed run continues the same W&B run."""

    project: str = ""  # "": no W&B
    entity: str = ""  # "": the account's default
    name: str = ""  # "": the run directory's name
    # "offline": everything under RUN_DIR/wandb, uploaded later with `wandb sync`.
    mode: str = "online"

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"mode must be online or offline, got {self.mode!r}")


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
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)  # games from the start
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)  # optional logging

    @property
    def plays_the_demo(self) -> bool:
        """False for the no-demo baseline's settings: every episode from the game's reset
        (``curriculum.start_at = 0`` and every start at the starting point), never a demo
        state."""
        return not (self.curriculum.start_at == 0 and self.demo.p_start_at_starting_point == 1.0)

    def __post_init__(self) -> None:
        h, w = self.env.img_height, self.env.img_width
        for k, s in zip(self.network.conv_kernels, self.network.conv_strides, strict=True):
            h, w = (h - k) // s + 1, (w - k) // s + 1
        _check(h >= 1 and w >= 1,
               f"the convolutions {self.network.conv_kernels} / {self.network.conv_strides} "
               f"leave nothing of a {self.env.img_height}x{self.env.img_width} frame")


def from_data(data: Mapping[str, Any], overrides: Sequence[str] = (), on_cpu: bool = False,
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
        return from_data(data, overrides, on_cpu)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
