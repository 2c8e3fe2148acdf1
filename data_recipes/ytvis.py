"""YouTube-VIS 2019 (``ytvis19``, task ``vid_genseg``) and 2021 (``ytvis21``, task ``vid_ovseg``).

One sample per video: its annotated frames (the JPEGs the json lists, every 5th frame of the 30 fps
video) as frame members, and one object per annotation track with a mask per frame (``null`` where the
track has none). Splits:

- ``train``: the official training videos except the held-out ones;
- ``val``: the held-out training videos, those whose json ``id`` is divisible by 10 (about 10%): the
  official validation set has no public masks, so a split scored here must come out of the training set;
- ``valid``: the official validation videos. Their json has no annotations, so the samples have no
  objects: they are for predictions to submit to the official server, not for local scores (a json of the
  same layout that does carry annotations gives objects).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes._video import frame_times
from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_dir, require_keys
from data_recipes.framework.masks import to_rle
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import Plan

#: Frame rate of the source videos; the frame file numbers count frames at this rate.
FPS = 30.0
#: Training videos whose json id is divisible by this form the held-out ``val`` split.
HOLDOUT_EVERY = 10


class YouTubeVIS(Recipe):
    """The YouTube-VIS layout, any year: ``<folder>.json`` (2019) or ``<folder>/instances.json`` (2021)
    beside ``<folder>/JPEGImages/<video>/<frame>.jpg``, for ``<folder>`` = ``train`` or ``valid``."""

    modality = "video"
    splits = ("train", "val", "valid")
    items_per_shard = 100
    layout = (
        "train.json + train/JPEGImages/<video>/<frame>.jpg and valid.json + valid/JPEGImages/... (2019), or "
        "train/instances.json and valid/instances.json beside the JPEGImages folders (2021)"
    )

    @staticmethod
    def _folder(split: str) -> str:
        return "valid" if split == "valid" else "train"

    def annotation_file(self, root: Path, split: str) -> Path:
        folder = self._folder(split)
        candidates = [root / f"{folder}.json", root / folder / "instances.json"]
        for path in candidates:
            if path.is_file():
                return path
        raise LayoutError(
            f"expected the {self.name} {folder} annotations at {candidates[0]} (2019 layout) or "
            f"{candidates[1]} (2021 layout), found neither"
        )

    def check_layout(self, root: Path, split: str) -> None:
        require_dir(root, f"the {self.name} folder")
        self.annotation_file(root, split)
        require_dir(root / self._folder(split) / "JPEGImages", f"the {self._folder(split)} frame folders")

    def keep_video(self, video_id: int, split: str) -> bool:
        """Whether a video of the split's annotation file belongs to the split (the hold-out rule)."""
        if split == "valid":
            return True
        return (video_id % HOLDOUT_EVERY == 0) == (split == "val")

    def plan(self, root: Path, split: str) -> Plan:
        path = self.annotation_file(root, split)
        data = load_json(path, f"the {self.name} annotation file")
        require_keys(data, ("videos", "categories"), "the annotation file", path)
        annotations = data.get("annotations") or []
        by_video: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in annotations:
            by_video[int(ann["video_id"])].append(ann)
        categories = [
            {"id": int(c["id"]), "name": str(c["name"]), "isthing": True}
            for c in sorted(data["categories"], key=lambda c: int(c["id"]))
        ]
        frames_dir = str(root / self._folder(split) / "JPEGImages")
        videos = sorted(
            (v for v in data["videos"] if self.keep_video(int(v["id"]), split)), key=lambda v: int(v["id"])
        )
        items = [
            {
                "video_id": int(v["id"]),
                "file_names": list(v["file_names"]),
                "height": int(v["height"]),
                "width": int(v["width"]),
                "annotations": sorted(by_video.get(int(v["id"]), []), key=lambda a: int(a["id"])),
                "annotated": bool(annotations),
                "frames_dir": frames_dir,
            }
            for v in videos
        ]
        return Plan(items=items, num_items=len(items), categories=categories)

    def describe(self, item: Any) -> str:
        names = item["file_names"]
        return f"video {item['video_id']} ({Path(names[0]).parent if names else '?'})"

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        names = item["file_names"]
        if not names:
            raise SkipItem("no frames")
        if item["annotated"] and not item["annotations"]:
            raise SkipItem("no annotations")
        paths = [Path(item["frames_dir"]) / name for name in names]
        if not all(p.is_file() for p in paths):
            raise SkipItem("frame file missing")
        media, (height, width) = frame_media(paths)
        if (height, width) != (item["height"], item["width"]):
            raise ValueError(
                f"frames are {width}x{height} but the json says {item['width']}x{item['height']}"
            )
        objects = []
        for ann in item["annotations"]:
            segmentations = ann["segmentations"]
            if len(segmentations) != len(names):
                raise ValueError(
                    f"annotation {ann['id']} has {len(segmentations)} masks for {len(names)} frames"
                )
            objects.append(
                {
                    "id": int(ann["id"]),
                    "category_id": int(ann["category_id"]),
                    "iscrowd": bool(ann.get("iscrowd", 0)),
                    "masks": [None if s is None else to_rle(s, height, width) for s in segmentations],
                }
            )
        sample = {
            "height": height,
            "width": width,
            "num_frames": len(names),
            "frame_times": frame_times(names, FPS),
            "objects": objects,
            "video_id": item["video_id"],  # the json id: what a results file for the official server names
        }
        yield ConvertedSample(id=Path(names[0]).parent.as_posix(), json=sample, media=media)


class YTVIS19(YouTubeVIS):
    name = "ytvis19"
    task = "vid_genseg"


class YTVIS21(YouTubeVIS):
    name = "ytvis21"
    task = "vid_ovseg"


RECIPES = [YTVIS19(), YTVIS21()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
