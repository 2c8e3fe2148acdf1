"""What the video referring / reasoning / object / grounded-caption recipes share: frame times from frame
file names, per-object masks from palette PNGs or from RLE dictionaries, the sample unit (a video or one
expression of a video), and the ``[phrase](ids)`` captions of the VideoGLaMM sets.

A private module (``_`` prefix): ``python -m data_recipes`` lists the recipes of the public modules only.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.framework.masks import index_png, mask_to_rle, to_rle

_TRAILING_DIGITS = re.compile(r"(\d+)$")

#: ``--unit`` values: one sample per video (every expression a reference), per expression, or by split.
UNITS = ("auto", "video", "expression")


def frame_times(names: Sequence[str], fps: float) -> list[float]:
    """Seconds of each frame from the number its file name ends with (``00005`` at 30 fps -> 0.1667):
    gaps in the names (YouTube-VOS keeps every 5th frame) stay gaps in time. Names without a number, or
    whose numbers do not increase, fall back to the frame index (``index / fps``)."""
    numbers = []
    for name in names:
        match = _TRAILING_DIGITS.search(Path(name).stem)
        numbers.append(int(match.group(1)) if match else None)
    if None in numbers or any(b <= a for a, b in zip(numbers, numbers[1:])):  # type: ignore[operator]
        numbers = list(range(len(names)))
    return [round(n / fps, 6) for n in numbers]  # type: ignore[operator]


def sort_frames(names: Iterable[str]) -> list[str]:
    """Frame names in time order: by their trailing number where every name has one, else by name."""
    names = list(names)
    keys = [_TRAILING_DIGITS.search(Path(n).stem) for n in names]
    if all(keys):
        return [n for _, n in sorted(zip((int(k.group(1)) for k in keys), names))]  # type: ignore[union-attr]
    return sorted(names)


def frame_files(folder: Path) -> list[Path]:
    """The ``.jpg`` / ``.jpeg`` frame files of a frame folder, in time order."""
    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
    return [files[name] for name in sort_frames(files)]


def palette_tracks(
    pngs: Sequence[Path | None], object_ids: Iterable[int], height: int, width: int
) -> dict[int, list[dict[str, Any] | None]]:
    """Per-object masks from label PNGs (palette index = object id), one PNG per frame or ``None`` where
    the frame has no annotation file. An object with no pixel on a frame gets ``null`` there (schema 1:
    absent and not annotated are both ``null``).

    Raises:
        ValueError: a PNG whose size differs from the frames'.
    """
    ids = list(object_ids)
    tracks: dict[int, list[dict[str, Any] | None]] = {i: [] for i in ids}
    for path in pngs:
        labels = None if path is None or not path.is_file() else index_png(path.read_bytes())
        if labels is not None and labels.shape != (height, width):
            raise ValueError(
                f"annotation {path} is {labels.shape[1]}x{labels.shape[0]}, frames {width}x{height}"
            )
        for i in ids:
            mask = None if labels is None else labels == i
            tracks[i].append(mask_to_rle(mask) if mask is not None and mask.any() else None)
    return tracks


def binary_png_mask(path: Path, height: int, width: int) -> np.ndarray:
    """A 0/255 (or 0/1) greyscale or palette mask PNG -> bool mask (foreground = non-zero)."""
    values = index_png(path.read_bytes())
    if values.shape != (height, width):
        raise ValueError(f"mask {path} is {values.shape[1]}x{values.shape[0]}, frames {width}x{height}")
    return values > 0


def rle_track(rles: Sequence[Any], height: int, width: int) -> list[dict[str, Any] | None]:
    """A list of per-frame RLEs (counts as a list or a string) or ``None`` -> canonical compressed RLEs;
    an empty mask becomes ``null`` (the object is absent there).

    Raises:
        MaskFormatError: an RLE of another size than the frames, or of no known form.
    """
    from pycocotools import mask as mask_utils

    track: list[dict[str, Any] | None] = []
    for rle in rles:
        if not rle:
            track.append(None)
            continue
        encoded = to_rle(rle, height, width)
        area = mask_utils.area({"size": encoded["size"], "counts": encoded["counts"].encode("ascii")})
        track.append(encoded if area > 0 else None)
    return track


def add_unit_argument(parser: argparse.ArgumentParser) -> None:
    """``--unit``: shared by every referring / reasoning recipe (added once per parser)."""
    if any(a.dest == "unit" for a in parser._actions):
        return
    parser.add_argument(
        "--unit",
        choices=UNITS,
        default="auto",
        help="sample unit: a video with all its expressions, or one expression; auto = video for train, "
        "expression for scored splits (the benchmarks score each expression)",
    )


def per_expression(unit: str, split: str) -> bool:
    """Whether ``split`` is cut into one sample per expression."""
    return unit == "expression" or (unit == "auto" and split != "train")


# ---------------------------------------------------------------------------------- grounded captions
_LINKED_PHRASE = re.compile(r"\[([^\]]+)\]\(([^)]*)\)")


def parse_linked_caption(text: str) -> tuple[str, list[tuple[int, int, list[str]]]]:
    """``"One [fox is standing](1) and [two cats](2, 3)."`` -> the plain caption and its phrases as
    ``(start, end, ["1"])`` spans into it (VideoGLaMM's MeViS / YouTube-VOS / VidSTG / HC-STVG GCG)."""
    caption, phrases, position = [], [], 0
    length = 0
    for match in _LINKED_PHRASE.finditer(text):
        before = text[position : match.start()]
        caption.append(before)
        length += len(before)
        phrase = match.group(1)
        ids = [i.strip() for i in match.group(2).split(",") if i.strip()]
        phrases.append((length, length + len(phrase), ids))
        caption.append(phrase)
        length += len(phrase)
        position = match.end()
    caption.append(text[position:])
    return "".join(caption), phrases
