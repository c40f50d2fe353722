"""Playing a trained policy: full games from the game's reset on EnvPool under one protocol
(``run_protocol``), the test-time policy of a network (``NetworkPolicy``), and a run
directory's policy rebuilt from its checkpoint alone (``load_run``). The protocols and the
EnvPool environments are ``jax_reset.evaluation.envs``; ``python -m jax_reset.evaluate`` is the
command line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_reset import networks
from jax_reset.envs.config import EnvConfig
from jax_reset.evaluation.envs import EPSILON, BatchPolicy, make_envpool, protocol_env_config
from jax_reset.evaluation.errors import EmulatorCrash, EvalError
from jax_reset.ppo.acting import make_act_fn
from jax_reset.run.layout import UsageError
from jax_reset.run.state import load_params


@dataclasses.dataclass(frozen=True)
class ProtocolResult:
    """Finished full games under one protocol. Lengths are agent steps (frames = × frame_skip)."""

    protocol: str
    scores: list[float]
    lengths: list[int]
    frame_skip: int
    seconds: float
    # Each game's score once it had played ``at_frame`` emulator frames (its final score if it
    # ended sooner); empty when no frame was asked for.
    at_frame: int | None = None
    scores_at_frame: list[float] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s, n = np.asarray(self.scores), np.asarray(self.lengths)
        at: dict[str, Any] = {}
        if self.at_frame is not None:
            a = np.asarray(self.scores_at_frame)
            at = {"at_frame": self.at_frame, "score_at_frame_mean": float(a.mean()),
                  "score_at_frame_min": float(a.min()), "score_at_frame_max": float(a.max())}
        return at | {
            "protocol": self.protocol, "episodes": len(s),
            "score_mean": float(s.mean()), "score_median": float(np.median(s)),
            "score_min": float(s.min()), "score_max": float(s.max()),
            "length_mean_agent_steps": float(n.mean()), "length_median_agent_steps":
            float(np.median(n)), "length_min_agent_steps": int(n.min()),
            "length_max_agent_steps": int(n.max()),
            "frames_mean": float(n.mean() * self.frame_skip), "seconds": round(self.seconds, 2),
            # every game, in the order they ended: what a published result cites
            "scores": list(self.scores), "lengths_agent_steps": list(self.lengths),
        }


def run_protocol(game: str, env: EnvConfig, policy: BatchPolicy, protocol: str, episodes: int,
                 *, num_envs: int = 16, seed: int = 0, at_frame: int | None = None,
                 on_episode: Callable[[int], None] | None = None) -> ProtocolResult:
    """Plays ``episodes`` full games under ``protocol`` and returns their scores and lengths,
    and, with ``at_frame``, each game's score after that many emulator frames (a demo's length:
    how the agent compares with the demo at the point where the demo ends).

    Each environment plays a fixed quota of episodes (``episodes`` split evenly), so short
    episodes are not over-represented as they would be by taking the first ``episodes`` to end.
    """
    if episodes < 1:
        raise EvalError(f"--episodes must be at least 1, got {episodes}")
    if num_envs < 1:
        raise EvalError(f"--envs must be at least 1, got {num_envs}")
    num_envs = min(num_envs, episodes)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    lengths: list[int] = []
    scores_at: list[float] = []
    pool = None
    try:
        pool = make_envpool(game, protocol_env_config(env, protocol), num_envs, seed)
        num_actions = pool.num_actions
        policy.reset(num_envs, seed)
        start = time.perf_counter()  # the games' time, not the child's start
        obs, _ = pool.reset()
        episode_start = np.ones(num_envs, dtype=bool)
        # EnvPool's step after an episode end ignores the action and returns the next episode's
        # first observation with reward 0: that step is `resetting`, and counts for nothing.
        resetting = np.zeros(num_envs, dtype=bool)
        score = np.zeros(num_envs)
        length = np.zeros(num_envs, dtype=np.int64)
        done_count = np.zeros(num_envs, dtype=np.int64)
        score_at = np.full(num_envs, np.nan)  # NaN until the game reaches at_frame
        while np.any(done_count < quota):
            actions = policy.act(obs, episode_start)
            if protocol == "epsilon":
                explore = rng.random(num_envs) < EPSILON
                actions = np.where(explore, rng.integers(0, num_actions, num_envs), actions)
            obs, reward, terminated, truncated, _ = pool.step(np.asarray(actions, np.int32))
            playing = ~resetting
            score += np.where(playing, reward, 0.0)
            length += playing
            if at_frame is not None:  # (an agent step's frames: the skip, for these games)
                reached = np.isnan(score_at) & (length * env.frame_skip >= at_frame)
                score_at[reached] = score[reached]
            ended = np.asarray(terminated | truncated) & playing
            for i in np.flatnonzero(ended & (done_count < quota)):
                scores.append(float(score[i]))
                lengths.append(int(length[i]))
                if at_frame is not None:
                    scores_at.append(float(score[i] if np.isnan(score_at[i]) else score_at[i]))
                done_count[i] += 1
                if on_episode is not None:
                    on_episode(len(scores))
            score[ended], length[ended], score_at[ended] = 0.0, 0, np.nan
            episode_start, resetting = resetting, ended
    except EmulatorCrash as crash:
        # Known in ALE (a segmentation fault in some games); the games lost are this
        # protocol's unfinished ones: another seed plays other games.
        raise EmulatorCrash(f"{crash} while playing {game} under the {protocol} protocol, "
                            f"after {len(scores)} of {episodes} games (a known emulator fault "
                            f"in some games; another --seed plays other games)",
                            crash.signal) from None
    finally:
        if pool is not None:
            pool.close()
    return ProtocolResult(protocol, scores, lengths, env.frame_skip,
                          time.perf_counter() - start, at_frame, scores_at)


class NetworkPolicy:
    """The test-time policy of a trained network: logits doubled, no entropy boost, sampled."""

    def __init__(self, network_config: Any, params: Any, num_actions: int) -> None:
        self._config = network_config
        self._act = make_act_fn(networks.make_network(network_config, num_actions),
                                evaluate=True)
        self.params = params

    def reset(self, num_envs: int, seed: int) -> None:
        self._carry = networks.init_carry(self._config, num_envs)
        self._key = jax.random.PRNGKey(seed)
        self._no_boost = np.zeros(num_envs, dtype=bool)

    def act(self, obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        self._key, key = jax.random.split(self._key)
        out = self._act(self.params, obs, episode_start, self._no_boost, self._carry, key)
        self._carry = out.carry
        return np.asarray(out.action)


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """What a run directory holds for evaluation: the game, the preprocessing, the policy."""

    run_dir: Path
    step: int
    game: str
    env: EnvConfig
    policy: NetworkPolicy
    demo_frames: int | None = None  # the length of the run's demo, if its checkpoint says


def load_run(run_dir: str | Path, checkpoint: str = "latest") -> LoadedRun:
    """Rebuilds the trained policy from a run directory alone (config and network shape are
    stored beside each checkpoint), so a run copied from another machine evaluates as is.

    ``checkpoint``: "latest", "best" or an update number. Raises ``EvalError`` (one line).
    """
    try:
        step, meta, config, params = load_params(Path(run_dir), checkpoint)
    except UsageError as err:
        raise EvalError(str(err)) from None
    policy = NetworkPolicy(config.network, params, int(meta["num_actions"]))
    frames = meta.get("num_frames")
    return LoadedRun(Path(run_dir), step, str(meta["game"]), config.env, policy,
                     int(frames) if frames is not None else None)
