"""``sizes.derive``: every size of a run, and the only divisibility check of train.num_envs."""

from __future__ import annotations

import pytest

from jax_reset.config import load
from jax_reset.parallel.sizes import SizeError, derive
from tests.conftest import SMOKE


def config(num_envs: int, minibatches: int = 1, rollout_steps: int = 16):
    return load(SMOKE, [f"train.num_envs={num_envs}", f"ppo.minibatches={minibatches}",
                        f"ppo.rollout_steps={rollout_steps}", "ppo.burn_in_steps=8",
                        "train.workers=1"])


def test_one_process_holds_every_environment() -> None:
    s = derive(config(8, minibatches=2), num_devices=2)
    assert (s.num_envs_global, s.num_envs_local, s.env_lo, s.env_hi) == (8, 8, 0, 8)
    assert s.agent_steps_per_update == 16 * 8
    assert (s.minibatch_envs, s.minibatch_envs_per_device) == (4, 2)


def test_processes_hold_contiguous_blocks() -> None:
    blocks = [derive(config(12, minibatches=3), num_processes=2, num_devices=2, process_index=p)
              for p in range(2)]
    assert [(s.env_lo, s.env_hi, s.num_envs_local) for s in blocks] == [(0, 6, 6), (6, 12, 6)]
    # The job's batch, not the process's, sets the steps per update and the minibatches.
    assert {s.agent_steps_per_update for s in blocks} == {16 * 12}
    assert {(s.minibatch_envs, s.minibatch_envs_per_device) for s in blocks} == {(4, 2)}


@pytest.mark.parametrize("num_envs,minibatches,processes,devices,message", [
    (3, 1, 2, 2, "train.num_envs=3 does not split over 2 processes"),
    (6, 4, 1, 1, r"train.num_envs=6 must be divisible by devices \(1\) x ppo.minibatches \(4\)"),
    (8, 2, 1, 8, r"devices \(8\) x ppo.minibatches \(2\) = 16"),
])
def test_indivisible_sizes_are_one_line_naming_the_key(num_envs: int, minibatches: int,
                                                       processes: int, devices: int,
                                                       message: str) -> None:
    with pytest.raises(SizeError, match=message) as err:
        derive(config(num_envs, minibatches), processes, devices)
    assert "\n" not in str(err.value)


def test_the_config_alone_no_longer_refuses_sizes() -> None:
    """Whether sizes divide depends on the job's devices: only ``derive`` knows them."""
    assert config(6, minibatches=4).train.num_envs == 6


def test_more_environment_groups_than_a_process_has_is_one_line_naming_the_key() -> None:
    cfg = load(SMOKE, ["train.num_envs=4", "train.env_groups=3", "train.workers=1"])
    assert derive(cfg).num_envs_local == 4
    with pytest.raises(SizeError, match=r"^train\.env_groups=3 exceeds the 2 environments"):
        derive(cfg, num_processes=2, num_devices=2, process_index=0)


def test_environments_split_over_acting_devices_and_groups_or_one_line_naming_the_key() -> None:
    cfg = load(SMOKE, ["train.num_envs=8", "train.env_groups=2", "train.workers=1"])
    assert derive(cfg, num_devices=2, acting_devices=2).acting_devices == 2  # 2 x 2 divides 8
    assert derive(cfg, acting_devices=4).num_envs_local == 8
    with pytest.raises(SizeError, match=r"^train\.num_envs=8 must give each process a multiple "
                                        r"of acting devices \(3, train\.placement\)"):
        derive(cfg, acting_devices=3)
    with pytest.raises(SizeError, match=r"x train\.env_groups \(2\) = 8 environments"):
        derive(cfg, num_processes=2, num_devices=2, process_index=1, acting_devices=4)


@pytest.mark.parametrize(("placement", "count"), [("1+2", 3), ("1 + 7", 8), ("auto", None),
                                                  ("shared", None), ("host", None)])
def test_placements_parse_and_say_how_many_host_devices_they_need(placement: str,
                                                                  count: int | None) -> None:
    from jax_reset.parallel.placement import ask_for_host_devices, host_device_count

    assert load(SMOKE, [f"train.placement={placement}"]).train.placement == placement
    assert host_device_count(placement) == count
    environ = {"XLA_FLAGS": "--xla_cpu_foo=1"}
    assert ask_for_host_devices(count, environ) == (count is not None)
    if count is not None:
        assert environ["XLA_FLAGS"] == (f"--xla_cpu_foo=1 "
                                        f"--xla_force_host_platform_device_count={count}")
        assert not ask_for_host_devices(2, environ)  # a count already set wins


@pytest.mark.parametrize("placement", ["0+2", "1+0", "gpu", "1+2+3"])
def test_a_bad_placement_is_one_line_naming_the_key(placement: str) -> None:
    from jax_reset.config_tree import ConfigError

    with pytest.raises(ConfigError, match=r"train: placement must be one of auto, shared, host"):
        load(SMOKE, [f"train.placement={placement}"])
