"""Reading the 2018 demo pickles, and nothing but them.

A pickle can run arbitrary code when loaded, so the originals are read through an unpickler that
resolves only the few globals these files contain (numpy's array, dtype and scalar
reconstruction), refuses object arrays, and checks the structure of what it got.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The only globals the five original demos reference (numpy 1.x names; numpy 2 moved them).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
}
_MAX_BYTES = 64 * 2**20  # the largest original is 2.9 MB


class OriginalDemoError(ValueError):
    """An original demo file is missing, malformed, or carries something it should not."""


class RefusedContent(pickle.UnpicklingError):
    """The pickle asks for something other than plain data and numpy arrays."""


def _safe_dtype(*args, **kwargs) -> np.dtype:
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise RefusedContent("refusing object arrays: only plain numeric arrays are allowed")
    return dtype


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array/dtype/scalar reconstruction."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("numpy", "dtype"):
            return _safe_dtype
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedContent(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            ) from None


def restricted_loads(data: bytes):
    """``pickle.loads`` with ``RestrictedUnpickler`` and latin-1 strings (2018 pickles)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


@dataclass(frozen=True)
class OriginalDemo:
    """The contents of one 2018 demo, checked and aligned.

    Attributes:
      actions: uint8 [T], one per emulator frame, index into the minimal action set.
      rewards: float64 [T], rewards[i] is the reward of executing actions[i].
      lives: int32 [T + 1] or None; lives[i] is the number of lives before frame i.
      checkpoint_frames: int64 [K], frame index of each checkpoint.
      checkpoints: K byte strings, emulator states in the 2018 serialisation.
    """

    actions: np.ndarray
    rewards: np.ndarray
    lives: np.ndarray | None
    checkpoint_frames: np.ndarray
    checkpoints: list[bytes]


def read_original(path: str | Path) -> OriginalDemo:
    """Reads and validates a 2018 ``.demo`` pickle. Raises ``OriginalDemoError``."""
    path = Path(path)
    if not path.is_file():
        raise OriginalDemoError(f"{path}: no such demo file")
    data = path.read_bytes()
    if len(data) > _MAX_BYTES:
        raise OriginalDemoError(f"{path}: {len(data)} bytes is too large for a demo")
    try:
        raw = restricted_loads(data)
    except RefusedContent as err:
        raise OriginalDemoError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as err:
        raise OriginalDemoError(f"{path}: truncated or corrupted pickle ({err})") from None
    if not isinstance(raw, dict):
        raise OriginalDemoError(f"{path}: expected a dict, found {type(raw).__name__}")
    missing = {"actions", "rewards", "checkpoints", "checkpoint_action_nr"} - raw.keys()
    if missing:
        raise OriginalDemoError(f"{path}: missing keys {sorted(missing)}")
    try:
        actions = np.asarray(raw["actions"], dtype=np.int64)
        rewards = np.asarray(raw["rewards"], dtype=np.float64)
        frames = np.asarray(raw["checkpoint_action_nr"], dtype=np.int64)
        checkpoints = [np.asarray(c, dtype=np.uint8).tobytes() for c in raw["checkpoints"]]
        lives = np.asarray(raw["lives"], dtype=np.int32) if "lives" in raw else None
    except (TypeError, ValueError) as err:
        raise OriginalDemoError(f"{path}: malformed field ({err})") from None
    num_frames = len(actions)
    if actions.ndim != 1 or num_frames == 0 or actions.min() < 0 or actions.max() > 17:
        raise OriginalDemoError(f"{path}: actions must be a non-empty list of indices 0..17")
    # Pong's reward list has one extra leading entry; align on the last T entries.
    if len(rewards) < num_frames:
        raise OriginalDemoError(f"{path}: {len(rewards)} rewards for {num_frames} actions")
    rewards = rewards[len(rewards) - num_frames:]
    if lives is not None and len(lives) != num_frames + 1:
        raise OriginalDemoError(f"{path}: {len(lives)} lives entries for {num_frames} actions")
    if len(frames) != len(checkpoints) or len(frames) == 0:
        raise OriginalDemoError(f"{path}: {len(frames)} checkpoint frames for "
                                f"{len(checkpoints)} checkpoints")
    if np.any(np.diff(frames) <= 0) or frames[0] <= 0 or frames[-1] > num_frames:
        raise OriginalDemoError(f"{path}: checkpoint frames must increase within the demo")
    return OriginalDemo(actions.astype(np.uint8), rewards, lives, frames, checkpoints)
