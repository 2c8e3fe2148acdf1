"""VIPSeg (video panoptic segmentation, 124 classes: 58 things, 66 stuff), task ``vid_genseg``.

Read from the 720P conversion the dataset's repository makes (``change2_720p.py``): frames
``VIPSeg_720P/images/<video>/<frame>.jpg`` and label PNGs ``VIPSeg_720P/panomasks/<video>/<frame>.png``.
A label PNG (16-bit greyscale) holds per pixel 0 (unlabelled), ``c + 1`` for a region of class ``c``
without an instance id (every stuff class), or ``(c + 1) * 100 + k`` for instance ``k`` of thing class
``c`` (values >= 125), with ``c`` the 0-based id of ``panoVIPSeg_categories.json``, as the dataset's
``create_panoptic_video_labels.py`` reads them. Each distinct value of a video is one object (track), whose
id is the value: one object per stuff class, one per thing instance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes._video import frame_times, frames_and_labels, label_tracks, read_split_list
from data_recipes.framework import ConvertedSample, LayoutError, Recipe
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_dir, require_file
from data_recipes.framework.recipe import Plan

#: VIPSeg's frames are a subset of VSPW's 15 fps extraction, named by their frame number at that rate.
FPS = 15.0
#: Label values from this one on are ``(class + 1) * 100 + instance``; below it, ``class + 1``.
INSTANCE_FROM = 125


def category_of(value: int) -> int:
    """The 0-based class id of a VIPSeg label value."""
    return (value if value < INSTANCE_FROM else value // 100) - 1


class VIPSeg(Recipe):
    name = "vipseg"
    task = "vid_genseg"
    modality = "video"
    splits = ("train", "val")
    items_per_shard = 100
    layout = (
        "VIPSeg_720P/images/<video>/<frame>.jpg, VIPSeg_720P/panomasks/<video>/<frame>.png and "
        "VIPSeg_720P/panoVIPSeg_categories.json, with the split lists train.txt / val.txt beside VIPSeg_720P "
        "(as the dataset's repository has them) or inside it"
    )

    def _base(self, root: Path) -> Path:
        return root / "VIPSeg_720P"

    def split_file(self, root: Path, split: str) -> Path:
        candidates = [root / f"{split}.txt", self._base(root) / f"{split}.txt"]
        for path in candidates:
            if path.is_file():
                return path
        raise LayoutError(
            f"expected the {split} video list at {candidates[0]} or {candidates[1]}, found neither"
        )

    def check_layout(self, root: Path, split: str) -> None:
        base = require_dir(self._base(root), "the 720P conversion VIPSeg_720P")
        require_dir(base / "images", "the frame folders")
        require_dir(base / "panomasks", "the label PNG folders")
        require_file(base / "panoVIPSeg_categories.json", "the category list")
        self.split_file(root, split)

    def read_categories(self, root: Path) -> list[dict[str, Any]]:
        path = self._base(root) / "panoVIPSeg_categories.json"
        records = load_json(path, "the category list")
        if not isinstance(records, list):
            raise LayoutError(f"{path} should hold a list of categories")
        return [
            {"id": int(c["id"]), "name": str(c["name"]), "isthing": bool(c["isthing"])}
            for c in sorted(records, key=lambda c: int(c["id"]))
        ]

    def plan(self, root: Path, split: str) -> Plan:
        categories = self.read_categories(root)
        known = tuple(c["id"] for c in categories)
        things = tuple(c["id"] for c in categories if c["isthing"])
        base = str(self._base(root))
        items = [(video, base, known, things) for video in read_split_list(self.split_file(root, split))]
        return Plan(items=items, num_items=len(items), categories=categories)

    def describe(self, item: Any) -> str:
        return f"video {item[0]}"

    def objects(
        self, tracks: dict[int, list[Any]], known: tuple[int, ...], things: tuple[int, ...]
    ) -> list[dict]:
        """One object per label value (the VGD builder keeps only thing instances)."""
        objects = []
        for value, masks in tracks.items():
            category = category_of(value)
            if category not in known:
                raise ValueError(
                    f"label value {value} is class {category}, not in panoVIPSeg_categories.json"
                )
            objects.append({"id": value, "category_id": category, "iscrowd": False, "masks": masks})
        return objects

    def convert(self, item: tuple[str, str, tuple[int, ...], tuple[int, ...]]) -> Iterator[ConvertedSample]:
        video, base, known, things = item
        paths, media, height, width, labels = frames_and_labels(
            Path(base) / "images" / video, Path(base) / "panomasks" / video
        )
        tracks = label_tracks(labels, keep=lambda value: value != 0)
        sample = {
            "height": height,
            "width": width,
            "num_frames": len(paths),
            "frame_times": frame_times([p.name for p in paths], FPS),
            "objects": self.objects(tracks, known, things),
        }
        yield ConvertedSample(id=video, json=sample, media=media)


RECIPES = [VIPSeg()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
