"""Pure frame operations, the same as EnvPool's Atari pipeline: max-pool, resize, channel-first.

Screens are ALE's [210, 160, 3] RGB (or [210, 160] palette grayscale) uint8 frames.
"""

from __future__ import annotations

import ctypes

import cv2
import numpy as np

RAW_HEIGHT, RAW_WIDTH = 210, 160

# One OpenCV thread: each worker process already owns a core; cv2's thread pool only adds
# wake-up latency to 20-microsecond resizes.
cv2.setNumThreads(1)


def raw_screen_shape(gray_scale: bool) -> tuple[int, ...]:
    return (RAW_HEIGHT, RAW_WIDTH) if gray_scale else (RAW_HEIGHT, RAW_WIDTH, 3)


def max_pool(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Pixel-wise max of two screens (per RGB channel, as EnvPool), written into `out`."""
    return np.maximum(a, b, out=out)


def resize_chw(screen: np.ndarray, dst: np.ndarray, scratch: np.ndarray, inter_area: bool) -> None:
    """Resize one screen and write it channel-first into `dst`.

    screen: uint8 [210, 160, 3] or [210, 160]; dst: uint8 [C, H, W] (a view into the frame
    stack); scratch: uint8 [H, W, C] or [H, W]. EnvPool resizes even at the native size, which
    is a copy, so skipping the call then changes nothing.
    """
    c, h, w = dst.shape
    if (h, w) == (RAW_HEIGHT, RAW_WIDTH):
        resized = screen
    else:
        interp = cv2.INTER_AREA if inter_area else cv2.INTER_LINEAR
        resized = cv2.resize(screen, (w, h), dst=scratch, interpolation=interp)
    if c == 1:
        dst[0] = resized
    else:
        # cv2.split writes straight into the three contiguous planes of dst.
        cv2.split(resized, [dst[0], dst[1], dst[2]])


def shift_stack(row: np.ndarray, channels: int, address: int | None = None) -> np.ndarray:
    """Drop the oldest frame of a [stack * C, H, W] stack in place; return the free last slot.

    A memmove of (stack - 1) frames: numpy would go through a temporary for overlapping views.
    `address`: row.ctypes.data, precomputed by callers on the hot path (it costs microseconds).
    """
    total = row.shape[0]
    if total > channels:
        plane = row.shape[1] * row.shape[2]
        base = row.ctypes.data if address is None else address
        ctypes.memmove(base, base + channels * plane, (total - channels) * plane)
    return row[total - channels :]


def fill_stack(row: np.ndarray, channels: int) -> None:
    """Copy the newest frame (the last slot) over every older slot: the stack after a reset."""
    last = row[row.shape[0] - channels :]
    for start in range(0, row.shape[0] - channels, channels):
        row[start : start + channels] = last
