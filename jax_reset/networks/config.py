"""The network's shape: the ``[network]`` section of a run config, owned by the model.

Defaults are the reference's (``docs/algorithm.md``, section Network). Frozen (hashable), so it
can be closed over by jitted functions and stored with a checkpoint; derive variants with
``dataclasses.replace``. Importing this module does not import JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

CoreKind = Literal["lstm", "gru", "none"]
DType = Literal["float32", "bfloat16"]
InputNorm = Literal["none", "demo_mean", "play_mean"]
# The input_norm values that subtract a constant offset (a parameter never trained).
INPUT_OFFSETS = ("demo_mean", "play_mean")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shape of the recurrent actor-critic (``jax_reset.networks.ActorCritic``).

    Observations are uint8 ``[C, H, W]`` (stacked frames first), as the pool and EnvPool emit.
    """

    # Output channels of the three convolutions (ReLU, VALID padding, orthogonal init).
    conv_channels: tuple[int, ...] = (64, 128, 128)
    # Square kernel size of each convolution (8x8, 4x4, 3x3 in the reference).
    conv_kernels: tuple[int, ...] = (8, 4, 3)
    # Stride of each convolution.
    conv_strides: tuple[int, ...] = (4, 2, 1)
    # Width of the dense layer after the torso (followed by a parameter-free layer norm, ReLU).
    dense_size: int = 800
    # Recurrent core: "lstm" (the design card's choice), "gru" (the 2018 reference) or "none"
    # (the feed-forward variant: no recurrent state at all).
    core: CoreKind = "lstm"
    # Units of the recurrent core.
    core_size: int = 800
    # Compute dtype of the convolutions and the dense layer. Parameters, layer norm, the core and
    # the heads always stay float32 (bf16 is only a speed knob for the conv-heavy torso).
    compute_dtype: DType = "float32"
    # What is subtracted from the frames (scaled to [0, 1]) before the first convolution. "none"
    # (the reference). "demo_mean": the demo's mean observation per pixel, computed once when a
    # run starts and saved with the parameters (``params["torso"]["input_mean"]``, never
    # trained): the static background cancels and the moving objects remain. Without it the
    # torso's features vary by ~4% across Pong's states at initialisation and the critic stays
    # blind to the ball (docs/results.md). "play_mean": the same from no demo, the mean
    # observation of uniformly random play from the game's start (the no-demo baseline's).
    input_norm: InputNorm = "none"

    def __post_init__(self) -> None:
        n = len(self.conv_channels)
        if not (len(self.conv_kernels) == len(self.conv_strides) == n):
            raise ValueError(
                f"conv_channels, conv_kernels and conv_strides must have the same length, got "
                f"{self.conv_channels}, {self.conv_kernels}, {self.conv_strides}"
            )
        if self.core not in ("lstm", "gru", "none"):
            raise ValueError(f"core must be 'lstm', 'gru' or 'none', got {self.core!r}")
        if self.input_norm not in ("none", *INPUT_OFFSETS):
            raise ValueError(f"input_norm must be 'none', 'demo_mean' or 'play_mean', got "
                             f"{self.input_norm!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {self.compute_dtype}")
