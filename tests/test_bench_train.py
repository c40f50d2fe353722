"""``python -m jax_reset.bench train`` end to end on the smoke job: a real trainer per variant,
a real pool, real worker processes; its JSON line has what ``docs/benchmarks.md`` records."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jax_reset.bench", "train", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_bench_train_measures_every_variant_the_pool_the_learner_and_the_bound() -> None:
    run = bench("--config", "configs/smoke.toml", "--updates", "1", "--rounds", "1",
                "--pool-steps", "200", "--placements", "1+1", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["variants"]) == {"overlap off", "overlap on", "overlap + halves",
                                       "overlap + halves @ 1+1"}  # 2 fake CPU devices, its own
    assert all(rate > 0 for rate in result["variants"].values())
    assert result["pool_steps_per_s"] > 0 and result["learner_steps_per_s"] > 0
    cpu = result["cpu_s_per_agent_step"]
    assert set(cpu) == {"pool", "inference", "warmup", "learner"}
    assert cpu["pool"] > 0 and cpu["inference"] > 0 and cpu["learner"] > 0
    # The bound is the cores over the summed CPU-seconds per agent step.
    bound = result["cores"] / sum(cpu.values())
    assert abs(result["cpu_bound_steps_per_s"] - bound) <= 0.01 * bound
    best = max(result["variants"].values())
    assert abs(result["best_over_bound"] - best / result["cpu_bound_steps_per_s"]) < 2e-3
    stages = result["stages_s_per_update"]["overlap + halves"]
    assert stages["actor/inference_s"] > 0 and stages["timing/learner_s"] > 0
    assert "agent steps/s" in run.stdout  # the table


def test_bench_train_refuses_a_missing_config_in_one_line() -> None:
    run = bench("--config", "configs/no-such.toml")
    assert run.returncode == 2
    assert run.stdout.strip().splitlines() == ["error: configs/no-such.toml: no such config file"]
