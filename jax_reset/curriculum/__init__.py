"""The backward curriculum over demo starting points: a host-side, pure controller.

Two rules, chosen by ``CurriculumConfig.rule``; both are pure functions of a frozen
``CurriculumState`` and the gathered ``EpisodeRecords``: with several hosts, each gathers every
host's records and reaches the same decision (nothing depends on the records' order).

``rule = "reference"`` is the 2018 code's (``docs/algorithm.md``, "The curriculum controller"):
environments start spread over the demo's last ``spread`` frames, one frame apart; a table
``success[s]`` holds, for each frame s that episodes started from, the share of the latest batch
of those episodes that tied or beat the demo; every ``decision_interval`` agent steps (throttled
to at most ``max_frames_per_step`` frames moved per agent step) the maximum starting point moves
to the first frame i with ``cumsum(success)[i] / spread_frames >= success_threshold``, or, if
there is none, ``fallback_frames`` later; every environment's starting point shifts by the same
amount, never below 0, and an environment at 0 never moves again (the reference's
``decrement_starting_point`` skips it: the curriculum freezes at the game's start).

``rule = "episodes"`` asks the same question ("do at least 20% of the rollouts tie or beat the
demo on the rest of the game?") over the environments instead of over the frames of the spread,
so that its answer does not depend on how many environments there are:

* Slots. The environments' distinct starting points p_0 < ... < p_{K-1} are K slots; slot j
  holds the episodes that started in [p_j, p_{j+1}) (the last slot: at p_{K-1}). Only episodes
  that finished since the last decision and started inside [p_0, p_{K-1}] count: the 20% that
  start uniformly later in the demo say nothing about the current task (a throwaway per-episode
  rule without this filter jumped 5,500 frames later on them).
* Shares. Each slot weighs 1 / (K - 1), shared equally by its episodes; an episode's weight is
  1 / (n_j (K - 1)) for the n_j episodes of its slot. The new maximum is the start of the first
  frame at which the cumulative weight of successful episodes, in ascending start order,
  reaches ``success_threshold``. With 8 environments spread over 320 frames (slots ~46 frames
  apart) and every episode succeeding, that is the second-lowest slot: one decision moves
  6/7 of the spread, where the reference moves 6 frames (8 successes / 7 frames of spread).
* Equality with the reference, by construction. When the spread is dense (every frame of
  [p_0, p_{K-1}] is some environment's starting point) slots are frames, n_j is the count of
  episodes at that frame, an episode's weight sums per frame to the reference's
  ``wins / counts`` and K - 1 is ``spread_frames``: the cumulative sums are the same floating
  point numbers (the reference's table adds exact zeros between them), so from the same
  records at the same decision point, with a table that holds nothing earlier than p_0, both
  choose the same new maximum whenever the reference's lies inside the window. Where the
  reference's lies later (its table's stale entries and the uniform later starts), this rule
  falls back instead, see the next point. The equality holds until the spread is clipped at
  frame 0: the reference keeps dividing by the launch spread, this rule by the slots left.
* A failed decision (no frame reaches the threshold) moves the maximum ``fallback_frames``
  later (never past the demo's end); nothing else can move it later, so a failure never throws
  away more than that.
* Cadence, on statistics: a decision is taken once at least ``min_episodes`` episodes inside the
  window have finished since the last one and at least ``min_decision_steps`` agent steps per
  environment have passed (and within the same throttle as the reference). A handful of lucky
  episodes cannot move it; a fast-finishing batch need not wait for a fixed step count.
* Spread. At launch the environments are spread evenly over ``spread`` frames (8 environments
  over 320 frames: ~46 frames apart) and the layout is kept at every decision, shifted as a
  whole. The spread adapts within [spread / spread_factor, spread * spread_factor]: it doubles
  after a broad success (the decision moved the maximum by at least half the spread: the agent
  succeeds over most of it, so cover more ground per decision) and halves after a failed
  decision (the agent struggles near the maximum: put the environments close to it, where the
  practice is needed, with short episodes). ``spread_factor = 1`` keeps it fixed.
* Frame 0. Once every environment starts at 0 (the maximum is 0) the curriculum is finished and
  never moves again, as in the reference: the agent now trains on the task itself, the whole
  game, and moving later would trade that for an easier one. Before that, a failure moves the
  whole layout later, including environments that had been clipped at 0, so the spread keeps
  its shape (the reference's environments at 0 stay there while the others move later).

Each reset's start (80% at the environment's starting point, 20% uniform later) and the extra
frames budget are drawn by the pool's workers, where the resets happen
(``jax_reset.envs.DemoResetConfig``); the controller only sets the starting points.
``python -m jax_reset.bench curriculum`` measures both rules on a synthetic agent.

Several demos of one game in one run (``demo.demo_paths``): ``multi`` divides the environments
among them in contiguous blocks and keeps one state per demo (``Curricula``), each decided on
its own demo's episodes (``EpisodeRecords.demo``); one demo is the degenerate case, with
today's checkpoint item and metric keys.

Deliberate differences from the reference in ``rule = "reference"``, each kept small:
* The throttle counts frames moved since this run's origin (its starting point at launch or
  ``start_at``), not since the demo's end: the reference, started at a given point, refused to
  move for (T - start) / 2 steps.
* A jump found by the 20% rule never goes past the demo's end (the reference's table could, in
  principle, place it on a later uniform start).
"""

from jax_reset.curriculum.controller import (
    DECISIONS,
    MAX_STARTING_POINT,
    MIN_STARTING_POINT,
    PENDING_EPISODES,
    PROGRESS,
    SHARE_AT_MAX,
    SPREAD_FRAMES,
    SUCCESS_TABLE_AT_SP,
    summary,
    update,
)
from jax_reset.curriculum.episodes import episodes_rule_max, update_episodes
from jax_reset.curriculum.multi import (
    Curricula,
    as_curricula,
    demo_bounds,
    demo_key,
    env_demos,
    equal,
    init_curricula,
    summary_all,
    update_curricula,
)
from jax_reset.curriculum.multi import from_json as curricula_from_json
from jax_reset.curriculum.multi import to_json as curricula_to_json
from jax_reset.curriculum.reference import next_max_starting_point, success_table
from jax_reset.curriculum.state import (
    RULES,
    STATE_VERSION,
    CurriculumConfig,
    CurriculumState,
    Decision,
    EpisodeRecords,
    even_starting_points,
    from_json,
    init,
    initial_starting_points,
    set_max_starting_point,
    shift,
    to_json,
)

__all__ = [
    "DECISIONS", "MAX_STARTING_POINT", "MIN_STARTING_POINT", "PENDING_EPISODES", "PROGRESS",
    "RULES", "SHARE_AT_MAX", "SPREAD_FRAMES", "STATE_VERSION", "SUCCESS_TABLE_AT_SP",
    "Curricula", "CurriculumConfig", "CurriculumState", "Decision", "EpisodeRecords",
    "as_curricula", "curricula_from_json", "curricula_to_json", "demo_bounds", "demo_key",
    "env_demos", "episodes_rule_max", "equal", "even_starting_points", "from_json", "init",
    "init_curricula", "initial_starting_points", "next_max_starting_point",
    "set_max_starting_point", "shift", "success_table", "summary", "summary_all", "to_json",
    "update", "update_curricula", "update_episodes",
]
