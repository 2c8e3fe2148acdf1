"""SA-1B (Segment Anything 1B): class-agnostic masks for stage 1, task ``img_genseg``.

SA-1B has no official validation split; ``val`` here is the images whose id is divisible by 1000 (0.1%),
``train`` the rest: deterministic, and the same whichever of the 1,000 archives were downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import require_dir
from data_recipes.framework.masks import to_rle
from data_recipes.framework.media import image_media
from data_recipes.framework.recipe import Plan

CATEGORIES = [{"id": 1, "name": "object", "isthing": True}]
VAL_EVERY = 1000


def _image_id(stem: str) -> int | None:
    """``sa_223750`` -> 223750."""
    number = stem.removeprefix("sa_")
    return int(number) if number.isdigit() else None


class SA1B(Recipe):
    name = "sa1b"
    task = "img_genseg"
    splits = ("train", "val")
    layout = (
        "sa_<id>.jpg + sa_<id>.json pairs as the archives unpack (sa_000000.tar ... sa_000999.tar), "
        "directly under --root or in one sub-folder per archive (sa_000000/sa_1.jpg)"
    )
    items_per_shard = 500

    def _folders(self, root: Path) -> list[Path]:
        subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [root, *subfolders]

    def check_layout(self, root: Path, split: str) -> None:
        require_dir(root, "the SA-1B folder")
        for folder in self._folders(root):
            with os.scandir(folder) as entries:
                if any(e.name.startswith("sa_") and e.name.endswith(".json") for e in entries):
                    return
        raise LayoutError(
            f"expected sa_<id>.json + sa_<id>.jpg files in {root} or its sub-folders, found none"
        )

    def _pairs(self, root: Path, split: str) -> Iterator[tuple[str, str]]:
        for folder in self._folders(root):
            names = sorted(n for n in os.listdir(folder) if n.startswith("sa_") and n.endswith(".json"))
            for name in names:
                image_id = _image_id(name[: -len(".json")])
                if image_id is None:
                    continue
                if (image_id % VAL_EVERY == 0) == (split == "val"):
                    yield str(folder / name), str(folder / f"{name[: -len('.json')]}.jpg")

    def plan(self, root: Path, split: str) -> Plan:
        return Plan(items=self._pairs(root, split), categories=CATEGORIES)

    def describe(self, item: Any) -> str:
        return item[0]

    def convert(self, item: tuple[str, str]) -> Iterator[ConvertedSample]:
        json_path, image_path = Path(item[0]), Path(item[1])
        if not image_path.is_file():
            raise SkipItem("image file missing")
        record = json.loads(json_path.read_bytes())
        info = record["image"]
        media, (height, width) = image_media(image_path)
        if (height, width) != (info["height"], info["width"]):
            raise ValueError(
                f"image is {width}x{height} but {json_path} says {info['width']}x{info['height']}"
            )
        objects = [
            {
                "id": int(ann["id"]),
                "category_id": 1,
                "iscrowd": False,
                "masks": [to_rle(ann["segmentation"], height, width)],
            }
            for ann in record["annotations"]
        ]
        if not objects:
            raise SkipItem("no annotations")
        sample = {"height": height, "width": width, "num_frames": 1, "objects": objects}
        yield ConvertedSample(id=f"{info['image_id']}", json=sample, media=media)


RECIPES = [SA1B()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
