"""What the video recipes share: frame numbers from file names, frame times, frame listings, seeded
prompt generators, and reading per-frame label PNGs into per-object tracks."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.framework.masks import mask_to_rle

_TRAILING_NUMBER = re.compile(r"(\d+)$")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def frame_number(name: str) -> int:
    """The frame number a file name carries (``00045.jpg`` -> 45, ``img_0012.png`` -> 12).

    Raises:
        ValueError: the stem does not end in digits.
    """
    stem = Path(name).stem
    match = _TRAILING_NUMBER.search(stem)
    if match is None:
        raise ValueError(f"frame file name {name!r} carries no frame number")
    return int(match.group(1))


def frame_times(names: Sequence[str], fps: float) -> list[float]:
    """Seconds of each frame: its file number over the dataset's frame rate, so gaps in the numbering
    (YouTube-VIS keeps every 5th frame) are gaps in time.

    Raises:
        ValueError: numbers that do not strictly increase in the given order.
    """
    numbers = [frame_number(n) for n in names]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise ValueError(f"frame numbers do not increase in frame order: {numbers[:8]}...")
    return [round(n / fps, 6) for n in numbers]


def list_frames(folder: Path, suffixes: Iterable[str] = FRAME_SUFFIXES) -> list[Path]:
    """The frame files of one video folder in frame-number order (hidden files ignored)."""
    suffixes = tuple(suffixes)
    paths = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")]
    return sorted(paths, key=lambda p: (frame_number(p.name), p.name))


def read_split_list(path: Path) -> list[str]:
    """A split file of video names, one per line (blank lines and surrounding spaces ignored)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def prompt_rng(seed: int, sample_key: str, object_id: int) -> np.random.Generator:
    """The generator of one object's stored prompts: fixed by the recipe's ``--seed``, the sample key and
    the object id, so a prompt does not depend on the order or process it was made in."""
    return np.random.default_rng([int(seed), zlib.crc32(sample_key.encode()), int(object_id) & 0xFFFFFFFF])


def label_tracks(
    frames: Sequence[np.ndarray | None], keep: Callable[[int], bool]
) -> dict[int, list[dict[str, Any] | None]]:
    """Per-frame label maps -> ``{label: [RLE or None per frame]}`` for every label ``keep`` accepts that
    is present in some frame. A frame without a label map (``None``: not annotated) and a frame where the
    label is absent both give ``None`` (schema v1 does not tell the two apart)."""
    present: dict[int, list[int]] = {}
    for t, frame in enumerate(frames):
        if frame is None:
            continue
        for value in np.unique(frame).tolist():
            if keep(int(value)):
                present.setdefault(int(value), []).append(t)
    tracks: dict[int, list[dict[str, Any] | None]] = {}
    for value in sorted(present):
        masks: list[dict[str, Any] | None] = [None] * len(frames)
        for t in present[value]:
            masks[t] = mask_to_rle(frames[t] == value)
        tracks[value] = masks
    return tracks
