"""A trained policy on its own (``python -m jax_reset.export``): the parameters of one checkpoint
without the optimizer state, the RNG or the curriculum, and the checkpoint's metadata (config,
game, number of actions), in a folder that ``python -m jax_reset.evaluate --run-dir DIR`` plays
as it plays a run directory (``run.state.load_params`` reads either).

    DIR/policy.json   {"format": "jax-reset-policy", "format_version": 1, "step": N, "meta": ...}
    DIR/params/       the parameters (an Orbax checkpoint of the parameter tree)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset.config_tree import atomic_write
from jax_reset.run.layout import UsageError

POLICY_FILE = "policy.json"
PARAMS_DIR = "params"
FORMAT_NAME = "jax-reset-policy"
FORMAT_VERSION = 1


def is_policy_dir(path: Path) -> bool:
    return (Path(path) / POLICY_FILE).is_file()


def save_policy(out: Path, step: int, meta: dict[str, Any], params: Any) -> Path:
    """Writes the policy folder ``out`` (made if needed; its params/ must not exist yet)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((out / PARAMS_DIR).absolute(), jax.device_get(params))
    checkpointer.wait_until_finished()
    checkpointer.close()
    # Orbax's commit marker holds the absolute folder it was written to: a shared folder
    # would name this machine's path, and a restore does not read it.
    (out / PARAMS_DIR / "commit_success.txt").unlink(missing_ok=True)
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "step": int(step),
              "meta": meta}
    atomic_write(out / POLICY_FILE, lambda f: f.write(json.dumps(header, indent=2) + "\n"))
    return out


def load_policy(folder: Path) -> tuple[int, dict[str, Any], config_lib.Config, Any]:
    """(step, meta, config, parameters) of a policy folder; ``UsageError`` (one line)."""
    folder = Path(folder)
    try:
        header = json.loads((folder / POLICY_FILE).read_text())
        if header.get("format") != FORMAT_NAME or header.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{folder / POLICY_FILE}: not a {FORMAT_NAME} file of version "
                             f"{FORMAT_VERSION}")
        meta = header["meta"]
        config = config_tree.from_dict(config_lib.Config,
                                       config_lib.with_defaults(meta["config"]))
        checkpointer = ocp.StandardCheckpointer()
        params = checkpointer.restore((folder / PARAMS_DIR).absolute())
        checkpointer.close()
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, TypeError, config_tree.ConfigError) as err:
        raise UsageError(f"{folder}: cannot read the exported policy "
                         f"({type(err).__name__}: {err})") from None
    return int(header["step"]), meta, config, params
