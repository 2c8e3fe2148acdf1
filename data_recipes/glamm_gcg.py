"""Grounded conversation generation sets released with GLaMM (GranD-f): task ``img_gcgseg``.

``--root`` is GLaMM's data folder (``mbzuai-oryx/groundingLMM`` docs/datasets.md):

```
GranDf/annotations/train/GranDf_HA_GCG_train.json       grandf_gcg train    {file_name, caption, groundings}
GranDf/annotations/train/OpenPsgGCG_{train,val}.json    psg_gcg             same format as GranD-f
GranDf/annotations/train/RefCOCOg_GCG_{train,val}.json  refcocog_gcg        [{key: {img_file_name, caption, refs}}]
GranDf/annotations/train/flickr_mergedGT_GCG_{train,val}.json  flickr_gcg   COCO json, captions on images
GranDf/annotations/val_test/{val,test}_gcg_coco_{caption,mask}_gt.json      grandf_gcg val / test
GranDf_HA_images/{train,val_test}/  (or GranDf/GranDf_HA_images/, where GLaMM's code looks)
coco_2014/train2014/  coco_2017/train2017/  flikcr_30k/train/ (GLaMM's spelling; flickr_30k/train too)
```

Every sample has ``caption`` and ``phrases: [{"span": [start, end], "object_ids": [...]}]`` whose spans
index the stored caption (Python string indices), and one object per mask. Spans are cleaned the same way
for every set: whitespace at a span's ends is trimmed, spans naming the same text are merged (their
objects together), and where two spans overlap the earlier one is cut at the start of the later one, as
GLaMM does for RefCOCOg (a span left empty is dropped). A phrase without a mask is left as plain text.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_file
from data_recipes.framework.masks import to_rle
from data_recipes.framework.media import image_media
from data_recipes.framework.recipe import Plan

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ text
def clean_phrases(caption: str, entries: list[tuple[int, int, list[int]]]) -> list[dict[str, Any]]:
    """``(start, end, object ids)`` spans of ``caption`` -> schema ``phrases`` (sorted, not overlapping).

    Raises:
        ValueError: a span outside the caption or inverted.
    """
    merged: dict[tuple[int, int], list[int]] = {}
    for start, end, ids in entries:
        if not 0 <= start < end <= len(caption):
            raise ValueError(f"span [{start}, {end}] is not inside the caption of {len(caption)} characters")
        while start < end and caption[start].isspace():
            start += 1
        while end > start and caption[end - 1].isspace():
            end -= 1
        if start == end or not ids:
            continue
        target = merged.setdefault((start, end), [])
        target.extend(i for i in ids if i not in target)
    kept: list[list[Any]] = []
    for (start, end), ids in sorted(merged.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        if kept and start < kept[-1][1]:
            previous = kept[-1]
            cut = start
            while cut > previous[0] and caption[cut - 1].isspace():
                cut -= 1
            if cut > previous[0]:
                previous[1] = cut
            else:
                kept.pop()
        kept.append([start, end, ids])
    return [{"span": [s, e], "object_ids": ids} for s, e, ids in kept]


def find_phrase(caption: str, phrase: str, start: int = 0) -> int:
    """Where ``phrase`` occurs in ``caption`` from ``start``, ignoring case (-1 if nowhere)."""
    lowered, needle = caption.lower(), phrase.lower()
    if len(lowered) != len(caption) or len(needle) != len(phrase):  # case folding changed lengths
        return caption.find(phrase, start)
    return lowered.find(needle, start)


def strip_caption(caption: str) -> tuple[str, int]:
    """GLaMM's ``caption.strip('"').strip()`` and how many characters it removed at the front."""
    once = caption.strip('"')
    lead = len(caption) - len(caption.lstrip('"'))
    twice = once.strip()
    return twice, lead + len(once) - len(once.lstrip())


# ---------------------------------------------------------------------------------------------- items
@dataclass
class GCGItem:
    """One image: its file, caption, masks (segmentation records by object id) and phrase spans."""

    id: str
    image: str
    caption: str
    objects: list[tuple[int, Any]] = field(default_factory=list)
    spans: list[tuple[int, int, list[int]]] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (height, width) the annotation states, checked against the image
    skip: str | None = None


class GCGRecipe(Recipe):
    """Shared by the four sets: the layout below --root, the image folder, writing a sample."""

    task = "img_gcgseg"
    splits: tuple[str, ...] = ("train", "val")
    items_per_shard = 500
    #: Image folders tried below --root (the first that exists), per split.
    image_folders: dict[str, tuple[str, ...]] = {}
    annotation_files: dict[str, str] = {}

    def __init__(self) -> None:
        self.images: Path | None = None

    @property
    def layout(self) -> str:  # type: ignore[override]
        files = ", ".join(f"GranDf/annotations/{f}" for f in self.annotation_files.values())
        folders = sorted({f for fs in self.image_folders.values() for f in fs})
        return f"{files}; images in {' or '.join(folders)} (or --images DIR)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if not any(a.dest == "images" for a in parser._actions):
            parser.add_argument("--images", type=Path, default=None, help="the image folder of the split")

    def configure(self, args: argparse.Namespace) -> None:
        self.images = getattr(args, "images", None)

    def options(self) -> dict[str, Any]:
        return {"images": str(self.images or "")}

    @staticmethod
    def annotations(root: Path) -> Path:
        flat = root / "annotations"  # --root may also be the GranDf folder itself
        return flat if flat.is_dir() and not (root / "GranDf").is_dir() else root / "GranDf" / "annotations"

    def annotation_path(self, root: Path, split: str) -> Path:
        return self.annotations(root) / self.annotation_files[split]

    def image_dir(self, root: Path, split: str) -> Path:
        if self.images is not None:
            return self.images
        candidates = [root / f for f in self.image_folders[split]]
        for folder in candidates:
            if folder.is_dir():
                return folder
        raise LayoutError(
            f"expected the {self.name} {split} images in {' or '.join(map(str, candidates))} "
            "(or pass --images DIR), found none"
        )

    def check_layout(self, root: Path, split: str) -> None:
        require_file(self.annotation_path(root, split), f"the {self.name} {split} annotation file")
        self.image_dir(root, split)

    def describe(self, item: Any) -> str:
        return f"sample {item.id} ({item.image})"

    def convert(self, item: GCGItem) -> Iterator[ConvertedSample]:
        if item.skip:
            raise SkipItem(item.skip)
        path = Path(item.image)
        if not path.is_file():
            raise SkipItem("image file missing")
        media, (height, width) = image_media(path)
        if item.size is not None and item.size != (height, width):
            raise ValueError(
                f"image is {width}x{height} but the annotation says {item.size[1]}x{item.size[0]}"
            )
        phrases = clean_phrases(item.caption, item.spans)
        if not phrases:
            raise SkipItem("no grounded phrase")
        # Every mask stays an object (the val / test scorer counts every ground-truth mask), also one whose
        # phrase was not found in the caption.
        objects = [
            {"id": object_id, "iscrowd": False, "masks": [to_rle(segmentation, height, width)]}
            for object_id, segmentation in item.objects
        ]
        sample = {
            "height": height,
            "width": width,
            "num_frames": 1,
            "objects": objects,
            "caption": item.caption,
            "phrases": phrases,
        }
        yield ConvertedSample(id=item.id, json=sample, media=media)


def _valid_polygons(segmentation: Any) -> Any:
    if isinstance(segmentation, list):
        return [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0] or None
    return segmentation or None


def _groundings_items(records: list[dict[str, Any]], image_dir: Path) -> list[GCGItem]:
    """GranD-f / OpenPSG GCG: ``{file_name, caption, groundings: {phrase: {token_positives, rle_masks}}}``;
    one object per RLE, the phrase refers to all of its RLEs."""
    items = []
    for record in records:
        caption, shift = strip_caption(str(record["caption"]))
        item = GCGItem(
            id=Path(record["file_name"]).stem, image=str(image_dir / record["file_name"]), caption=caption
        )
        for grounding in (record.get("groundings") or {}).values():
            start, end = (int(v) - shift for v in grounding["token_positives"])
            ids = []
            for rle in grounding.get("rle_masks") or []:
                item.objects.append((len(item.objects) + 1, rle))
                ids.append(len(item.objects))
            item.spans.append((start, end, ids))
        if not item.spans:
            item.skip = "no grounded phrase"
        items.append(item)
    return items


class GranDfGCG(GCGRecipe):
    """GranD-f's human-annotated GCG set: train (``GranDf_HA_GCG_train.json``), val and test (COCO-style
    caption and mask ground truth that GLaMM's scorer reads)."""

    name = "grandf_gcg"
    splits = ("train", "val", "test")
    annotation_files = {
        "train": "train/GranDf_HA_GCG_train.json",
        "val": "val_test/val_gcg_coco_caption_gt.json",
        "test": "val_test/test_gcg_coco_caption_gt.json",
    }
    image_folders = {
        "train": ("GranDf_HA_images/train", "GranDf/GranDf_HA_images/train"),
        "val": ("GranDf_HA_images/val_test", "GranDf/GranDf_HA_images/val_test"),
        "test": ("GranDf_HA_images/val_test", "GranDf/GranDf_HA_images/val_test"),
    }

    def mask_path(self, root: Path, split: str) -> Path:
        return self.annotations(root) / "val_test" / f"{split}_gcg_coco_mask_gt.json"

    def check_layout(self, root: Path, split: str) -> None:
        super().check_layout(root, split)
        if split != "train":
            require_file(self.mask_path(root, split), f"the GranD-f {split} mask ground truth")

    def plan(self, root: Path, split: str) -> Plan:
        image_dir = self.image_dir(root, split)
        if split == "train":
            records = load_json(self.annotation_path(root, split), "the GranD-f train annotations")
            items = _groundings_items(records, image_dir)
            return Plan(items=items, num_items=len(items))
        captions = load_json(self.annotation_path(root, split), f"the GranD-f {split} caption ground truth")
        masks = load_json(self.mask_path(root, split), f"the GranD-f {split} mask ground truth")
        caption_of: dict[str, dict[str, Any]] = {}
        for ann in captions["annotations"]:
            caption_of.setdefault(str(ann["image_id"]), ann)  # the scorer reads the first caption
        masks_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ann in masks["annotations"]:  # file order: mask k of an image goes with its label k
            masks_of[str(ann["image_id"])].append(ann)
        items = []
        for image in captions["images"]:
            image_id = str(image["id"])
            file_name = image.get("file_name") or f"{image_id}.jpg"
            size = (
                (int(image["height"]), int(image["width"]))
                if "height" in image and "width" in image
                else None
            )
            item = GCGItem(id=image_id, image=str(image_dir / file_name), caption="", size=size)
            items.append(item)
            if image_id not in caption_of:
                item.skip = "no caption"
                continue
            item.caption = str(caption_of[image_id]["caption"])
            labels = [str(label) for label in caption_of[image_id].get("labels") or []]
            position = 0
            for k, ann in enumerate(masks_of.get(image_id, [])):
                object_id = int(ann["id"]) if isinstance(ann.get("id"), int) else k + 1
                item.objects.append((object_id, ann["segmentation"]))
                if k >= len(labels):
                    continue
                start = find_phrase(item.caption, labels[k], position)
                if start < 0:
                    start = find_phrase(item.caption, labels[k])
                if start < 0:
                    log.warning(
                        "grandf_gcg %s: phrase %r is not in the caption of %s", split, labels[k], image_id
                    )
                    continue
                item.spans.append((start, start + len(labels[k]), [object_id]))
                position = start + len(labels[k])
            if not item.spans:
                item.skip = "no grounded phrase"
        return Plan(items=items, num_items=len(items))


class PsgGCG(GCGRecipe):
    """OpenPSG GCG (COCO 2017 train images), GranD-f's format."""

    name = "psg_gcg"
    annotation_files = {"train": "train/OpenPsgGCG_train.json", "val": "train/OpenPsgGCG_val.json"}
    image_folders = {"train": ("coco_2017/train2017",), "val": ("coco_2017/train2017",)}

    def plan(self, root: Path, split: str) -> Plan:
        records = load_json(self.annotation_path(root, split), f"the {self.name} annotations")
        items = _groundings_items(records, self.image_dir(root, split))
        return Plan(items=items, num_items=len(items))


class RefCOCOgGCG(GCGRecipe):
    """RefCOCOg GCG (COCO 2014 train images): ``[{key: {img_file_name, caption, refs: [{sentence,
    segmentation}]}}]``; each ref's sentence is found in the caption (ignoring case, as GLaMM does); a ref
    whose sentence is not in the caption is left out, with its mask."""

    name = "refcocog_gcg"
    annotation_files = {"train": "train/RefCOCOg_GCG_train.json", "val": "train/RefCOCOg_GCG_val.json"}
    image_folders = {"train": ("coco_2014/train2014",), "val": ("coco_2014/train2014",)}

    def plan(self, root: Path, split: str) -> Plan:
        records = load_json(self.annotation_path(root, split), f"the {self.name} annotations")
        image_dir = self.image_dir(root, split)
        items = []
        for entry in records:
            for key, info in entry.items():
                caption, _ = strip_caption(str(info["caption"]))
                item = GCGItem(id=str(key), image=str(image_dir / info["img_file_name"]), caption=caption)
                for ref in info.get("refs") or []:
                    phrase = " ".join(str(ref.get("sentence", "")).split())
                    start = find_phrase(caption, phrase) if phrase else -1
                    segmentation = _valid_polygons(ref.get("segmentation"))
                    if start < 0 or segmentation is None:
                        continue
                    item.objects.append((len(item.objects) + 1, segmentation))
                    item.spans.append((start, start + len(phrase), [len(item.objects)]))
                if not item.spans:
                    item.skip = "no grounded phrase"
                items.append(item)
        return Plan(items=items, num_items=len(items))


class FlickrGCG(GCGRecipe):
    """Flickr30k GCG: a COCO json whose images carry the ``caption`` and whose annotations carry
    ``tokens_positive`` (the first span is the phrase, as GLaMM reads it) and a SAM ``sam_mask`` RLE.
    Annotations flagged ``ignore`` or with an empty box are left out, as GLaMM's loader does."""

    name = "flickr_gcg"
    annotation_files = {
        "train": "train/flickr_mergedGT_GCG_train.json",
        "val": "train/flickr_mergedGT_GCG_val.json",
    }
    image_folders = {
        "train": ("flikcr_30k/train", "flickr_30k/train"),
        "val": ("flikcr_30k/train", "flickr_30k/train"),
    }

    def plan(self, root: Path, split: str) -> Plan:
        data = load_json(self.annotation_path(root, split), f"the {self.name} annotations")
        image_dir = self.image_dir(root, split)
        anns_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ann in data["annotations"]:
            anns_of[str(ann["image_id"])].append(ann)
        items = []
        for image in data["images"]:
            height, width = int(image["height"]), int(image["width"])
            file_name = str(image["file_name"])
            if not (image_dir / file_name).is_file():  # some releases prefix the Flickr id
                file_name = file_name.rsplit("_", 1)[-1]
            item = GCGItem(
                id=str(image["id"]),
                image=str(image_dir / file_name),
                caption=str(image["caption"]),
                size=(height, width),
            )
            for ann in anns_of.get(str(image["id"]), []):
                x, y, w, h = ann.get("bbox", [0, 0, 1, 1])
                inside_w = max(0, min(x + w, width) - max(x, 0))
                inside_h = max(0, min(y + h, height) - max(y, 0))
                spans = ann.get("tokens_positive") or []
                if ann.get("ignore") or inside_w * inside_h == 0 or ann.get("area", 1) <= 0 or w < 1 or h < 1:
                    continue
                if not spans or ann.get("sam_mask") is None:
                    continue
                item.objects.append((int(ann["id"]), ann["sam_mask"]))
                item.spans.append((int(spans[0][0]), int(spans[0][1]), [int(ann["id"])]))
            if not item.spans:
                item.skip = "no grounded phrase"
            items.append(item)
        return Plan(items=items, num_items=len(items))


RECIPES = [GranDfGCG(), RefCOCOgGCG(), PsgGCG(), FlickrGCG()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
