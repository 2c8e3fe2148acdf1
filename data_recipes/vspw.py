"""VSPW (video scene parsing, 124 classes, semantic only), task ``vid_genseg``.

Read from the 480p release: ``data/<video>/origin/<frame>.jpg`` and ``data/<video>/mask/<frame>.png``
(palette PNGs of class indices), the split lists ``train.txt`` / ``val.txt`` and the class list
``label_num_dic_final.json`` (``{"name": "index"}``). As the dataset's README says, mask value 0 is
"others" and 255 the void label, and both are void in evaluation: neither becomes an object, and the
categories are classes 1-124 with their dataset indices as ids. Any other value outside the class list is
treated as void too (the X2SAM code drops stray values 253 / 254 of the val masks the same way). One
object per class present in the video (id = category id = class index), with a mask on the frames where
the class is present. Frames are dense at 15 fps, named by their frame number at that rate.
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

FPS = 15.0
#: VSPW's void label (``ignore_label`` of every sample); 0 ("others") is void as well.
IGNORE_LABEL = 255
OTHERS = 0


class VSPW(Recipe):
    name = "vspw"
    task = "vid_genseg"
    modality = "video"
    splits = ("train", "val")
    items_per_shard = 50
    layout = (
        "the VSPW_480p folder: data/<video>/origin/<frame>.jpg, data/<video>/mask/<frame>.png, "
        "train.txt, val.txt and label_num_dic_final.json"
    )

    def check_layout(self, root: Path, split: str) -> None:
        require_dir(root / "data", "the video folders data/")
        require_file(root / f"{split}.txt", f"the {split} video list")
        require_file(root / "label_num_dic_final.json", "the class list")

    def read_categories(self, root: Path) -> list[dict[str, Any]]:
        path = root / "label_num_dic_final.json"
        table = load_json(path, "the class list")
        if not isinstance(table, dict):
            raise LayoutError(f"{path} should map class names to indices")
        categories = []
        for name, index in table.items():
            index = int(index)  # the file stores indices as strings
            if index not in (OTHERS, IGNORE_LABEL):
                categories.append({"id": index, "name": str(name), "isthing": False})
        return sorted(categories, key=lambda c: c["id"])

    def plan(self, root: Path, split: str) -> Plan:
        categories = self.read_categories(root)
        known = tuple(c["id"] for c in categories)
        items = [(video, str(root / "data"), known) for video in read_split_list(root / f"{split}.txt")]
        return Plan(items=items, num_items=len(items), categories=categories)

    def describe(self, item: Any) -> str:
        return f"video {item[0]}"

    def convert(self, item: tuple[str, str, tuple[int, ...]]) -> Iterator[ConvertedSample]:
        video, data, known = item
        paths, media, height, width, labels = frames_and_labels(
            Path(data) / video / "origin", Path(data) / video / "mask"
        )
        classes = set(known)
        tracks = label_tracks(labels, keep=classes.__contains__)
        objects = [
            {"id": c, "category_id": c, "iscrowd": False, "masks": masks} for c, masks in tracks.items()
        ]
        sample = {
            "height": height,
            "width": width,
            "num_frames": len(paths),
            "frame_times": frame_times([p.name for p in paths], FPS),
            "objects": objects,
            "ignore_label": IGNORE_LABEL,
        }
        yield ConvertedSample(id=video, json=sample, media=media)


RECIPES = [VSPW()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
