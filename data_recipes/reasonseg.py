"""ReasonSeg (LISA): image reasoning segmentation, task ``img_reaseg``.

The release (``dvlab-research/LISA``) is one folder per split, ``ReasonSeg/{train,val,test}/``, of
``<name>.jpg`` + ``<name>.json`` pairs. The json is LabelMe-style: ``text`` (the queries, a list),
``is_sentence`` (long sentence or short phrase), ``shapes`` (``{"label", "points": [[x, y], ...]}``;
label ``target`` or ``ignore``, ``flag`` shapes are deprecated and skipped). Some files are cp1252, not
UTF-8. ``ReasonSeg/explanatory/train.json`` (optional) holds an explanation per training image.

The mask is drawn as LISA's ``get_mask_from_json`` draws it: polygons sorted by filled area, largest
first, each filled with its boundary (coordinates truncated to integers), ``ignore`` shapes painting 255
and the others 1, so a small shape drawn later wins where shapes overlap. One object (id 1) is the pixels
left at 1; the pixels left at 255 become a second object (id 2) with ``iscrowd: true``, never a target
(LISA's scorer leaves those pixels out of both masks; ours scores them as background).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_dir
from data_recipes.framework.masks import mask_to_rle
from data_recipes.framework.media import image_media
from data_recipes.framework.recipe import Plan

TARGET_ID, IGNORE_ID = 1, 2
_IGNORE_VALUE = 255


def read_annotation(path: Path) -> dict[str, Any]:
    """A ReasonSeg json (UTF-8, else cp1252 as LISA falls back to)."""
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(data.decode("cp1252"))


def _polygon(points: list[list[float]]) -> list[tuple[int, int]]:
    """Vertices as LISA passes them to OpenCV: ``np.int32`` truncation toward zero."""
    return [(int(x), int(y)) for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2)]


def label_map(shapes: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """``[H, W]`` uint8: 0 background, 1 target, 255 ignore (LISA's drawing order and rules)."""
    from PIL import Image, ImageDraw

    def draw(points: list[tuple[int, int]], value: int, canvas: Image.Image) -> None:
        pen = ImageDraw.Draw(canvas)
        if len(points) >= 2:
            pen.polygon(points, fill=value, outline=value)
        elif points:
            pen.point(points, fill=value)

    valid = []
    for shape in shapes:
        if str(shape.get("label", "")).lower() == "flag" or not shape.get("points"):
            continue
        points = _polygon(shape["points"])
        canvas = Image.new("L", (width, height), 0)
        draw(points, 1, canvas)
        valid.append((int(np.asarray(canvas).sum()), points, "ignore" in str(shape["label"]).lower()))
    # Largest first (LISA sorts by filled area, descending): smaller shapes are painted over larger ones.
    valid.sort(key=lambda v: -v[0])
    canvas = Image.new("L", (width, height), 0)
    for _, points, ignore in valid:
        draw(points, _IGNORE_VALUE if ignore else 1, canvas)
    return np.asarray(canvas)


def _flag(value: Any) -> bool:
    """``is_sentence`` as a bool (files hold true / false; accept "yes" / "no" too)."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "1")
    return bool(value)


class ReasonSeg(Recipe):
    name = "reasonseg"
    task = "img_reaseg"
    splits = ("train", "val", "test")
    layout = (
        "ReasonSeg/{train,val,test}/<name>.jpg + <name>.json (LabelMe-style: text, is_sentence, shapes), "
        "optionally ReasonSeg/explanatory/train.json; --root may also be the ReasonSeg folder itself"
    )
    items_per_shard = 200

    @staticmethod
    def base(root: Path) -> Path:
        return root / "ReasonSeg" if (root / "ReasonSeg").is_dir() else root

    def check_layout(self, root: Path, split: str) -> None:
        folder = require_dir(self.base(root) / split, f"the ReasonSeg {split} folder")
        if not any(folder.glob("*.json")):
            raise LayoutError(f"expected <name>.jpg + <name>.json pairs in {folder}, found no json")

    def plan(self, root: Path, split: str) -> Plan:
        base = self.base(root)
        explanations: dict[str, str] = {}
        explanatory = base / "explanatory" / f"{split}.json"
        if explanatory.is_file():
            for entry in load_json(explanatory, "the ReasonSeg explanations"):
                if entry.get("outputs"):
                    explanations[str(entry["image"])] = str(entry["outputs"]).strip()
        names = sorted(p.name for p in (base / split).glob("*.json"))
        items = [
            (str(base / split / name), explanations.get(name[: -len(".json")] + ".jpg")) for name in names
        ]
        return Plan(items=items, num_items=len(items))

    def describe(self, item: Any) -> str:
        return item[0]

    def convert(self, item: tuple[str, str | None]) -> Iterator[ConvertedSample]:
        json_path = Path(item[0])
        image_path = json_path.with_suffix(".jpg")
        if not image_path.is_file():
            raise SkipItem("image file missing")
        record = read_annotation(json_path)
        queries = [" ".join(str(t).split()) for t in record.get("text") or []]
        queries = [q for q in queries if q]
        if not queries:
            raise SkipItem("no query")
        media, (height, width) = image_media(image_path)
        labels = label_map(record.get("shapes") or [], height, width)
        target = labels == 1
        if not target.any():
            raise SkipItem("no target region")
        objects = [{"id": TARGET_ID, "iscrowd": False, "masks": [mask_to_rle(target)]}]
        ignore = labels == _IGNORE_VALUE
        if ignore.any():
            objects.append({"id": IGNORE_ID, "iscrowd": True, "masks": [mask_to_rle(ignore)]})
        sample = {
            "height": height,
            "width": width,
            "num_frames": 1,
            "objects": objects,
            "query": queries[0],
            "references": [{"text": q, "object_ids": [TARGET_ID]} for q in queries],
            "is_sentence": _flag(record.get("is_sentence")),
        }
        if item[1]:
            sample["explanation"] = item[1]
        yield ConvertedSample(id=json_path.stem, json=sample, media=media)


RECIPES = [ReasonSeg()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
