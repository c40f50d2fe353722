"""Settings of the Atari pool: preprocessing (EnvPool-compatible) and the demo-reset rules.

Units: `frames` are emulator frames; `agent steps` are frames // frame_skip (one action each).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from jax_reset.demos import roms

AutoReset = Literal["same_step", "next_step"]


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Preprocessing of one Atari environment; the defaults are the reference's.

    With `reward_clip=False`, `fire_reset=False`, `noop_max=1`, `repeat_action_probability=0`
    and `autoreset="next_step"`, a plain (demo-less) pool reproduces EnvPool's Atari env with
    the same settings frame for frame (see `docs/benchmarks.md` and `tests/test_envs_parity.py`),
    except in one documented case: when the game ends before the second-to-last frame of a skip,
    EnvPool returns the previous step's observation, this pool the last emulated frame.
    """

    frame_skip: int = 4
    """Emulator frames per agent step; the action is repeated, rewards are summed, and the skip
    stops early at the end of an episode."""
    max_pool: bool = True
    """Observation = pixel-wise max of the last two frames of a skip (only when all of its frames
    ran, as EnvPool); otherwise the last emulated frame."""
    img_height: int = 105
    img_width: int = 80
    gray_scale: bool = False
    """False: RGB, 3 channels per stacked frame. True: ALE palette grayscale, 1 channel."""
    inter_area_resize: bool = True
    """OpenCV INTER_AREA (EnvPool's default); False: INTER_LINEAR."""
    stack_num: int = 4
    """Observations are uint8 [stack_num * channels, img_height, img_width], oldest first."""
    reward_clip: bool = True
    """`PoolStep.reward` is the sum over the skip of sign(frame reward) (the reference clips per
    frame, EnvPool per agent step); `PoolStep.raw_reward` is always the unclipped sum."""
    episodic_life: bool = False
    """Plain mode only (EnvPool semantics): a life loss ends the episode, checked after the skip,
    and the next reset continues the same game. In demo mode a life loss always ends the
    episode, checked every frame."""
    noop_max: int = 1
    """Plain resets: `reset_game()` then U{1..noop_max} NOOP frames (EnvPool counts the same
    way: 1 means exactly one NOOP frame, 30 the usual "no-op starts")."""
    repeat_action_probability: float = 0.0
    """Sticky actions inside ALE (0.25 for the robustness evaluation). Keep 0 with demo resets:
    restores replay demo actions through the same emulator."""
    fire_reset: bool | None = None
    """Plain resets only: the last reset NOOP frame is replaced by one FIRE frame (EnvPool's
    `use_fire_reset`; ignored when the game has no FIRE). None: the reference's choice, from
    the game table (`jax_reset.demos.roms.game_info`: True for Pong among the 2018 demo games;
    for any other game ale-py ships, True where its minimal action set starts NOOP, FIRE)."""
    max_episode_steps: int = 27_000
    """Agent steps since the last `reset_game()` after which the episode is cut (EnvPool's
    truncation; 27,000 agent steps = 30 minutes of play)."""
    autoreset: AutoReset = "same_step"
    """What follows an episode end. "same_step": the env resets inside the step that ended the
    episode, so the returned obs is already the first of the next episode (`episode_start`),
    no agent step is spent on a reset and the terminal observation is not returned.
    "next_step": EnvPool's convention; the next step ignores its action, resets and returns
    reward 0."""

    def __post_init__(self) -> None:
        if self.frame_skip < 1 or self.stack_num < 1 or self.noop_max < 1:
            raise ValueError("frame_skip, stack_num and noop_max must be >= 1")
        if self.img_height < 1 or self.img_width < 1:
            raise ValueError("img_height and img_width must be >= 1")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise ValueError("repeat_action_probability must be in [0, 1]")
        if self.autoreset not in ("same_step", "next_step"):
            raise ValueError(f"autoreset must be same_step or next_step, not {self.autoreset!r}")

    @property
    def channels(self) -> int:
        return 1 if self.gray_scale else 3

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """Shape of one environment's observation: (stack_num * channels, height, width)."""
        return (self.stack_num * self.channels, self.img_height, self.img_width)

    def uses_fire_reset(self, game: str) -> bool:
        """`fire_reset`, else the game table's rule (`jax_reset.demos.roms.game_info`; False for a
        game ale-py does not ship)."""
        if self.fire_reset is not None:
            return self.fire_reset
        try:
            return roms.game_info(game).fire_reset
        except roms.RomError:
            return False

    def envpool_kwargs(self, game: str) -> dict:
        """Keyword arguments of ``envpool.make(f"{game}-v5", ...)`` for the same pipeline.

        The one place that maps these settings onto EnvPool's, used by evaluation, the
        benchmark and the parity test (so the test checks the evaluation's environment).
        EnvPool always max-pools and has no per-frame clipping: ``reward_clip`` maps to its
        per-step clipping, which differs from ours only where one skip has rewards of both signs.
        """
        return dict(
            img_height=self.img_height, img_width=self.img_width, gray_scale=self.gray_scale,
            stack_num=self.stack_num, frame_skip=self.frame_skip, noop_max=self.noop_max,
            repeat_action_probability=self.repeat_action_probability,
            use_inter_area_resize=self.inter_area_resize,
            use_fire_reset=self.uses_fire_reset(game), episodic_life=self.episodic_life,
            reward_clip=self.reward_clip, max_episode_steps=self.max_episode_steps,
        )


@dataclasses.dataclass(frozen=True)
class DemoResetConfig:
    """Episodes restarted from the states of one demo (or several of one game), with the
    reference's per-frame rules (`docs/algorithm.md`, "Starting an episode from the demo" and
    "Ending an episode")."""

    demo_path: str = ""
    """A `demos/<Game>.npz` file; every worker loads it itself."""
    demo_paths: tuple[str, ...] = ()
    """Several demos of one game in one run (they replace `demo_path` when given): the
    environments are divided among them in contiguous blocks, in this order (`paths`)."""
    game: str | None = None
    """The game this config is for ("Pong"): a demo file of another game is refused (the
    header says its game). None: whatever game the demo is of."""
    rom_path: str | None = None
    """The user's own ROM file, for a demo recorded on a ROM ale-py does not ship (Gravitar);
    checked by md5. None: ale-py's ROM."""
    dense_stride: int = 16
    """Frames between the in-memory states built once at start-up by replaying the demo, so a
    restore is one `restoreState` plus at most dense_stride + frame_skip * (stack_num - 1) + 1
    emulated frames (to fill the frame stack)."""
    allowed_lag_frames: int = 50
    """An episode ends (done) when its score is below the demo's score this many frames ago."""
    entropy_boost_frames: int = 100
    """`entropy_boost` on an agent step's observation while the index of the step's first frame
    is below the env's current starting_point + this many frames (the reference's per-frame
    flag, ORed over the skip)."""
    p_start_at_starting_point: float = 0.8
    """At each reset, the start frame is the env's starting point with this probability, else
    uniform in [starting_point, T)."""
    extra_frames_log_max: float = 7.0
    """After reaching the demo's final score, the episode is cut after int(exp(this * U))
    more frames, U ~ U[0, 1) (not from the game's start with `run_on_from_start`)."""
    start_noop_max: int = 30
    """An episode that starts at the game's start (frame 0) begins as a plain reset does:
    `reset_game()`, then U{1..start_noop_max} NOOP frames, the last one FIRE where the game
    uses a fire reset. Without it every such episode replays one deterministic opening, the
    policy learns that one, and a full game started one frame differently (the plain protocol's
    FIRE frame) is lost. 0: the game's reset itself, as the demo's frame 0."""
    run_on_from_start: bool = True
    """An episode that starts at the game's start is not cut after reaching the demo's final
    score: it plays on until the game ends (or lags the demo's score), so the rest of the game
    is practised too. False: the 2018 rule (cut after the extra frames) everywhere."""

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("missing key 'demo.demo_path' (or demo.demo_paths)")
        if any(not p for p in self.paths):
            raise ValueError("demo.demo_paths: an entry is empty")
        if self.dense_stride < 1:
            raise ValueError("dense_stride must be >= 1")
        if not 0.0 <= self.p_start_at_starting_point <= 1.0:
            raise ValueError("p_start_at_starting_point must be in [0, 1]")
        if self.start_noop_max < 0:
            raise ValueError("start_noop_max must be >= 0")

    @property
    def paths(self) -> tuple[str, ...]:
        """The run's demo files: `demo_paths` if given, else (`demo_path`,)."""
        return tuple(self.demo_paths) if self.demo_paths else (
            (self.demo_path,) if self.demo_path else ())


def rom_id(game: str) -> str:
    """ale-py's ROM id of an EnvPool-style game name: "MontezumaRevenge" -> "montezuma_revenge"."""
    return roms.ale_games().get(game) or roms.rom_id_of(game)
