"""What the video recipes share: frame numbers and times from frame file names, frame listings, split
lists, per-object tracks from label PNGs or per-frame RLEs, the sample unit of referring sets (a video or
one expression), and the ``[phrase](ids)`` captions of the VideoGLaMM sets.

A private module (``_`` prefix): ``python -m data_recipes`` lists the recipes of the public modules only.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.framework.masks import index_png, mask_to_rle, to_rle
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import SkipItem

_TRAILING_NUMBER = re.compile(r"(\d+)$")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_SUFFIXES = (".jpg", ".jpeg")

#: ``--unit`` values: one sample per video (every expression a reference), per expression, or by split.
UNITS = ("auto", "video", "expression")


# ------------------------------------------------------------------------------------------------ frames
def frame_number(name: str) -> int | None:
    """The frame number a file name ends with (``00045.jpg`` -> 45, ``img_0012.png`` -> 12), or None."""
    match = _TRAILING_NUMBER.search(Path(name).stem)
    return int(match.group(1)) if match else None


def frame_times(names: Sequence[str], fps: float) -> list[float]:
    """Seconds of each frame: its file number over the dataset's frame rate, so gaps in the numbering
    (YouTube-VIS keeps every 5th frame) stay gaps in time; names without a number give ``index / fps``.

    Raises:
        ValueError: numbers that do not strictly increase in the given (frame) order.
    """
    numbers = [frame_number(n) for n in names]
    if None in numbers:
        return [round(i / fps, 6) for i in range(len(names))]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):  # type: ignore[operator]
        raise ValueError(f"frame numbers do not increase in frame order: {numbers[:8]}...")
    return [round(n / fps, 6) for n in numbers]  # type: ignore[operator]


def sort_frames(names: Iterable[str]) -> list[str]:
    """Frame names in time order: by their trailing number where every name has one, else by name."""
    names = list(names)
    numbers = [frame_number(n) for n in names]
    if None in numbers:
        return sorted(names)
    return [n for _, n in sorted(zip(numbers, names))]


def list_frames(folder: Path, suffixes: Iterable[str] = FRAME_SUFFIXES) -> list[Path]:
    """The frame files of one video folder in time order (hidden files ignored)."""
    suffixes = tuple(suffixes)
    paths = {
        p.name: p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")
    }
    return [paths[name] for name in sort_frames(paths)]


def read_split_list(path: Path) -> list[str]:
    """A split file of video names, one per line (blank lines and surrounding spaces ignored)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ tracks
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


def read_label_pngs(pngs: Sequence[Path | None], height: int, width: int) -> list[np.ndarray | None]:
    """Palette / greyscale label PNGs (``None`` or a missing file: a frame not annotated) as arrays.

    Raises:
        ValueError: a PNG whose size differs from the frames'.
    """
    labels = []
    for path in pngs:
        values = None if path is None or not path.is_file() else index_png(path.read_bytes())
        if values is not None and values.shape != (height, width):
            raise ValueError(
                f"annotation {path} is {values.shape[1]}x{values.shape[0]}, frames {width}x{height}"
            )
        labels.append(values)
    return labels


def id_tracks(
    labels: Sequence[np.ndarray | None], object_ids: Iterable[int]
) -> dict[int, list[dict[str, Any] | None]]:
    """Per-object masks from label maps (value = object id) for exactly ``object_ids``: an object with no
    pixel anywhere gets ``null`` on every frame."""
    ids = [int(i) for i in object_ids]
    tracks = label_tracks(labels, set(ids).__contains__)
    return {i: tracks.get(i, [None] * len(labels)) for i in ids}


def frames_and_labels(
    frame_dir: Path, mask_dir: Path
) -> tuple[list[Path], dict[str, bytes], int, int, list[np.ndarray | None]]:
    """A video's frame files (time order), their media members and size, and the label PNG beside each
    frame (same file stem in ``mask_dir``; ``None`` where there is none: the frame is not annotated).

    Raises:
        SkipItem: ``video folder missing``, ``no frames``, ``no masks`` (no frame has a label PNG).
        ValueError: a label PNG whose size differs from the frames'.
    """
    if not frame_dir.is_dir():
        raise SkipItem("video folder missing")
    paths = list_frames(frame_dir)
    if not paths:
        raise SkipItem("no frames")
    pngs = [mask_dir / f"{path.stem}.png" for path in paths]
    if not any(png.is_file() for png in pngs):
        raise SkipItem("no masks")
    media, (height, width) = frame_media(paths)
    return paths, media, height, width, read_label_pngs(pngs, height, width)


def palette_tracks(
    pngs: Sequence[Path | None], object_ids: Iterable[int], height: int, width: int
) -> dict[int, list[dict[str, Any] | None]]:
    """:func:`id_tracks` of label PNGs (palette index = object id; ``None`` or a missing file: a frame
    not annotated).

    Raises:
        ValueError: a PNG whose size differs from the frames'.
    """
    return id_tracks(read_label_pngs(pngs, height, width), object_ids)


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


# ------------------------------------------------------------------------------- referring sample unit
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
