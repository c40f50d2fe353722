"""``python -m jax_reset.export``: a run's checkpoint as a folder to share: the parameters alone
(equal to the checkpoint's), the config, every game's score, a video and a model card whose
numbers are the evaluation's; ``evaluate`` plays the folder from elsewhere with the same scores;
an existing folder is refused; an emulator crash is one line, exit 1, and writes nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np

from jax_reset.evaluation.play import NetworkPolicy
from jax_reset.evaluation.video import record_episode
from jax_reset.export import model_card
from jax_reset.run.state import load_params
from tests.conftest import REPO, run_module, run_module_killing_its_emulator


def test_an_exported_policy_plays_alone_and_its_card_tells_its_scores(
        smoke_run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pong-smoke"
    args = ("--episodes", "3", "--envs", "2", "--protocol", "plain", "--protocol", "noop")
    done = run_module("jax_reset.export", "--run-dir", str(smoke_run_dir), "--out", str(out),
                      *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "evaluation.json", "game.mp4", "params", "policy.json"]
    assert not (out / "checkpoints").exists() and (out / "game.mp4").stat().st_size > 10_000
    # A folder to share names no folder of this machine (demo paths relative to the repository).
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".mp4":
            text = path.read_bytes()
            assert str(REPO).encode() not in text and str(tmp_path).encode() not in text, path
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert [r["protocol"] for r in evaluation["protocols"]] == ["plain", "noop"]
    assert all(len(r["scores"]) == 3 for r in evaluation["protocols"])

    # The parameters are the checkpoint's, bit for bit.
    step, _, _, params = load_params(smoke_run_dir, "latest")
    step2, meta, _, exported = load_params(out, "latest")
    assert step2 == step == evaluation["checkpoint"] and meta["game"] == "Pong"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(exported), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The card's Hub metadata and table carry the evaluation's numbers.
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: jax-reset\n")
    values = [float(v) for v in re.findall(r"value: (-?[\d.]+) \+/-", card)]
    assert values == [round(r["score_mean"], 2) for r in evaluation["protocols"]]
    for r in evaluation["protocols"]:
        assert f"| {r['protocol']} | 3 | {r['score_mean']:.2f} |" in card
    assert "python -m jax_reset.train --config pong-smoke/config.json" in card
    assert "4 updates" in card  # the smoke run's, from its metrics
    # Its config trains again from any clone: the demo named inside the repository.
    assert json.loads((out / "config.json").read_text())["demo"]["demo_path"] == "demos/Pong.npz"

    # Played from another folder, with nothing of the run: the same games, the same scores.
    moved = shutil.copytree(out, tmp_path / "elsewhere" / "policy")
    played = run_module("jax_reset.evaluate", "--run-dir", str(moved), "--protocol", "plain",
                        "--protocol", "noop", "--episodes", "3", "--envs", "2", "--json")
    assert played.returncode == 0, played.stderr[-3000:]
    again = json.loads(played.stdout.strip().splitlines()[-1])
    assert [r["scores"] for r in again["protocols"]] == [
        r["scores"] for r in evaluation["protocols"]]

    # An existing folder is refused, untouched.
    before = sorted(p.name for p in out.iterdir())
    refused = run_module("jax_reset.export", "--run-dir", str(smoke_run_dir), "--out", str(out),
                         *args)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "exists" in refused.stderr and sorted(p.name for p in out.iterdir()) == before


def test_a_bad_run_directory_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x"
    done = run_module("jax_reset.export", "--run-dir", str(tmp_path / "nope"), "--out", str(out))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not a run directory" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_emulator_crash_is_one_line_exit_1_and_writes_nothing(
        smoke_run_dir: Path, tmp_path: Path) -> None:
    """The emulator dies (SIGSEGV, ALE's known crash in some games) during the export's games: a
    failure of the run, not of its input (exit 1, not 2), and no half-written folder."""
    out = tmp_path / "pong-smoke"
    done = run_module_killing_its_emulator(
        "jax_reset.export", "--run-dir", str(smoke_run_dir), "--out", str(out), "--episodes", "2",
        "--envs", "2", "--protocol", "plain", "--no-video", kill_within_s=240)
    err = done.stderr
    assert done.returncode == 1 and err.count("\n") == 1, err[-3000:]
    assert "was killed by SIGSEGV while playing Pong under the plain protocol" in err
    assert err.rstrip().endswith("nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_shipped_montezuma_policy_plays_the_first_rooms_from_the_start(tmp_path: Path) -> None:
    """``pretrained/montezuma_first_rooms`` (issue 30's bar: 3,600 in at least 80% of 30 games
    from the game's start): its card and ``evaluation.json`` agree, and the policy, loaded as a
    user loads it, plays the prefix's 3,600 points from the game's start on the real emulator
    (the +3,000 is at the demo's frame 2,300, ~600 agent steps; it takes ~900)."""
    folder = REPO / "pretrained" / "montezuma_first_rooms"
    evaluation = json.loads((folder / "evaluation.json").read_text())
    plain = next(r for r in evaluation["protocols"] if r["protocol"] == "plain")
    assert len(plain["scores"]) == 30 and sum(s >= 3600 for s in plain["scores"]) >= 24
    assert f"value: {plain['score_mean']:.2f}" in (folder / "README.md").read_text()
    step, meta, config, params = load_params(folder, "latest")
    assert step == evaluation["checkpoint"] and meta["game"] == "MontezumaRevenge"
    policy = NetworkPolicy(config.network, params, int(meta["num_actions"]))
    # Two games (the policy samples its actions: a CPU of another kind rounds the logits
    # differently and may play another game); 29 of 30 reached 3,600.
    scores = [record_episode("MontezumaRevenge", config.env, policy, tmp_path / f"{seed}.mp4",
                             "plain", seed=seed, max_agent_steps=1200)[0] for seed in (0, 1)]
    assert max(scores) == 3600, scores


def test_the_shipped_pong_policy_wins_from_the_start(tmp_path: Path) -> None:
    """``pretrained/pong`` (issue 29's bar: a mean of at least +18 over 30 games from the game's
    start, plain protocol): its card and ``evaluation.json`` agree, and the policy, loaded as a
    user loads it, wins a whole game on the real emulator (its 30 games: +15 to +20)."""
    folder = REPO / "pretrained" / "pong"
    evaluation = json.loads((folder / "evaluation.json").read_text())
    plain = next(r for r in evaluation["protocols"] if r["protocol"] == "plain")
    assert len(plain["scores"]) == 30 and plain["score_mean"] >= 18
    assert f"value: {plain['score_mean']:.2f}" in (folder / "README.md").read_text()
    step, meta, config, params = load_params(folder, "latest")
    assert step == evaluation["checkpoint"] and meta["game"] == "Pong"
    policy = NetworkPolicy(config.network, params, int(meta["num_actions"]))
    score, _ = record_episode("Pong", config.env, policy, tmp_path / "game.mp4", "plain", seed=0)
    assert score >= 10, score  # (sampled actions: a CPU of another kind may play another game)


def test_a_no_demo_policys_card_names_no_demo_and_no_curriculum() -> None:
    """A no-demo run's card (the Pong policy shipped) had the learning-from-demonstration tag
    and a table of demo frames "passed" at its first update."""
    scores = [19.0, 20.0, 18.0]
    evaluation = {"seed": 0, "protocols": [{
        "protocol": "plain", "episodes": 3, "scores": scores, "score_mean": 19.0,
        "score_median": 19.0, "score_min": 18.0, "score_max": 20.0,
        "length_mean_agent_steps": 1750.0}]}
    training = {"updates": 1701, "agent_steps": 1741824, "frames": 6965413,
                "training_hours": 0.95, "max_starting_point": 0, "demo_frames": 22869,
                "milestones": " below frame  first (agent steps)\n      22,859   1,024"}
    with_demo = model_card("pong", "Pong", 1701, evaluation, training, None, from_demo=True)
    without = model_card("pong", "Pong", 1701, evaluation, training, None, from_demo=False)
    assert "- learning-from-demonstration\n" in with_demo and "22,859" in with_demo
    assert "curriculum's maximum starting point 0 of the demo's 22,869 frames" in with_demo
    assert "learning-from-demonstration" not in without and "\n- ppo\n- Pong\n" in without
    assert "curriculum" not in without and "22,859" not in without
    assert "without a demonstration" in without
    assert "1,701 updates, 1,741,824 agent steps (6,965,413 emulator frames), 0.95 h of " \
           "training.\n" in without
