"""The config schema: game files, overrides, one-line errors, the saved resolved config."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jax_reset import config as cfg
from jax_reset import config_tree
from jax_reset.demos.roms import GAMES as GAME_TABLE
from jax_reset.envs.config import EnvConfig
from jax_reset.ppo.config import PPOConfig
from tests.conftest import REPO, SMOKE

PRESET_PARTS = ("base", "cpu")  # linked by the game files, not jobs by themselves
# Variants of a game's job: a game file as base, with the keys the variant is about.
VARIANTS = ("pong_nodemo", "montezuma_first_rooms_nodemo")
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.toml")
                 if p.stem not in (*PRESET_PARTS, *VARIANTS))
GAMES = ("Pong", "MontezumaRevenge", "PrivateEye", "Pitfall", "Gravitar")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


MINIMAL = '[demo]\ndemo_path = "demos/Pong.npz"\n'


def test_every_game_has_a_config_with_the_reference_values() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"pong", "montezuma_revenge", "private_eye", "pitfall", "gravitar", "smoke"} <= names
    for game in GAMES:
        path = next(p for p in CONFIGS if cfg.load(p).demo.demo_path == f"demos/{game}.npz")
        c = cfg.load(path)
        assert (c.ppo.gamma, c.ppo.gae_lambda, c.ppo.clip) == (0.999, 0.95, 0.1)
        assert (c.ppo.learning_rate, c.ppo.ent_coef, c.ppo.l2_coef, c.ppo.adam_eps) == (
            1e-4, 1e-4, 1e-7, 1e-6)
        assert (c.ppo.epochs, c.ppo.rollout_steps, c.ppo.burn_in_steps) == (4, 128, 64)
        assert c.env.obs_shape == (12, 105, 80) and c.env.frame_skip == 4
        assert c.network.conv_channels == (64, 128, 128) and c.network.core_size == 800
        assert c.curriculum.spread == 320 and c.curriculum.success_threshold == 0.2
        small = cfg.load(path, on_cpu=True)
        assert small.train.num_envs < c.train.num_envs
        assert small.network.conv_channels != c.network.conv_channels
        # The CPU variant shrinks sizes and sets the PPO values measured for 8 environments.
        assert dataclasses.replace(small.ppo, gae_lambda=c.ppo.gae_lambda,
                                   learning_rate=c.ppo.learning_rate, target_kl=c.ppo.target_kl,
                                   max_grad_norm=c.ppo.max_grad_norm) == c.ppo
        assert (small.ppo.gae_lambda, small.ppo.learning_rate) == (1.0, 3e-4)
        assert (small.ppo.target_kl, small.ppo.max_grad_norm) == (0.02, 2.0)
        assert (c.ppo.target_kl, c.ppo.max_grad_norm) == (None, None)  # the reference's


# What configs/pong.toml resolved to at full size before the presets were split into base, game
# and CPU overlay (captured from main at ce8e70c; network.obs_layout has been removed since).
PONG_FULL: dict[str, Any] = {
    # (the curriculum's rule keys came later, with the "episodes" rule, the presets' default)
    "curriculum": {"decision_interval": 1024, "fallback_frames": 100, "max_frames_per_step": 2.0,
                   "min_decision_steps": 128, "min_episodes": 16, "rule": "episodes",
                   "spread": 320, "spread_factor": 2.0, "start_at": None,
                   "success_threshold": 0.2},
    "demo": {"allowed_lag_frames": 50, "demo_path": "demos/Pong.npz", "demo_paths": [],
             "dense_stride": 16, "entropy_boost_frames": 100, "extra_frames_log_max": 7.0,
             "p_start_at_starting_point": 0.8, "rom_path": None,
             "game": "Pong",  # (pinned later: the trainer checks it against the demo)
             # (later: episodes from the game's start begin with no-ops and play on)
             "start_noop_max": 30, "run_on_from_start": True},
    "env": {"autoreset": "same_step", "episodic_life": False, "fire_reset": None, "frame_skip": 4,
            "gray_scale": False, "img_height": 105, "img_width": 80, "inter_area_resize": True,
            "max_episode_steps": 27000, "max_pool": True, "noop_max": 1,
            "repeat_action_probability": 0.0, "reward_clip": True, "stack_num": 4},
    "network": {"compute_dtype": "float32", "conv_channels": [64, 128, 128],
                "conv_kernels": [8, 4, 3], "conv_strides": [4, 2, 1], "core": "lstm",
                "core_size": 800, "dense_size": 800,
                "input_norm": "demo_mean"},  # (came later, with the learning fix at Pong 13,860)
    "ppo": {"adam_eps": 1e-06, "burn_in_steps": 64, "clip": 0.1, "ent_coef": 0.0001, "epochs": 4,
            "gae_lambda": 0.95, "gamma": 0.999, "l2_coef": 1e-07, "learning_rate": 0.0001,
            "max_grad_norm": None, "minibatches": 1, "rollout_steps": 128, "vf_coef": 0.5,
            "cut_mode": "end",  # (came later, with the learning fix)
            "target_kl": None,  # (came later, with the collapse at Pong's first point)
            "imitation_coef": 0.0, "imitation_windows": 0,  # (came later; off: the 2018 method)
            "imitation_span": "spread"},
    # (the [stall] section came later; off, as here, it keeps the reference's constant values)
    "stall": {"enabled": False, "factor": 0.5, "min_scale": 0.125, "on_move": "restore",
              "patience_decisions": 20},
    "train": {"checkpoint_every": 100, "env_groups": 1, "keep_last": 3, "log_every": 1,
              "num_envs": 128, "overlap": True, "progress": True, "seed": 0,
              "total_updates": 100000, "warmup_steps": 128, "workers": 16,
              "placement": "auto"},  # (came later, with the device placement)
    # (came later: games from the game's start during training, issue 29)
    "eval": {"every": 100, "episodes": 8, "protocol": "plain", "envs": 8, "seed": 12345,
             "stop_score": float("inf"), "stop_needs_start": True,
             "video_every": 5},
    # (came later: Weights & Biases, off, issue 31)
    "wandb": {"entity": "", "mode": "online", "name": "", "project": ""},
}
# What a game file adds to base.toml besides its demo (came later: Pong's job ends, issue 29).
GAME_CHANGES = {"pong": {"train.total_updates": 20000, "eval.stop_score": 18.0}}
# What the old [on_cpu] table of every game file changed (same capture).
CPU_CHANGES = {
    "env.img_height": 64, "env.img_width": 48, "env.gray_scale": True,
    "network.conv_channels": [16, 32, 32], "network.dense_size": 256, "network.core_size": 128,
    "train.num_envs": 8, "train.workers": 2, "train.checkpoint_every": 20,
    "train.warmup_steps": 32, "curriculum.decision_interval": 256,
    # (came later: measured for 8 environments at Pong's first hard point, docs/results.md)
    "ppo.gae_lambda": 1.0, "ppo.learning_rate": 3e-4,
    # (came later: after the policy collapse at Pong's first point, docs/results.md)
    "ppo.target_kl": 0.02, "ppo.max_grad_norm": 2.0,
}


def changed(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted keys set (independent of the loader under test)."""
    out = copy.deepcopy(data)
    for key, value in changes.items():
        section, name = key.split(".")
        out[section][name] = value
    return out


@pytest.mark.parametrize("stem,game", [
    ("pong", "Pong"), ("montezuma_revenge", "MontezumaRevenge"), ("pitfall", "Pitfall"),
    ("private_eye", "PrivateEye"), ("gravitar", "Gravitar"),
])
@pytest.mark.parametrize("on_cpu", [False, True])
def test_presets_resolve_to_the_values_of_the_single_file_configs(stem: str, game: str,
                                                                  on_cpu: bool) -> None:
    expected = changed(PONG_FULL, {"demo.demo_path": f"demos/{game}.npz", "demo.game": game}
                       | (CPU_CHANGES if on_cpu else {}) | GAME_CHANGES.get(stem, {}))
    got = config_tree.to_dict(cfg.load(REPO / "configs" / f"{stem}.toml", on_cpu=on_cpu))
    # As saved in config.json: the same text, so also the same types (64, not 64.0).
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_game_files_hold_only_what_differs_from_base() -> None:
    for path in CONFIGS:
        if path.stem == "smoke":
            continue
        raw = config_tree._parse(path, cfg.RETIRED_KEYS)
        assert raw["base"] == "base.toml", path
        assert set(raw) <= {"base", "demo", "train", "eval"}, path
        assert set(raw["demo"]) <= {"demo_path", "game"}, path
        # The trainer prints its CPU note when the resolved file has an overlay.
        assert config_tree.CPU_TABLE in cfg.read_file(path)
    assert config_tree.CPU_TABLE not in cfg.read_file(SMOKE)


def test_minibatches_default_is_the_references_full_batch(tmp_path: Path) -> None:
    assert PPOConfig().minibatches == 1
    assert cfg.load(write(tmp_path, MINIMAL)).ppo.minibatches == 1


def test_fire_reset_comes_from_the_game_table() -> None:
    assert [g for g, info in GAME_TABLE.items() if info.fire_reset] == ["Pong"]
    for game in GAME_TABLE:
        assert EnvConfig().uses_fire_reset(game) == (game == "Pong")
        assert EnvConfig(fire_reset=True).uses_fire_reset(game)
    assert not EnvConfig(fire_reset=False).uses_fire_reset("Pong")
    # Not a demo game: the rule is derived from its minimal action set (NOOP, FIRE, ...).
    assert EnvConfig().uses_fire_reset("Breakout")
    assert not EnvConfig().uses_fire_reset("NoSuchGame")


def test_reading_a_config_does_not_import_jax() -> None:
    """The pool's spawned workers re-import the trainer's imports: JAX there costs each ~150 MB."""
    code = ("import sys, jax_reset.config, jax_reset.networks; "
            "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_base_chains_merge_table_by_table_relative_to_each_file(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "presets/root.toml": '[train]\nnum_envs = 64\nworkers = 4\n[ppo]\nepochs = 2\n',
        "presets/mid.toml": 'base = "root.toml"\n[train]\nworkers = 8\n',
        "jobs/game.toml": 'base = "../presets/mid.toml"\n' + MINIMAL + '[ppo]\nclip = 0.2\n',
    })
    c = cfg.load(tmp_path / "jobs" / "game.toml")
    assert (c.train.num_envs, c.train.workers) == (64, 8)
    assert (c.ppo.epochs, c.ppo.clip) == (2, 0.2)
    assert c.demo.demo_path == "demos/Pong.npz"


def test_cpu_overlay_is_inherited_replaced_and_refined(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "base.toml": 'cpu = "cpu.toml"\n[train]\nnum_envs = 64\n',
        "cpu.toml": '[train]\nnum_envs = 8\nworkers = 1\n',
        "small.toml": '[train]\nnum_envs = 4\n',
        "inherits.toml": 'base = "base.toml"\n' + MINIMAL,
        "refines.toml": 'base = "base.toml"\n' + MINIMAL + '[on_cpu]\ntrain.workers = 2\n',
        "replaces.toml": 'base = "base.toml"\ncpu = "small.toml"\n' + MINIMAL,
    })
    sizes = {name: (cfg.load(tmp_path / f"{name}.toml").train.num_envs,
                    cfg.load(tmp_path / f"{name}.toml", on_cpu=True).train.num_envs,
                    cfg.load(tmp_path / f"{name}.toml", on_cpu=True).train.workers)
             for name in ("inherits", "refines", "replaces")}
    assert sizes == {"inherits": (64, 8, 1), "refines": (64, 8, 2), "replaces": (64, 4, 2)}
    # The command line still comes last.
    assert cfg.load(tmp_path / "inherits.toml", ["train.num_envs=16"], on_cpu=True
                    ).train.num_envs == 16


@pytest.mark.parametrize("files,message", [
    ({"c.toml": 'base = "c.toml"\n' + MINIMAL}, "links form a cycle: {d}/c.toml -> {d}/c.toml"),
    ({"c.toml": 'base = "b.toml"\n' + MINIMAL, "b.toml": 'base = "c.toml"\n'},
     "links form a cycle: {d}/c.toml -> {d}/b.toml -> {d}/c.toml"),
    ({"c.toml": 'cpu = "b.toml"\n' + MINIMAL, "b.toml": 'base = "c.toml"\n'},
     "links form a cycle"),
    ({"c.toml": 'base = "nope.toml"\n' + MINIMAL}, "base = 'nope.toml': no such config file"),
    ({"c.toml": 'base = 3\n' + MINIMAL}, "base: expected a string (a path relative to this"),
    ({"c.toml": 'cpu = "b.toml"\n' + MINIMAL, "b.toml": '[on_cpu]\ntrain.workers = 1\n'},
     "cpu: a CPU overlay cannot have a CPU overlay itself"),
    ({"c.toml": 'cpu = "b.toml"\n' + MINIMAL, "b.toml": '[train]\nworkrs = 1\n'},
     "[on_cpu] unknown key 'train.workrs'"),
    ({"c.toml": 'base = "b.toml"\n' + MINIMAL, "b.toml": '[ppo\n'}, "b.toml: not valid TOML"),
    ({"c.toml": 'bse = "b.toml"\n' + MINIMAL}, "unknown key 'bse'"),
])
def test_link_errors_are_one_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    write_files(tmp_path, files)
    with pytest.raises(config_tree.ConfigError) as err:
        cfg.load(tmp_path / "c.toml")  # on a GPU machine too: the overlay is always checked
    text = str(err.value)
    assert message.format(d=tmp_path) in text and "\n" not in text


def test_overrides_are_typed_as_toml_values(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, MINIMAL), [
        "ppo.learning_rate=3e-4", "train.num_envs=64", "train.overlap=false",
        "network.conv_channels=[8, 16, 16]", "demo.demo_path=demos/Pitfall.npz",
        "network.core=gru", "ppo.max_grad_norm=0.5", "train.total_updates=1e3",
    ])
    assert c.ppo.learning_rate == 3e-4 and c.train.num_envs == 64 and c.train.overlap is False
    assert c.network.conv_channels == (8, 16, 16) and c.network.core == "gru"
    assert c.demo.demo_path == "demos/Pitfall.npz" and c.ppo.max_grad_norm == 0.5
    assert c.train.total_updates == 1000 and isinstance(c.train.total_updates, int)


def test_cpu_table_applies_before_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[train]\nnum_envs = 64\n[on_cpu]\ntrain.num_envs = 8\n"
                 "network.core_size = 64\n")
    assert cfg.load(path).train.num_envs == 64
    assert cfg.load(path, on_cpu=True).train.num_envs == 8
    assert cfg.load(path, ["train.num_envs=12"], on_cpu=True).train.num_envs == 12
    assert cfg.load(path, on_cpu=True).network.core_size == 64


@pytest.mark.parametrize("text,overrides,message", [
    (MINIMAL + "[ppo]\nlr = 1e-4\n", [], "unknown key 'ppo.lr' (known: adam_eps"),
    (MINIMAL, ["ppo.lrr=1"], "unknown key 'ppo.lrr'"),
    (MINIMAL, ["trian.num_envs=4"], "unknown key 'trian' (known: curriculum, demo, env"),
    (MINIMAL, ["ppo.learning_rate=fast"], "ppo.learning_rate: expected float, got string 'fast'"),
    (MINIMAL, ["train.num_envs=true"], "train.num_envs: expected int, got bool True"),
    (MINIMAL, ["train.num_envs=2.5"], "train.num_envs: expected int, got float 2.5"),
    (MINIMAL, ["network.conv_channels=[8, 'x', 8]"], "network.conv_channels[1]: expected int"),
    (MINIMAL, ["network.core=rnn"], "network.core: expected one of 'lstm' | 'gru' | 'none'"),
    (MINIMAL, ["train.workers=64", "train.num_envs=8"], "workers (64) must not exceed num_envs"),
    (MINIMAL, ["env.img_height=20"], "leave nothing of a 20x80 frame"),
    (MINIMAL, ["ppo.burn_in_steps=200"], "burn_in_steps (200) must not exceed rollout_steps"),
    (MINIMAL, ["curriculum.success_threshold=0"], "success_threshold must be in (0, 1]"),
    (MINIMAL, ["stall.factor=1.5"], "stall: factor must be in (0, 1)"),
    # Passed the checks once and failed 10 s into the run (inf) or trained silently (gamma 2).
    (MINIMAL, ["ppo.learning_rate=inf"], "ppo: learning_rate must be a finite number, not inf"),
    (MINIMAL, ["ppo.ent_coef=inf"], "ppo: ent_coef must be a finite number, not inf"),
    (MINIMAL, ["ppo.vf_coef=nan"], "ppo: vf_coef must be a finite number, not nan"),
    (MINIMAL, ["ppo.gamma=2.0"], "ppo: gamma must be in (0, 1], not 2.0"),
    (MINIMAL, ["ppo.gae_lambda=-0.5"], "ppo: gae_lambda must be in [0, 1], not -0.5"),
    (MINIMAL, ["stall.on_move=reset"], "stall.on_move: expected one of 'restore' | 'keep'"),
    (MINIMAL, ["eval.protocol=noops"], "eval: protocol must be one of plain, noop, sticky"),
    (MINIMAL, ["eval.stop_score=18"], "eval: stop_score needs evaluations: set eval.every"),
    (MINIMAL, ["eval.every=5", "eval.stop_score=nan"], "eval: stop_score must be a number"),
    (MINIMAL, ["eval.every=-1"], "eval: every must be non-negative"),
    # A retired key is accepted only in a saved config, never in a user's file.
    (MINIMAL + "[network]\nobs_layout = 'chw'\n", [], "unknown key 'network.obs_layout'"),
    (MINIMAL, ["ppo"], "override 'ppo': expected section.key=value"),
    (MINIMAL, ["ppo.clip.x=1"], "ppo.clip: expected float, got table"),
    (MINIMAL + "[ppo]\nclip = 0.1\n", ["ppo.clip.x=1"], "override 'ppo.clip.x': 'ppo.clip' is not"),
    ("[env]\nframe_skip = 4\n", [], "missing key 'demo.demo_path'"),
    (MINIMAL + "[on_cpu]\nnetwork.cores = 1\n", [], "[on_cpu] unknown key 'network.cores'"),
    ("env = 3\n" + MINIMAL, [], "env: expected a table, got int 3"),
    ("[demo\n", [], "not valid TOML"),
])
def test_errors_are_one_line_and_name_the_key(tmp_path: Path, text: str, overrides: list[str],
                                               message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config_tree.ConfigError) as err:
        cfg.load(path, overrides)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config_tree.ConfigError, match="no such config file"):
        cfg.load(tmp_path / "nope.toml")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    c = cfg.load(REPO / "configs" / "pong.toml", ["ppo.max_grad_norm=0.5"], on_cpu=True)
    saved = config_tree.save_json(c, tmp_path / "run" / "config.json")
    assert cfg.load(saved) == c
    # a stop score of inf (never: the default) and a finite one both survive the JSON
    for score in ("inf", "18.5"):
        c2 = cfg.load(REPO / "configs" / "pong.toml", ["eval.every=10",
                                                       f"eval.stop_score={score}"])
        assert cfg.load(config_tree.save_json(c2, tmp_path / score / "config.json")) == c2
    assert [p.name for p in saved.parent.iterdir()] == ["config.json"]  # no temporary left
    other = cfg.load(saved, ["ppo.learning_rate=1e-5", "network.core_size=64"])
    assert config_tree.diff(config_tree.to_dict(c), config_tree.to_dict(other)) == [
        "network.core_size", "ppo.learning_rate"]


def test_a_saved_config_drops_its_retired_keys(tmp_path: Path) -> None:
    """A run's config.json written before ``network.obs_layout`` was removed still loads (its
    one possible value, "chw", is today's behaviour); another value is a one-line error."""
    c = cfg.load(REPO / "configs" / "pong.toml", on_cpu=True)
    old = config_tree.to_dict(c)
    old["network"]["obs_layout"] = "chw"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert cfg.load(path) == c
    assert "obs_layout" not in cfg.read_file(path)["network"]
    old["network"]["obs_layout"] = "hwc"
    path.write_text(json.dumps(old))
    with pytest.raises(config_tree.ConfigError) as err:
        cfg.load(path)
    text = str(err.value)
    assert text.startswith(str(path)) and "network.obs_layout = 'hwc'" in text
    assert "\n" not in text
    # The table is generic: drop_retired leaves every other key, and a config without them alone.
    assert cfg.drop_retired(config_tree.to_dict(c)) == config_tree.to_dict(c)
    assert set(cfg.RETIRED_KEYS) == {"network.obs_layout"}


@pytest.mark.parametrize("job", ["pong", "montezuma_first_rooms"])
def test_the_no_demo_baseline_is_the_demo_job_without_the_demo(job: str) -> None:
    """``configs/<job>_nodemo.toml``: the job's every setting (full size and CPU overlay) but
    the ones that bring the demo in: every episode from frame 0 (no demo state), no lag rule,
    no entropy boost, no warm-up, the input offset from random play."""
    for on_cpu in (False, True):
        demo = config_tree.to_dict(cfg.load(REPO / "configs" / f"{job}.toml", on_cpu=on_cpu))
        nodemo = cfg.load(REPO / "configs" / f"{job}_nodemo.toml", on_cpu=on_cpu)
        differ = config_tree.diff(demo, config_tree.to_dict(nodemo))
        assert differ == ["curriculum.start_at", "demo.allowed_lag_frames",
                          "demo.entropy_boost_frames", "demo.p_start_at_starting_point",
                          "network.input_norm", "train.warmup_steps"], differ
        assert nodemo.curriculum.start_at == 0 and nodemo.demo.p_start_at_starting_point == 1
        assert nodemo.train.warmup_steps == 0 and nodemo.network.input_norm == "play_mean"
        assert nodemo.demo.allowed_lag_frames > 100 * 27_000 * 4  # longer than any game
