"""The config schema: game files, overrides, one-line errors, the saved resolved config."""

from __future__ import annotations

from pathlib import Path

import pytest

from jax_reset import config as cfg

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))
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
        assert small.ppo == c.ppo  # the CPU variant shrinks sizes, not the algorithm


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
    (MINIMAL, ["train.num_envs=6", "ppo.minibatches=4"],
     "train.num_envs (6) must be divisible by ppo.minibatches (4)"),
    (MINIMAL, ["train.workers=64", "train.num_envs=8"], "workers (64) must not exceed num_envs"),
    (MINIMAL, ["env.img_height=20"], "leave nothing of a 20x80 frame"),
    (MINIMAL, ["ppo.burn_in_steps=200"], "burn_in_steps (200) must not exceed rollout_steps"),
    (MINIMAL, ["curriculum.success_threshold=0"], "success_threshold must be in (0, 1]"),
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
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path, overrides)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="no such config file"):
        cfg.load(tmp_path / "nope.toml")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    c = cfg.load(REPO / "configs" / "pong.toml", ["ppo.max_grad_norm=0.5"], on_cpu=True)
    saved = cfg.save_json(c, tmp_path / "run" / "config.json")
    assert cfg.load(saved) == c
    assert [p.name for p in saved.parent.iterdir()] == ["config.json"]  # no temporary left
    other = cfg.load(saved, ["ppo.learning_rate=1e-5", "network.core_size=64"])
    assert cfg.diff(cfg.to_dict(c), cfg.to_dict(other)) == [
        "network.core_size", "ppo.learning_rate"]
