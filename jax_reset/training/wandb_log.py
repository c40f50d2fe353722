"""Weights & Biases for a run (``[wandb]``, ``jax_reset.config.WandbConfig``): optional, process 0
only, a ``metrics.MetricsSink`` beside ``metrics.jsonl`` and TensorBoard.

``start`` checks everything before training begins, so that a missing package, a missing login
or a W&B that cannot start is one line and exit 2, never a failure mid-run: the package is
imported, the online mode needs an API key (``WANDB_API_KEY`` or ``wandb login``'s netrc entry),
and ``wandb.init`` gets a time limit. The W&B run's id is kept in ``RUN_DIR/wandb_id.txt``, so a
resume continues the same W&B run; its files go to ``RUN_DIR/wandb``. Logged: the resolved
config, every metrics line at its update (the finite values), and at each evaluation every
game's score as a histogram (``eval/scores``).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jax_reset import config_tree
from jax_reset.config_tree import atomic_write
from jax_reset.run.layout import UsageError

ID_NAME = "wandb_id.txt"
INIT_TIMEOUT_S = 90.0
WANDB_HOST = "api.wandb.ai"


class WandbError(UsageError):
    """W&B was asked for and cannot log; the message is one line."""


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbSink:
    """The W&B run a trainer logs to (a ``metrics.MetricsSink``)."""

    def __init__(self, run: Any, wandb: Any) -> None:
        self._run, self._wandb = run, wandb

    def log(self, update: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=update)

    def log_evaluation(self, record: Mapping[str, Any]) -> None:
        self._run.log({"eval/scores": self._wandb.Histogram(list(record["scores"]))},
                      step=int(record["update"]))

    def log_video(self, update: int, path: Path) -> None:
        self._run.log({"eval/video": self._wandb.Video(str(path), format="mp4")}, step=update)

    def close(self) -> None:
        self._run.finish()


def check(config: Any) -> None:
    """Before anything is written: raises ``WandbError`` (one line) when ``wandb.project`` is
    set and W&B cannot log (no package; online without an API key)."""
    cfg = config.wandb
    if not cfg.project:
        return
    if importlib.util.find_spec("wandb") is None:
        raise WandbError("wandb.project is set but the wandb package is not installed: "
                         "pip install -e '.[wandb]' (or leave wandb.project empty)")
    if cfg.mode == "online" and not _logged_in():
        raise WandbError("wandb.project is set but W&B has no API key here: run `wandb login` "
                         "or set WANDB_API_KEY, or log offline with wandb.mode=offline "
                         "(`wandb sync` uploads it later)")


def start(config: Any, run_dir: Path) -> WandbSink | None:
    """The W&B run of ``run_dir`` (a new one, or the one its id file names), or None when
    ``wandb.project`` is empty. Raises ``WandbError`` (one line) when it cannot log."""
    cfg = config.wandb
    if not cfg.project:
        return None
    check(config)
    import wandb  # the optional extra: imported only when asked for

    id_path = run_dir / ID_NAME
    run_id = id_path.read_text().strip() if id_path.is_file() else secrets.token_hex(4)
    atomic_write(id_path, lambda f: f.write(run_id + "\n"))  # before the run: a resume finds it
    try:
        run = wandb.init(
            project=cfg.project, entity=cfg.entity or None, name=cfg.name or run_dir.name,
            id=run_id, resume="allow", dir=str(run_dir), mode=cfg.mode,
            config=config_tree.to_dict(config),
            settings=wandb.Settings(console="off", silent=True, init_timeout=INIT_TIMEOUT_S))
    except Exception as err:  # W&B raises many kinds (network, auth, usage): all one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WandbError(f"W&B did not start ({type(err).__name__}: {first}); "
                         "wandb.mode=offline logs without the network") from None
    return WandbSink(run, wandb)
