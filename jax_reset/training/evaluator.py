"""Full games from the game's start while a run trains (``[eval]``, ``jax_reset.config.
EvalConfig``): the score an RL reader compares, beside the curriculum's position.

Process 0 plays them on the main thread between two updates, with the parameters of the update
just made, the test-time policy and EnvPool under one protocol, exactly as ``python -m
jax_reset.evaluate`` does (``jax_reset.evaluation.play``). The policy is compiled once; each
evaluation passes it the new parameters. The games' seed is the same every time, so the curve
moves with the policy, not with the games drawn; a resumed run evaluates the same updates with
the same seed. With ``overlap`` the actor thread goes on collecting meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from jax_reset import metrics as m
from jax_reset.evaluation.play import NetworkPolicy, run_protocol
from jax_reset.evaluation.video import FILM_AGENT_STEPS, record_episode


def evaluation_due(eval_config: Any, update: int, total_updates: int) -> bool:
    """Whether update ``update`` is evaluated (``eval_config``: ``EvalConfig``): every
    ``eval.every``, and the run's last. From the config alone, so every process of a job agrees
    (only process 0 evaluates; all of them save the evaluated update's checkpoint)."""
    every = eval_config.every
    return every > 0 and (update % every == 0 or update == total_updates)


class Evaluator:
    """Plays ``config.eval`` games of ``game`` with a network's parameters (``num_actions``)."""

    def __init__(self, config: Any, game: str, num_actions: int) -> None:
        self.eval, self.env, self.game = config.eval, config.env, game
        self.total_updates = config.train.total_updates
        self.policy = NetworkPolicy(config.network, None, num_actions)

    def due(self, update: int) -> bool:
        """Whether update ``update`` is evaluated: ``evaluation_due``."""
        return evaluation_due(self.eval, update, self.total_updates)

    def __call__(self, params: Any, update: int, counters: dict[str, float],
                 ) -> tuple[dict[str, float], dict[str, Any]]:
        """Plays the games with ``params``: (the ``eval/`` metrics, the record of every game
        for ``evaluations.jsonl``: update, ``counters``, protocol, seed, scores, lengths)."""
        # One copy on one device for the whole evaluation (not a transfer per step).
        self.policy.params = jax.device_put(jax.device_get(params), jax.local_devices()[0])
        result = run_protocol(self.game, self.env, self.policy, self.eval.protocol,
                              self.eval.episodes, num_envs=self.eval.envs, seed=self.eval.seed)
        summary = result.summary()
        metrics = {
            m.EVAL_SCORE: summary["score_mean"], m.EVAL_SCORE_MEDIAN: summary["score_median"],
            m.EVAL_SCORE_MIN: summary["score_min"], m.EVAL_SCORE_MAX: summary["score_max"],
            m.EVAL_LENGTH: summary["length_mean_agent_steps"],
            m.EVAL_EPISODES: float(summary["episodes"]), m.EVAL_SECONDS: result.seconds,
        }
        record = {"update": update, **counters, "protocol": result.protocol,
                  "seed": self.eval.seed, "scores": result.scores, "lengths": result.lengths,
                  "seconds": round(result.seconds, 2)}
        return metrics, record

    def video_due(self, update: int) -> bool:
        """Whether this evaluation also films a game: every ``eval.video_every`` evaluations
        (counted from the update, so a resumed run films the same ones)."""
        n = self.eval.video_every
        return n > 0 and self.due(update) and update % (self.eval.every * n) == 0

    def film(self, update: int, folder: Path) -> tuple[Path, float]:
        """One game under the plain protocol with the parameters of the last evaluation (its
        first ``FILM_AGENT_STEPS`` agent steps at most), to ``folder/update_<update>.mp4``;
        returns (its path, the score filmed)."""
        path = folder / f"update_{update:07d}.mp4"
        score, _ = record_episode(self.game, self.env, self.policy, path, "plain",
                                  seed=self.eval.seed, max_agent_steps=FILM_AGENT_STEPS)
        return path, score

    def reached(self, score: float, at_start: bool) -> bool:
        """Whether ``score`` ends the run (``eval.stop_score``, with every curriculum at the
        game's start, ``at_start``, unless ``eval.stop_needs_start`` is false)."""
        return (at_start or not self.eval.stop_needs_start) and score >= self.eval.stop_score
