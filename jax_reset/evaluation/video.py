"""Recording one evaluation episode as an MP4 at the emulator's full resolution.

The policy plays on an EnvPool env with the training preprocessing; a second EnvPool env with the
same seed and the same actions, at 210x160 RGB with no frame stack, replays the same game for the
picture (both follow the same deterministic emulator; their rewards are compared at every step
and a divergence is an error). One video frame per agent step (max of the skip's last two
frames, as the agent sees it), with the score and the frame counter drawn on it.
``max_agent_steps`` cuts the film (not the game's rules) after that many agent steps: a game that
lasts its 27,000-agent-step limit would otherwise take minutes to encode, inside a training run.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np

from jax_reset.envs.config import EnvConfig
from jax_reset.evaluation.envs import BatchPolicy, make_envpool, protocol_env_config
from jax_reset.evaluation.errors import EvalError

# Where training and `export` cut their films: 5 minutes at 15 fps, a whole game of Pong (1,800 to
# 2,700 agent steps) but not an agent that waits out Montezuma's 27,000-agent-step limit.
FILM_AGENT_STEPS = 4_500

# 3x: 480x658 with the band, big enough to read the overlay, a few MB per game.
SCALE = 3


def _annotate(frame_chw: np.ndarray, score: float, frames: int) -> np.ndarray:
    """[3, 210, 160] uint8 -> [658, 480, 3] uint8: a band with the score and the frame counter
    above the screen scaled 3x."""
    rgb = np.ascontiguousarray(frame_chw.transpose(1, 2, 0))
    big = cv2.resize(rgb, (rgb.shape[1] * SCALE, rgb.shape[0] * SCALE),
                     interpolation=cv2.INTER_NEAREST)
    band = np.zeros((28, big.shape[1], 3), np.uint8)
    text = f"score {score:g}   frame {frames}"
    cv2.putText(band, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([band, big], axis=0)


def record_episode(game: str, env: EnvConfig, policy: BatchPolicy, path: str | Path,
                   protocol: str = "plain", seed: int = 0, fps: int = 15,
                   max_agent_steps: int | None = None) -> tuple[float, int]:
    """Plays one full game (or its first ``max_agent_steps`` agent steps) and writes it to
    ``path`` (MP4). Returns (score of what was filmed, video frames = agent steps + 1)."""
    import imageio.v2 as imageio

    if protocol == "epsilon":
        raise EvalError("--video records the plain, noop or sticky protocol")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise EvalError(f"--video must name an .mp4 file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    play_cfg = protocol_env_config(env, protocol)
    show_cfg = dataclasses.replace(play_cfg, img_height=210, img_width=160, gray_scale=False,
                                   stack_num=1)
    play = make_envpool(game, play_cfg, 1, seed, num_threads=1)
    show = make_envpool(game, show_cfg, 1, seed, num_threads=1)
    policy.reset(1, seed)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    # imageio starts ffmpeg with fork+exec; JAX warns about any fork, but nothing of JAX runs
    # in the child before exec.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                            category=RuntimeWarning)
    written = 0
    score = 0.0
    try:
        obs, _ = play.reset()
        picture, _ = show.reset()
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7,
                                macro_block_size=1) as writer:
            writer.append_data(_annotate(picture[0], score, 0))
            written = 1
            episode_start = np.ones(1, dtype=bool)
            while True:
                action = np.asarray(policy.act(obs, episode_start), np.int32)
                obs, reward, term, trunc, _ = play.step(action)
                picture, reward_shown, _, _, _ = show.step(action)
                if reward[0] != reward_shown[0]:
                    raise EvalError("the display env diverged from the playing env")
                score += float(reward[0])
                writer.append_data(_annotate(picture[0], score, written * env.frame_skip))
                written += 1
                episode_start[:] = False
                if term[0] or trunc[0] or written - 1 == max_agent_steps:
                    break
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        play.close()
        show.close()
    return score, written
