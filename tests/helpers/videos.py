"""Small mp4 files written with PyAV for the video inference tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from x2sam_lightning.data.synthetic.scenes import encode_mp4


def moving_squares(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: two coloured squares moving over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, size=(num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    for t in range(num_frames):
        x = (3 * t) % max(1, width - side)
        y = (2 * t) % max(1, height - side)
        frames[t, y : y + side, x : x + side] = (220, 40, 40)
        frames[t, height - side - y // 2 : height - y // 2, width - side - x // 2 : width - x // 2] = (
            40,
            200,
            60,
        )
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Encode ``frames`` as H.264 (constant quantiser, one thread) at ``path``."""
    path.write_bytes(encode_mp4(np.ascontiguousarray(frames), fps))
    return path
