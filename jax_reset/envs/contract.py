"""The pool's contract in one table: every per-environment array the parent and the workers share.

`PoolStep` is the declaration: each of its array fields is annotated with its dtype (and, for
`obs`, the observation's shape), and the shared-memory layout, the worker's views and the copy
`AtariPool.recv` returns are all generated from it. Adding an output field is one line here.
The parent -> worker arrays (`INPUT_FIELDS`) are declared beside it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated

import numpy as np


@dataclasses.dataclass(frozen=True)
class PerEnv:
    """An array with one row per environment: dtype, and per-env shape () or the obs shape."""

    dtype: str
    obs_shaped: bool = False

    def shape(self, num_envs: int, obs_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (num_envs, *obs_shape) if self.obs_shaped else (num_envs,)


Obs = Annotated[np.ndarray, PerEnv("uint8", obs_shaped=True)]
Bool = Annotated[np.ndarray, PerEnv("bool")]
U8 = Annotated[np.ndarray, PerEnv("uint8")]
I32 = Annotated[np.ndarray, PerEnv("int32")]
I64 = Annotated[np.ndarray, PerEnv("int64")]
F32 = Annotated[np.ndarray, PerEnv("float32")]
F64 = Annotated[np.ndarray, PerEnv("float64")]


@dataclasses.dataclass(frozen=True)
class PoolStep:
    """The result of one agent step (or reset) of the environments `env_ids`; arrays are [B],
    copies owned by the caller, row b belongs to env `env_ids[b]`.

    After an episode end (`done | cut`), with autoreset "same_step" (the default) `obs`,
    `frame`, `score`, `lives` and `entropy_boost` already describe the first state of the next
    episode (`episode_start` is True) and the `ep_*` fields describe the episode that ended;
    with "next_step" they describe the terminal state and the following step resets.
    """

    env_ids: np.ndarray  # int32 [B] (not a shared array: the ids the caller asked for)
    obs: Obs  # [B, stack * C, H, W], oldest frame first
    reward: F32  # [B]: per-frame sign-clipped sum over the skip (if reward_clip)
    raw_reward: F32  # [B]: unclipped sum over the skip
    done: Bool  # [B]: terminal end (game over, life loss, lag behind the demo): EndReason.is_done
    cut: Bool  # [B]: non-terminal end (extra frames after the demo score, time limit): is_cut
    game_over: Bool  # [B]: the game itself ended
    end_reason: U8  # [B]: EndReason, 0 when the episode goes on
    episode_start: Bool  # [B]: obs is the first of an episode
    # [B], demo mode: the policy's logits are halved on obs. Set when the first emulator frame
    # of the step that produced obs is below starting_point + entropy_boost_frames, with the
    # env's current starting point; at an episode's first obs, when its start frame is.
    entropy_boost: Bool
    frame: I64  # [B]: absolute frame index of obs (frames since the game's reset)
    # [B]: emulator frames the agent's action ran in this step: frame_skip, fewer when the
    # episode ended inside the skip, 0 in a step that only reset (reset(), restore(), the
    # "next_step" autoreset). The exact count of frames of experience; restores not included.
    step_frames: I32
    # [B]: emulator frames a reset in this step ran on top (demo restore replays, noop and
    # FIRE frames; not the frames ALE's reset_game() runs internally). Not experience.
    reset_frames: I32
    lives: I32  # [B]
    score: F64  # [B]: running unclipped score of the current episode
    ep_start_frame: I64  # [B]: valid where done | cut
    ep_end_frame: I64  # [B]: the frame index reached
    ep_score: F64  # [B]
    ep_as_good_as_demo: Bool  # [B]: ep_score >= the demo's final score
    ep_starting_point: I64  # [B]: the env's curriculum starting point at the episode's start

    @property
    def ended(self) -> np.ndarray:
        """bool [B]: an episode ended in this step (its record is in the ep_* fields)."""
        return self.done | self.cut


def _per_env_fields(cls: type) -> dict[str, PerEnv]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for field in dataclasses.fields(cls):
        meta = [m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, PerEnv)]
        if meta:
            out[field.name] = meta[0]
    return out


OUTPUT_FIELDS: dict[str, PerEnv] = _per_env_fields(PoolStep)
"""worker -> parent: PoolStep's array fields, in declaration order."""

INPUT_FIELDS: dict[str, PerEnv] = {
    "action": PerEnv("int32"),  # index into the game's minimal action set; -1: the demo's
    "starting_point": PerEnv("int64"),  # the env's curriculum starting point sp, frames
    "next_start": PerEnv("int64"),  # one-shot start frame of the next reset; -1: draw from sp
}
"""parent -> worker."""

