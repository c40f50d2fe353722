"""A run's best game as a demo: play its policy from the game's start in the project's pool.

The pool (not EnvPool) is used because a demo needs the game's emulator: every per-frame action
is known from its outputs (``reset_frames`` NOOP/FIRE frames at each reset, then each agent
action for ``step_frames`` frames). Plain protocol: no demo, no sticky actions, one NOOP (or
the game's FIRE) frame after ``reset_game()``, the test-time policy of ``evaluation.play``. The
highest-scoring of K episodes is replayed from ``reset_game()`` by ``from_actions.write_demo``
(so it verifies like any imported log), and its replayed score must equal the pool's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ale_py
import numpy as np

from jax_reset.demos import roms
from jax_reset.demos.format import DemoError
from jax_reset.demos.from_actions import Replay, write_demo
from jax_reset.envs import AtariPool
from jax_reset.evaluation.envs import protocol_env_config
from jax_reset.evaluation.errors import EvalError
from jax_reset.evaluation.play import LoadedRun, load_run


@dataclasses.dataclass(frozen=True)
class Episode:
    """One finished game: its unclipped score and its per-frame minimal-set actions."""

    score: float
    actions: np.ndarray  # uint8 [T]


def reset_actions(reset_frames: int, fire_index: int | None) -> list[int]:
    """The frames a plain reset ran, as minimal-set indices: NOOPs (index 0 of every minimal
    set), the last one replaced by FIRE where the game's FIRE rule applies."""
    actions = [0] * int(reset_frames)
    if fire_index is not None and actions:
        actions[-1] = fire_index
    return actions


def play_episodes(run_dir: str | os.PathLike, checkpoint: str, episodes: int, seed: int, *,
                  max_agent_steps: int | None = None, num_envs: int = 8,
                  workers: int = 2) -> tuple[LoadedRun, list[Episode]]:
    """Plays ``episodes`` full games of the run's policy in the pool; returns (the loaded run,
    the episodes in the order they ended). ``max_agent_steps`` caps an episode (default: the
    run's ``env.max_episode_steps``)."""
    if episodes < 1:
        raise DemoError(f"--episodes must be at least 1, got {episodes}")
    try:
        run = load_run(run_dir, checkpoint)
    except EvalError as err:
        raise DemoError(str(err)) from None
    env = protocol_env_config(run.env, "plain")
    env = dataclasses.replace(env, autoreset="same_step", max_episode_steps=(
        env.max_episode_steps if max_agent_steps is None else int(max_agent_steps)))
    num_envs = min(num_envs, episodes)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    done_count = np.zeros(num_envs, dtype=np.int64)
    finished: list[Episode] = []
    with AtariPool(run.game, num_envs, min(workers, num_envs), config=env, seed=seed) as pool:
        minimal = list(roms.make_ale(pool.rom_path).getMinimalActionSet())
        fire = (minimal.index(ale_py.Action.FIRE) if env.uses_fire_reset(run.game)
                and ale_py.Action.FIRE in minimal else None)
        run.policy.reset(num_envs, seed)
        out = pool.reset()
        current = [reset_actions(out.reset_frames[i], fire) for i in range(num_envs)]
        while np.any(done_count < quota):
            actions = np.asarray(run.policy.act(out.obs, out.episode_start), np.int32)
            out = pool.step(actions)
            for i in range(num_envs):
                current[i].extend([int(actions[i])] * int(out.step_frames[i]))
                if not out.ended[i]:
                    continue
                if done_count[i] < quota[i]:
                    finished.append(Episode(float(out.ep_score[i]),
                                            np.asarray(current[i], dtype=np.uint8)))
                    done_count[i] += 1
                current[i] = reset_actions(out.reset_frames[i], fire)
    return run, finished


def from_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best",
             episodes: int = 8, seed: int = 0, max_agent_steps: int | None = None,
             ) -> tuple[Path, Replay, list[float]]:
    """``python -m jax_reset.demo from-run``: the best of ``episodes`` games as a demo with its
    provenance (run dir, checkpoint step, seed, every episode's score) in the header.
    Returns (path, its replay, the scores of all episodes)."""
    run, played = play_episodes(run_dir, checkpoint, episodes, seed,
                                max_agent_steps=max_agent_steps)
    best = max(played, key=lambda e: e.score)  # the first of equal scores
    provenance = {"source": "from-run", "run_dir": str(Path(run_dir).resolve()),
                  "checkpoint_step": int(run.step), "seed": int(seed),
                  "episode_scores": [e.score for e in played]}
    path, result = write_demo(run.game, best.actions, out, provenance)
    if float(result.rewards.sum()) != best.score or len(result.rewards) != len(best.actions):
        path.unlink(missing_ok=True)
        raise DemoError(f"the replay from reset_game() scores {result.rewards.sum():g} in "
                        f"{len(result.rewards)} frames, but the pool's game scored "
                        f"{best.score:g} in {len(best.actions)}: nothing written")
    return path, result, [e.score for e in played]
