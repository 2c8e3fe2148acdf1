"""DAVIS 2017: semi-supervised video object segmentation (``davis17``, vid_objseg: each object's mask on
its first annotated frame is the prompt) and the referring expressions of Khoreva et al. (ACCV 2018,
``davis17_ref``, vid_refseg).

Frames are ``JPEGImages/480p/<video>/00000.jpg ...`` at 24 fps; annotations are palette PNGs whose index
is the object id (255, where a release uses it, is a void boundary, not an object). Splits are
``ImageSets/2017/train.txt`` (60 videos) and ``val.txt`` (30). The referring expressions are four text
files, ``davis_text_annotations/Davis17_annot{1,2}.txt`` (written looking at the first frame) and
``Davis17_annot{1,2}_full_video.txt`` (the whole video), one line per object: ``<video> <object id>
"<expression>"``; annotator 2's files are Latin-1. Three video names are misspelt there (``clasic-car``,
``dog-scale``, ``motor-bike``) and are mapped to the DAVIS names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes._video import (
    JPEG_SUFFIXES,
    add_unit_argument,
    frame_times,
    id_tracks,
    list_frames,
    per_expression,
    read_label_pngs,
)
from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import add_option, main
from data_recipes.framework.layout import require_dir, require_file
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import Plan
from data_recipes.youtube_vos import VideoItem, objseg_objects, referring_sample

DAVIS_FPS = 24.0
VOID = 255
#: The text files, in the order their expressions are listed: (file stem, annotator, written from).
TEXT_FILES = (
    ("Davis17_annot1", 1, "first_frame"),
    ("Davis17_annot1_full_video", 1, "full_video"),
    ("Davis17_annot2", 2, "first_frame"),
    ("Davis17_annot2_full_video", 2, "full_video"),
)
#: Misspelt video names in the text files -> the DAVIS names they may stand for (the first that exists).
NAME_FIXES = {
    "clasic-car": ("classic-car",),
    "dog-scale": ("dogs-scale", "dogs-scaled"),
    "motor-bike": ("motorbike",),
}


def davis_folder(root: Path) -> Path:
    """``root/DAVIS`` as the trainval archive unpacks, or ``root`` itself when it is that folder."""
    return root / "DAVIS" if (root / "DAVIS").is_dir() else root


def read_split(davis: Path, split: str) -> list[str]:
    path = require_file(davis / "ImageSets" / "2017" / f"{split}.txt", f"DAVIS ImageSets/2017/{split}.txt")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_expressions(path: Path) -> list[tuple[str, int, str]]:
    """``(video, object id, expression)`` per line of a Khoreva text file (UTF-8, else Latin-1)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(None, 2)
        if not parts:
            continue
        if len(parts) < 3 or not parts[1].isdigit():
            raise LayoutError(
                f"{path} line {n}: expected '<video> <object id> \"<expression>\"', got {line!r}"
            )
        expression = parts[2].strip()
        if len(expression) >= 2 and expression[0] == expression[-1] == '"':
            expression = expression[1:-1]
        rows.append((parts[0], int(parts[1]), " ".join(expression.split())))
    return rows


class _Davis(Recipe):
    modality = "video"
    splits = ("train", "val")
    items_per_shard = 20

    def __init__(self) -> None:
        self.fps, self.annotations = DAVIS_FPS, "Annotations"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_option(parser, "--fps", type=float, default=None, help="frame rate of the frame numbers")
        add_option(
            parser,
            "--annotations",
            default="Annotations",
            help="DAVIS mask folder (Annotations; ReferFormer reads Annotations_unsupervised for Ref-DAVIS)",
        )

    def configure(self, args: argparse.Namespace) -> None:
        self.fps = args.fps or DAVIS_FPS
        self.annotations = args.annotations

    def options(self) -> dict[str, Any]:
        return {"fps": self.fps, "annotations": self.annotations}

    def check_layout(self, root: Path, split: str) -> None:
        davis = davis_folder(root)
        require_dir(davis / "JPEGImages" / "480p", "DAVIS JPEGImages/480p")
        require_dir(davis / self.annotations / "480p", f"DAVIS {self.annotations}/480p")
        require_file(davis / "ImageSets" / "2017" / f"{split}.txt", f"DAVIS ImageSets/2017/{split}.txt")

    def _item(self, davis: Path, video: str, **fields: Any) -> VideoItem:
        return VideoItem(
            video=video,
            frames=(),
            frames_dir=str(davis / "JPEGImages" / "480p" / video),
            annotations_dir=str(davis / self.annotations / "480p" / video),
            **fields,
        )

    def describe(self, item: VideoItem) -> str:
        return f"video {item.video} ({item.sample_id})"

    def _read_video(self, item: VideoItem) -> tuple[dict[str, bytes], int, int, list[str], list[Any]]:
        folder = Path(item.frames_dir)
        files = list_frames(folder, JPEG_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise SkipItem("video frames missing")
        media, (height, width) = frame_media(files)
        names = [f.stem for f in files]
        labels = read_label_pngs([Path(item.annotations_dir) / f"{n}.png" for n in names], height, width)
        return media, height, width, names, labels


class Davis2017(_Davis):
    name = "davis17"
    task = "vid_objseg"
    layout = (
        "DAVIS/JPEGImages/480p/<video>/00000.jpg, DAVIS/Annotations/480p/<video>/00000.png (palette), "
        "DAVIS/ImageSets/2017/{train,val}.txt (the DAVIS/ folder itself may be --root)"
    )

    def plan(self, root: Path, split: str) -> Plan:
        davis = davis_folder(root)
        items = [self._item(davis, video, sample_id=video) for video in read_split(davis, split)]
        return Plan(items=items, num_items=len(items))

    def convert(self, item: VideoItem) -> Iterator[ConvertedSample]:
        media, height, width, names, labels = self._read_video(item)
        ids = sorted({int(v) for frame in labels if frame is not None for v in np.unique(frame)} - {0, VOID})
        tracks = id_tracks(labels, ids)
        sample = {
            "video": item.video,
            "height": height,
            "width": width,
            "num_frames": len(names),
            "frame_times": frame_times(names, self.fps),
            "objects": objseg_objects(tracks),
        }
        yield ConvertedSample(id=item.sample_id, json=sample, media=media)


class Davis2017Referring(_Davis):
    name = "davis17_ref"
    task = "vid_refseg"
    layout = (
        "the davis17 layout plus davis_text_annotations/Davis17_annot{1,2}[_full_video].txt (beside DAVIS/ "
        "or inside it)"
    )

    def __init__(self) -> None:
        super().__init__()
        self.unit = "auto"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        add_unit_argument(parser)

    def configure(self, args: argparse.Namespace) -> None:
        super().configure(args)
        self.unit = args.unit

    def options(self) -> dict[str, Any]:
        return {**super().options(), "unit": self.unit}

    @staticmethod
    def _text_folder(root: Path) -> Path:
        for folder in (root / "davis_text_annotations", davis_folder(root) / "davis_text_annotations"):
            if folder.is_dir():
                return folder
        return root / "davis_text_annotations"

    def check_layout(self, root: Path, split: str) -> None:
        super().check_layout(root, split)
        folder = self._text_folder(root)
        require_file(
            folder / "Davis17_annot1.txt",
            "the DAVIS referring expressions davis_text_annotations/Davis17_annot1.txt",
        )

    def plan(self, root: Path, split: str) -> Plan:
        davis = davis_folder(root)
        sets = [s for s in ("train", "val") if (davis / "ImageSets" / "2017" / f"{s}.txt").is_file()]
        known = {video for s in sets for video in read_split(davis, s)}
        folder = self._text_folder(root)
        by_video: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {}
        for stem, annotator, kind in TEXT_FILES:
            path = folder / f"{stem}.txt"
            if not path.is_file():
                continue
            for video, object_id, text in read_expressions(path):
                if video not in known:
                    video = next((v for v in NAME_FIXES.get(video, ()) if v in known), video)
                exp_id = f"{object_id}-annot{annotator}-{kind}"
                by_video.setdefault(video, []).append((exp_id, text, (object_id,)))
        items = []
        for video in read_split(davis, split):
            expressions = tuple(sorted(by_video.get(video, ()), key=lambda e: (e[2], e[0])))
            if not expressions:
                continue
            if per_expression(self.unit, split):
                items += [
                    self._item(davis, video, expressions=(e,), sample_id=f"{video}/{e[0]}")
                    for e in expressions
                ]
            else:
                items.append(self._item(davis, video, expressions=expressions, sample_id=video))
        return Plan(items=items, num_items=len(items))

    def convert(self, item: VideoItem) -> Iterator[ConvertedSample]:
        media, height, width, names, labels = self._read_video(item)
        ids = sorted({i for _, _, ids in item.expressions for i in ids})
        tracks = id_tracks(labels, ids)

        sample = referring_sample(replace(item, frames=tuple(names)), tracks, height, width, self.fps)
        for reference in sample["references"]:
            object_id, annotator, kind = reference["id"].split("-")
            reference["annotator"], reference["written_from"] = int(annotator.removeprefix("annot")), kind
        yield ConvertedSample(id=item.sample_id, json=sample, media=media)


RECIPES = [Davis2017(), Davis2017Referring()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))


__all__ = ["RECIPES", "Davis2017", "Davis2017Referring", "LayoutError"]
