"""Weights & Biases (``[wandb]``), tested offline (no network): the offline run's record file holds
the resolved config, every metrics line at its update and the evaluations; a resume continues the
same W&B run; a missing package or login is one line before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jax_reset import config as cfg
from jax_reset.training import wandb_log
from tests.conftest import REPO, SMOKE, run_module

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2",
                         reason="the wandb extra is not installed (pip install -e '.[wandb]')")

BLOCK = 32768  # the record file is a LevelDB log: 32 KiB blocks of chunks with 7-byte headers


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (``run-<id>.wandb``)."""
    data, pos, pending, out = path.read_bytes(), 7, b"", []  # after the ":W&B" file header
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def history(run_dir: Path) -> tuple[list[str], dict[int, dict[str, str]], dict[str, str]]:
    """(the W&B run ids, {step: {key: JSON value}} of every history record, the config)."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    ids, steps, config = [], {}, {}
    for file in files:
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
                config.update({i.key: i.value_json for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: i.value_json for i in record.config.update})
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json
                         for i in record.history.item}
                steps.setdefault(int(record.history.step.num), {}).update(items)
    return ids, steps, config


def test_an_offline_run_holds_the_config_metrics_and_evaluations(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true"}
    args = ("wandb.project=jax-reset-test", "wandb.mode=offline", "eval.every=2",
            "eval.episodes=2", "eval.envs=2", "eval.video_every=2")
    done = run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir",
                      str(run), "train.total_updates=4", *args, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run_id = (run / wandb_log.ID_NAME).read_text().strip()
    ids, steps, config = history(run)
    assert ids == [run_id]
    assert '"jax-reset-test"' in config["wandb"] and "learning_rate" in config["ppo"]
    assert sorted(steps) == [1, 2, 3, 4]
    assert all(float(steps[u]["train/update"]) == u for u in steps)
    assert [u for u in steps if "eval/score_mean" in steps[u]] == [2, 4]
    assert "histogram" in steps[2]["eval/scores/_type"]  # every game's score
    assert "eval/video/_type" not in steps[2] and "video" in steps[4]["eval/video/_type"]
    # A resume continues the same W&B run (its id from the run directory).
    done = run_module("jax_reset.train", "--run-dir", str(run), "--resume",
                      "train.total_updates=6", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ids, steps, _ = history(run)
    assert ids == [run_id, run_id] and sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_online_without_a_login_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: no login
    run = tmp_path / "run"
    done = run_module("jax_reset.train", "--config", "configs/smoke.toml", "--run-dir",
                      str(run), "wandb.project=x", env=env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "W&B has no API key here" in done.stderr
    assert not run.exists() or not any(run.iterdir())


def test_a_missing_package_is_one_line(monkeypatch) -> None:
    config = cfg.load(SMOKE, ["wandb.project=x", "wandb.mode=offline"])
    real = wandb_log.importlib.util.find_spec
    monkeypatch.setattr(wandb_log.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(wandb_log.WandbError, match=r"pip install -e '\.\[wandb\]'"):
        wandb_log.check(config)
    wandb_log.check(cfg.load(REPO / "configs" / "smoke.toml"))  # off: nothing to check
