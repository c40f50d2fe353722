"""PPO's hyper-parameters: the ``[ppo]`` section of a run config, owned by the learner.

Defaults are the reference's (``docs/algorithm.md``, section PPO). Frozen (hashable), so it can
be closed over by jitted functions and stored with a checkpoint; derive variants with
``dataclasses.replace``. The network's shape is ``jax_reset.networks.NetworkConfig``.
"""

from __future__ import annotations

import dataclasses
import math

CUT_MODES = ("zero", "end")
IMITATION_SPANS = ("spread", "rest")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters of one update (reference values)."""

    # Discount per agent step (0.9999 in some reference runs).
    gamma: float = 0.999
    # GAE lambda.
    gae_lambda: float = 0.95
    # Clip range of both the probability ratio and the value change (value-clipped loss).
    clip: float = 0.1
    # Entropy bonus coefficient (the authors: lower it when training stalls).
    ent_coef: float = 1e-4
    # Value loss coefficient; the value loss itself is 0.5*max(clipped, unclipped) squared error.
    vf_coef: float = 0.5
    # L2 coefficient on all parameters, penalty l2_coef * 0.5 * sum(p**2).
    l2_coef: float = 1e-7
    # Adam learning rate (the authors: lower it when training stalls).
    learning_rate: float = 1e-4
    # Adam epsilon.
    adam_eps: float = 1e-6
    # Global gradient-norm clip; None = no clipping (algorithm.md lists none for the reference).
    max_grad_norm: float | None = None
    # Optimisation epochs over the full batch per update.
    epochs: int = 4
    # KL early stopping: an update stops taking optimiser steps at the first one whose
    # approximate KL from the behaviour policy (0.5 * mean (logp - old)^2 over the minibatch,
    # measured before the step) exceeds this; that step is not applied. None = every step (the
    # reference). PPO's ratio clip alone let the CPU Pong job's policy move by a KL of 2.9 in
    # one update and collapse (docs/results.md).
    target_kl: float | None = None
    # Minibatches per epoch, split along the (global) environment axis: minibatch m holds the
    # environments whose global index is = m (mod minibatches). The number of environments must
    # be divisible by minibatches * number of devices. The reference trains on the full batch.
    minibatches: int = 1
    # New agent steps per environment per update (the rollout).
    rollout_steps: int = 128
    # What a cut (the extra-frames budget after reaching the demo's score ran out) means to GAE.
    # "zero" (the reference): the cut step's advantage is 0 and nothing flows back across it,
    # so a reward earned in the cut step itself is never learned (~22% of Pong's won points at
    # its first hard start, docs/results.md). "end": the cut ends the episode for learning, as
    # the lag rule's end does (the value after it is 0): the step keeps its reward.
    cut_mode: str = "zero"
    # Steps before the rollout that every epoch re-runs to rebuild the recurrent state under the
    # current parameters, excluded from all losses. A training sequence is
    # burn_in_steps + rollout_steps long (64 + 128 = 192).
    burn_in_steps: int = 64
    # Imitation of the demo's actions (``jax_reset.ppo.imitation``): the weight of the term
    # ``imitation_coef * mean(-log pi(demo action | demo observations))`` added to the loss, and
    # the windows of the demo it is measured on per update (sequences of burn_in_steps +
    # rollout_steps agent steps starting where the environments start; split over minibatches
    # and devices like the environments). Both 0: off, as in the 2018 method; both or neither.
    imitation_coef: float = 0.0
    imitation_windows: int = 0
    # Where the windows start: "spread", uniformly in the curriculum's current spread of
    # starting points (the stretch being learned); "rest", uniformly from the lowest starting
    # point to the demo's end, so every stretch the agent still plays keeps its labels. With
    # "spread" a curriculum at the game's start imitates only the demo's first 128 agent steps;
    # two Montezuma runs then lost the rest of the route within 200 updates. "rest" did not stop
    # such losses and slowed the curriculum on Montezuma (docs/results.md).
    imitation_span: str = "spread"

    def __post_init__(self) -> None:
        if self.rollout_steps <= 0 or self.burn_in_steps < 0:
            raise ValueError("rollout_steps must be > 0 and burn_in_steps >= 0")
        if self.burn_in_steps > self.rollout_steps:
            # The burn-in of update k+1 is the tail of update k's rollout.
            raise ValueError(
                f"burn_in_steps ({self.burn_in_steps}) must not exceed rollout_steps "
                f"({self.rollout_steps})"
            )
        if self.epochs <= 0 or self.minibatches <= 0:
            raise ValueError("epochs and minibatches must be positive")
        for name in ("gamma", "gae_lambda", "clip", "ent_coef", "vf_coef", "l2_coef",
                     "learning_rate", "adam_eps", "max_grad_norm", "target_kl",
                     "imitation_coef"):
            value = getattr(self, name)
            # An infinite rate or coefficient passed the sign checks and failed 10 s later,
            # inside the first update, with a traceback.
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], not {self.gamma}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], not {self.gae_lambda}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, not {self.adam_eps}")
        for name in ("ent_coef", "vf_coef", "l2_coef", "imitation_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, not {getattr(self, name)}")
        check_choice("cut_mode", self.cut_mode, CUT_MODES)
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"target_kl must be positive or None, not {self.target_kl}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, not {self.max_grad_norm}")
        if not self.clip > 0:
            raise ValueError(f"clip must be positive, not {self.clip}")
        check_choice("imitation_span", self.imitation_span, IMITATION_SPANS)
        if self.imitation_windows < 0:
            raise ValueError(f"imitation_windows must be >= 0, not {self.imitation_windows}")
        if (self.imitation_coef > 0) != (self.imitation_windows > 0):
            raise ValueError("imitation_coef and imitation_windows go together: both > 0 "
                             "(imitate the demo's actions) or both 0 (off), not "
                             f"{self.imitation_coef} and {self.imitation_windows}")

    @property
    def imitates(self) -> bool:
        """Whether the update has the demo-imitation term."""
        return self.imitation_windows > 0

    @property
    def sequence_steps(self) -> int:
        """Length S of a training sequence: burn-in + rollout."""
        return self.burn_in_steps + self.rollout_steps


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """``ValueError`` (one line) unless ``value`` of setting ``name`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
