"""`python -m jax_reset.bench curriculum`: the curriculum rules on a synthetic agent.

No emulator and no learner: each environment plays episodes whose outcome and length are drawn
from a model of where the demo is hard, and the real controller (``jax_reset.curriculum``)
decides from their records every rollout, exactly as the trainer calls it. It measures the
rule, not learning.

The agent. An episode starting at frame s must pass every hard point h >= s in ascending
order; it passes h with probability ``p_hard`` (0.1) until ``practice`` episodes have reached
h, then with ``p_easy`` (0.9); having passed them all it succeeds with ``p_easy`` (it may still
concede the game away). Lengths in frames: a failure at h lasts h - s + 50 (the lag rule), a
success h_last - s + exp(7 U) (the extra-frames countdown), a late failure h_last - s plus
50..1,100; agent steps are frames / 4. Starts follow the pool's rule: the environment's
starting point with probability 0.8, else uniform in [sp, T).

Scenarios:
  pong      Pong's demo (22,869 frames): starts after frame 14,004 already hold the final score,
            so they succeed almost always; the points the demo wins at 14,004, 12,889, 11,778,
            9,457 and 2,070 are hard until practised.
  uniform   no hard point: every start succeeds with 0.9 (how fast the rule itself can move).

Reported per scenario, rule and number of environments: frames the maximum starting point moved
back, that per 1,000 agent steps (all environments' steps), decisions, episodes per decision,
the largest single move later (after a failure), and the agent steps until the maximum first
passed below the scenario's target (pong: its first hard point, 14,004; uniform: frame 1).
``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np

from jax_reset import curriculum as cur

FRAME_SKIP = 4
ROLLOUT_STEPS = 128  # vector steps per controller call, as the trainer's rollout


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A demo of ``num_frames`` frames and the hard points the agent must practise."""

    name: str
    num_frames: int
    hard_points: tuple[int, ...]
    p_easy: float = 0.9
    p_hard: float = 0.1
    practice: int = 500  # episodes that reach a hard point before it becomes easy
    target: int = 0  # report the agent steps until the maximum starting point is below this


SCENARIOS = {
    "pong": Scenario("pong", 22_869, (2_070, 9_457, 11_778, 12_889, 14_004), target=14_004),
    "uniform": Scenario("uniform", 22_869, (), target=1),
}


class SyntheticAgent:
    """Draws episodes for a set of environments; counts practice per hard point."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator):
        self.s = scenario
        self.rng = rng
        # A scenario without hard points gets one at frame -1, which no episode needs.
        self.hard = np.asarray(sorted(scenario.hard_points) or [-1], dtype=np.int64)
        self.reached = np.zeros(len(self.hard), dtype=np.int64)

    def draw(self, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Episodes for environments at starting points sp [M]: (start, good, steps, reached).

        reached: bool [M, H], the hard points each episode got to (counted when it ends).
        """
        s, rng, t = self.s, self.rng, self.s.num_frames
        m = len(sp)
        uniform = rng.random(m) >= 0.8
        start = sp.copy()
        start[uniform] = rng.integers(sp[uniform], t)
        need = self.hard[None, :] >= start[:, None]  # [M, H]
        p = np.where(self.reached >= s.practice, s.p_easy, s.p_hard)
        fails = need & (rng.random((m, len(self.hard))) >= p[None, :])
        any_fail = fails.any(axis=1)
        first_fail = np.where(any_fail, np.argmax(fails, axis=1), len(self.hard))
        # Reached: needed hard points up to and including the first failure.
        reached = need & (np.arange(len(self.hard))[None, :] <= first_fail[:, None])
        last_needed = np.where(need.any(axis=1), np.where(need, self.hard[None, :], 0).max(1),
                               start)
        late_ok = rng.random(m) < s.p_easy
        good = ~any_fail & late_ok
        frames = np.where(
            any_fail, self.hard[np.minimum(first_fail, len(self.hard) - 1)] - start + 50,
            np.where(good, last_needed - start + np.exp(7 * rng.random(m)).astype(np.int64),
                     last_needed - start + rng.integers(50, 1_100, m)))
        steps = np.maximum(np.ceil(frames / FRAME_SKIP).astype(np.int64), 1)
        return start, good, steps, reached


def simulate(scenario: Scenario, num_envs: int, vector_steps: int, config: cur.CurriculumConfig,
             seed: int = 0) -> dict[str, Any]:
    """Runs ``vector_steps`` steps of ``num_envs`` environments under ``config``'s rule."""
    rng = np.random.default_rng(seed)
    agent = SyntheticAgent(scenario, rng)
    state = cur.init(num_envs, scenario.num_frames, config)
    start_max = state.max_starting_point
    start, good, steps, reached = agent.draw(state.starting_points)
    end = steps.copy()  # the vector step at which each environment's episode ends
    decisions = moves_later = 0
    worst_later = 0
    used: list[int] = []
    passed_at = None
    lowest = start_max
    t = 0
    while t < vector_steps:
        t_end = t + ROLLOUT_STEPS
        rec_start, rec_good = [], []
        while True:
            done = np.flatnonzero(end <= t_end)
            if not done.size:
                break
            rec_start.append(start[done])
            rec_good.append(good[done])
            agent.reached += reached[done].sum(axis=0)
            s2, g2, n2, r2 = agent.draw(state.starting_points[done])
            start[done], good[done], reached[done] = s2, g2, r2
            end[done] += n2
        records = cur.EpisodeRecords.make(np.concatenate(rec_start or [np.zeros(0, np.int64)]),
                                          np.concatenate(rec_good or [np.zeros(0, bool)]))
        state, d = cur.update(state, records, ROLLOUT_STEPS, config)
        t = t_end
        if d.decided:
            decisions += 1
            used.append(d.episodes)
            if d.new_max > d.old_max:
                moves_later += 1
                worst_later = max(worst_later, d.new_max - d.old_max)
        lowest = min(lowest, state.max_starting_point)
        if passed_at is None and state.max_starting_point < scenario.target:
            passed_at = t * num_envs
    agent_steps = t * num_envs
    moved = start_max - state.max_starting_point
    return {
        "scenario": scenario.name, "rule": config.rule, "num_envs": num_envs,
        "decision_interval": config.decision_interval,
        "agent_steps": agent_steps, "final_max": state.max_starting_point,
        "lowest_max": lowest, "frames_moved": moved,
        "frames_per_1000_agent_steps": 1000.0 * moved / agent_steps,
        "decisions": decisions,
        "episodes_per_decision": float(np.mean(used)) if used else 0.0,
        "moves_later": moves_later, "largest_move_later": worst_later,
        "agent_steps_to_target": passed_at, "final_spread": state.spread,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jax_reset.bench curriculum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    p.add_argument("--rule", choices=[*cur.RULES, "all"], default="all")
    p.add_argument("--envs", type=int, nargs="+", default=[8, 2048])
    p.add_argument("--vector-steps", type=int,
                   help="steps per environment of each case (default: 40,000 up to 64 "
                        "environments, 10,000 beyond, to stay within minutes on a CPU)")
    p.add_argument("--min-episodes", type=int, default=cur.CurriculumConfig.min_episodes)
    p.add_argument("--spread-factor", type=float, default=cur.CurriculumConfig.spread_factor)
    p.add_argument("--decision-interval", type=int,
                   help="rule reference: agent steps per environment between decisions "
                        "(default: the CPU configs' 256 up to 64 environments, the "
                        "reference's 1024 beyond)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    return p.parse_args(argv)


def vector_steps_for(num_envs: int, vector_steps: int | None) -> int:
    """The case's steps per environment, whole rollouts."""
    if vector_steps is None:
        vector_steps = 40_000 if num_envs <= 64 else 10_000
    return max(ROLLOUT_STEPS, vector_steps // ROLLOUT_STEPS * ROLLOUT_STEPS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if any(n < 1 for n in args.envs) or (args.vector_steps or 1) < 1:
        print("error: --envs and --vector-steps must be positive")
        return 2
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rules = list(cur.RULES) if args.rule == "all" else [args.rule]
    rows = []
    t0 = time.perf_counter()
    for name in scenarios:
        for num_envs in args.envs:
            for rule in rules:
                interval = args.decision_interval or (256 if num_envs <= 64 else 1024)
                config = cur.CurriculumConfig(rule=rule, decision_interval=interval,
                                              min_episodes=args.min_episodes,
                                              spread_factor=args.spread_factor)
                rows.append(simulate(SCENARIOS[name], num_envs,
                                     vector_steps_for(num_envs, args.vector_steps), config,
                                     seed=args.seed))
    header = (f"{'scenario':<8} {'rule':<9} {'envs':>5} {'agent steps':>12} {'moved':>6} "
              f"{'/1k steps':>9} {'decisions':>9} {'eps/dec':>8} {'later max':>9} "
              f"{'to target':>13} {'final max':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        passed = r["agent_steps_to_target"]
        print(f"{r['scenario']:<8} {r['rule']:<9} {r['num_envs']:>5} {r['agent_steps']:>12,} "
              f"{r['frames_moved']:>6,} {r['frames_per_1000_agent_steps']:>9.3f} "
              f"{r['decisions']:>9} {r['episodes_per_decision']:>8.1f} "
              f"{r['largest_move_later']:>9,} {'-' if passed is None else f'{passed:,}':>13} "
              f"{r['final_max']:>9,}")
    print(f"({time.perf_counter() - t0:.1f} s; min_episodes {args.min_episodes}, "
          f"spread_factor {args.spread_factor}, seed {args.seed})")
    if args.json:
        print(json.dumps({"min_episodes": args.min_episodes, "spread_factor": args.spread_factor,
                          "seed": args.seed, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
