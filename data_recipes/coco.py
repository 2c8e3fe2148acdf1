"""The COCO family for images: generic (COCO panoptic), interactive (COCO-Interactive) and visual grounded
(COCO-VGD) segmentation.

- ``coco_panoptic`` (``img_genseg``): COCO panoptic 2017, one sample per image, one object per panoptic
  segment (things and stuff), read from the panoptic json and its PNGs (segment id = R + 256 G + 256^2 B).
  ``annotations/instances_*.json`` is not read: the panoptic segments are the thing instances (the paper
  and its authors train generic segmentation on COCO panoptic).
- ``coco_interactive`` (``img_intseg``): PSALM's COCO-Interactive json (COCO instances, each annotation
  with point, scribble, box and mask prompts stored as masks), one sample per image; the prompt masks
  become the schema's prompt geometry (:func:`prompt_from_masks`).
- ``coco_vgd`` (``img_vgdseg``): COCO-VGD as the X-SAM / X2SAM code builds it from COCO instances: one
  sample per image, every non-crowd instance an object; evaluation prompts (point, scribble, box, mask) are
  drawn from each object's mask with a generator fixed by ``--seed`` and stored.

:class:`PanopticRecipe` (the COCO panoptic format) also serves ADE20K (``data_recipes/ade20k.py``).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_dir, require_file, require_keys
from data_recipes.framework.masks import MaskFormatError, mask_to_rle, panoptic_ids, to_rle
from data_recipes.framework.media import image_media
from data_recipes.framework.prompts import SeededPrompts, prompt_rng
from data_recipes.framework.recipe import Plan
from x2sam_lightning.data.rle import decode_rle
from x2sam_lightning.data.visual_prompts import MAX_SCRIBBLE_POINTS, PROMPT_TYPES, prompt_from_mask

# ------------------------------------------------------------------------------------------------ shared


def clean_category_name(name: str) -> str:
    """The category name the model reads, cleaned as the authors clean it: ``wall-other-merged`` ->
    ``wall other``, ``tree-merged`` -> ``tree``, ``window `` -> ``window``; ADE20K's synonym lists
    (``road, route``) are kept whole."""
    name = re.sub(r"-merged|-stuff", "", name)
    name = re.sub(r"\(.*\)", "", name)
    name = name.replace(".", "").replace("_", " ").replace("-", " ")
    return re.sub(r"\s+", " ", name).strip().lower()


def vocabulary(categories: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """A json's ``categories`` as the index vocabulary ``[{"id", "name", "isthing"}]``, sorted by id, with
    the dataset's own ids (COCO 1-based with gaps, ADE20K 0-based)."""
    result = []
    for category in categories:
        require_keys(category, ("id", "name"), "a category", path)
        result.append(
            {
                "id": int(category["id"]),
                "name": clean_category_name(str(category["name"])),
                "isthing": bool(category.get("isthing", 1)),
            }
        )
    return sorted(result, key=lambda c: c["id"])


def instance_mask(segmentation: Any, height: int, width: int) -> tuple[dict[str, Any], np.ndarray] | None:
    """A COCO instance segmentation (polygon parts, uncompressed list RLE, compressed string RLE) as a
    compressed RLE and a bool mask; None when nothing of it can be drawn (only degenerate polygon parts
    of fewer than 3 points, or no pixel), which the COCO API cannot rasterise either."""
    if isinstance(segmentation, list):
        segmentation = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not segmentation:
            return None
    rle = to_rle(segmentation, height, width)
    mask = decode_rle(rle).astype(bool)
    return (rle, mask) if mask.any() else None


def _image(path: Path, height: int, width: int, where: str) -> dict[str, bytes]:
    if not path.is_file():
        raise SkipItem("image file missing")
    media, size = image_media(path)
    if size != (height, width):
        raise ValueError(f"image {path} is {size[1]}x{size[0]} but {where} says {width}x{height}")
    return media


def _split_dir(root: Path, candidates: list[str], what: str) -> Path:
    """The first existing folder of ``candidates`` (relative to ``root``); else a LayoutError naming them."""
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    if len(candidates) == 1:
        return require_dir(root / candidates[0], what)
    raise LayoutError(
        f"expected {what} (a folder) at one of {[str(root / c) for c in candidates]}, found none"
    )


# ---------------------------------------------------------------------------------------- COCO panoptic


class PanopticRecipe(Recipe):
    """A dataset in the COCO panoptic format: a json with ``images``, ``annotations`` (``image_id``,
    ``file_name`` of the PNG, ``segments_info``: ``id``, ``category_id``, ``iscrowd``) and ``categories``
    (``id``, ``name``, ``isthing``), a folder of RGB PNGs of segment ids, a folder of images.

    One sample per image, one object per segment: ``id`` the segment id, ``category_id`` the dataset's,
    ``iscrowd``. Segments listed in the json but without a pixel in the PNG (ADE20K's conversion pastes
    things over stuff) are left out; PNG pixels of no listed segment (id 0: void) belong to no object.
    """

    task = "img_genseg"
    splits = ("train", "val")

    def files(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        """``(panoptic json, PNG folder, image folder)`` of ``split``."""
        raise NotImplementedError

    def check_layout(self, root: Path, split: str) -> None:
        json_path, png_dir, image_dir = self.files(root, split)
        require_file(json_path, f"the {self.name} {split} panoptic json")
        require_dir(png_dir, f"the {self.name} {split} panoptic PNGs")
        require_dir(image_dir, f"the {self.name} {split} images")

    def plan(self, root: Path, split: str) -> Plan:
        json_path, png_dir, image_dir = self.files(root, split)
        data = load_json(json_path, f"the {self.name} {split} panoptic json")
        require_keys(data, ("images", "annotations", "categories"), "the panoptic json", json_path)
        categories = vocabulary(data["categories"], json_path)
        by_image = {}
        for annotation in data["annotations"]:
            require_keys(annotation, ("image_id", "file_name", "segments_info"), "an annotation", json_path)
            by_image[annotation["image_id"]] = annotation
        items = []
        for image in data["images"]:
            require_keys(image, ("id", "file_name", "height", "width"), "an image", json_path)
            annotation = by_image.get(image["id"], {})
            png_name = annotation.get("file_name") or Path(image["file_name"]).with_suffix(".png").name
            segments = [
                (int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)))
                for s in annotation.get("segments_info", [])
            ]
            items.append(
                {
                    "id": str(image["id"]),  # COCO: int ids; ADE20K: "ADE_val_00000001"
                    "image": str(image_dir / image["file_name"]),
                    "png": str(png_dir / png_name),
                    "height": int(image["height"]),
                    "width": int(image["width"]),
                    "segments": segments,
                }
            )
        return Plan(items=items, num_items=len(items), categories=categories)

    def describe(self, item: Any) -> str:
        return item["png"]

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        if not item["segments"]:
            raise SkipItem("no segments")
        height, width = item["height"], item["width"]
        media = _image(Path(item["image"]), height, width, "the panoptic json")
        png = Path(item["png"])
        if not png.is_file():
            raise SkipItem("panoptic PNG missing")
        ids = panoptic_ids(png.read_bytes())
        if ids.shape != (height, width):
            raise ValueError(
                f"panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]}, the image {width}x{height}"
            )
        objects = []
        for segment_id, category_id, iscrowd in item["segments"]:
            mask = ids == segment_id
            if mask.any():
                objects.append(
                    {
                        "id": segment_id,
                        "category_id": category_id,
                        "iscrowd": iscrowd,
                        "masks": [mask_to_rle(mask)],
                    }
                )
        if not objects:
            raise SkipItem("no segment in the PNG")
        yield ConvertedSample(
            id=item["id"],
            json={"height": height, "width": width, "num_frames": 1, "objects": objects},
            media=media,
        )


class COCOPanoptic(PanopticRecipe):
    name = "coco_panoptic"
    layout = (
        "annotations/panoptic_{train,val}2017.json, their PNGs in annotations/panoptic_{train,val}2017/ (the "
        "inner zip unpacked in place) or panoptic_{train,val}2017/ (detectron2), images in {train,val}2017/"
    )

    def files(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        png = f"panoptic_{split}2017"
        png_dir = root / "annotations" / png if (root / "annotations" / png).is_dir() else root / png
        return root / "annotations" / f"panoptic_{split}2017.json", png_dir, root / f"{split}2017"

    def check_layout(self, root: Path, split: str) -> None:
        require_file(root / "annotations" / f"panoptic_{split}2017.json", f"the COCO panoptic {split} json")
        png = f"panoptic_{split}2017"
        _split_dir(root, [f"annotations/{png}", png], f"the COCO panoptic {split} PNGs")
        require_dir(root / f"{split}2017", f"the COCO {split} images")


# -------------------------------------------------------------------------------------- COCO instances

#: The 80 COCO thing categories with their 1-based ids (gaps where the 2014 paper's 11 unused ids were):
#: COCO-Interactive's json holds ``category_id`` s but no category list.
COCO_THING_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip
COCO_THING_CATEGORIES = [{"id": i, "name": n, "isthing": True} for i, n in COCO_THING_NAMES.items()]


class COCOVGD(SeededPrompts, Recipe):
    """COCO-VGD from ``annotations/instances_{split}2017.json``: one sample per image, every non-crowd
    instance an object (crowd regions are dropped, as the authors' builder drops them); the visual
    grounded conversation prompts one object of each category present and targets all of them. ``val``
    objects store a point, scribble, box and mask prompt each (``prompt_from_mask``, seeded by ``--seed``,
    the sample and the object); ``train`` stores none: training draws fresh prompts from the masks."""

    name = "coco_vgd"
    task = "img_vgdseg"
    splits = ("train", "val")
    layout = "annotations/instances_{train,val}2017.json and the images in {train,val}2017/"

    def check_layout(self, root: Path, split: str) -> None:
        require_file(root / "annotations" / f"instances_{split}2017.json", f"the COCO instances {split} json")
        require_dir(root / f"{split}2017", f"the COCO {split} images")

    def plan(self, root: Path, split: str) -> Plan:
        path = root / "annotations" / f"instances_{split}2017.json"
        data = load_json(path, f"the COCO instances {split} json")
        require_keys(data, ("images", "annotations", "categories"), "the instances json", path)
        anns = defaultdict(list)
        for ann in data["annotations"]:
            require_keys(ann, ("id", "image_id", "category_id", "segmentation"), "an annotation", path)
            anns[ann["image_id"]].append(
                {k: ann[k] for k in ("id", "category_id", "segmentation")}
                | {"iscrowd": ann.get("iscrowd", 0)}
            )
        items = []
        for image in data["images"]:
            require_keys(image, ("id", "file_name", "height", "width"), "an image", path)
            items.append(
                {
                    "id": str(image["id"]),
                    "image": str(root / f"{split}2017" / image["file_name"]),
                    "height": int(image["height"]),
                    "width": int(image["width"]),
                    "anns": anns.get(image["id"], []),
                    "prompts": split != "train",
                }
            )
        return Plan(items=items, num_items=len(items), categories=vocabulary(data["categories"], path))

    def describe(self, item: Any) -> str:
        return item["image"]

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        if not item["anns"]:
            raise SkipItem("no annotations")
        if all(ann["iscrowd"] for ann in item["anns"]):
            raise SkipItem("only crowd annotations")
        height, width = item["height"], item["width"]
        media = _image(Path(item["image"]), height, width, "the instances json")
        objects = []
        for ann in item["anns"]:
            if ann["iscrowd"]:
                continue
            drawn = instance_mask(ann["segmentation"], height, width)
            if drawn is None:
                continue
            rle, mask = drawn
            record = {
                "id": int(ann["id"]),
                "category_id": int(ann["category_id"]),
                "iscrowd": False,
                "masks": [rle],
            }
            if item["prompts"]:
                rng = prompt_rng(self.seed, self.name, item["id"], record["id"])
                record["prompt"] = prompt_from_mask(mask, rng, PROMPT_TYPES, frame=0)
            objects.append(record)
        if not objects:
            raise SkipItem("no drawable annotation")
        yield ConvertedSample(
            id=item["id"],
            json={"height": height, "width": width, "num_frames": 1, "objects": objects},
            media=media,
        )


# ------------------------------------------------------------------------------------- COCO-Interactive

#: COCO-Interactive's prompt masks, by the prompt type they become.
PSALM_PROMPT_KEYS = {
    "point": "point_visual_prompt_mask",
    "scribble": "scribble_visual_prompt_mask",
    "box": "box_visual_prompt_mask",
    "mask": "mask_visual_prompt_mask",
}
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _main_part(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The object's connected parts (8-connected, as skimage labels them) and the label of the largest."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels, int(np.argmax(sizes))


def _nearest_part(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The label of the object part nearest each pixel ``(rows, cols)``."""
    if labels.max() <= 1:
        return np.ones(len(rows), dtype=np.int64)
    _, (near_r, near_c) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return labels[near_r[rows, cols], near_c[rows, cols]]


def _ordered_polyline(rows: np.ndarray, cols: np.ndarray) -> list[list[float]]:
    """Scribble pixels as a polyline: pixel centres ordered along their principal axis, at most
    ``MAX_SCRIBBLE_POINTS`` of them (evenly spaced, both ends kept)."""
    points = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
    if len(points) > 1:
        centred = points - points.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        along, across = centred @ axis, centred @ np.array([-axis[1], axis[0]])
        points = points[np.lexsort((across, along))]
    if len(points) > MAX_SCRIBBLE_POINTS:
        points = points[np.round(np.linspace(0, len(points) - 1, MAX_SCRIBBLE_POINTS)).astype(np.int64)]
    return [[float(x), float(y)] for x, y in points]


def prompt_from_masks(
    masks: dict[str, np.ndarray], object_mask: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, Any], list[str]]:
    """COCO-Interactive's prompt masks of one object -> the schema's prompt geometry.

    PSALM draws one point, one box and one scribble line per connected part of the object larger than
    5 px, as pixels; the schema stores one point, one box, one polyline:

    - point: the centre of the point pixel on the object's largest part (a point pixel lies in its part);
    - box: the box around every box pixel ``[x0, y0, x1 + 1, y1 + 1]`` (one part: exactly PSALM's box);
    - scribble: the scribble pixels nearest the largest part, ordered along their principal axis;
    - mask: the prompt mask as it is.

    A type whose mask is missing or empty (PSALM draws no point, box or scribble for an object whose parts
    are all of 5 px or less) is drawn from the object mask with ``rng`` (``prompt_from_mask``).

    Returns:
        The prompt record ``{"frame": 0, <type>: geometry, ...}`` and the types that were drawn.
    """
    prompt: dict[str, Any] = {"frame": 0}
    drawn = []
    labels = main = None
    for kind in PROMPT_TYPES:
        given = masks.get(kind)
        if given is None or not given.any():
            drawn.append(kind)
            continue
        if kind == "mask":
            prompt["mask"] = mask_to_rle(given)
            continue
        rows, cols = np.nonzero(given)
        if kind == "box":
            prompt["box"] = [
                float(cols.min()),
                float(rows.min()),
                float(cols.max() + 1),
                float(rows.max() + 1),
            ]
            continue
        if labels is None:
            labels, main = _main_part(object_mask)
        if kind == "point":
            on_main = labels[rows, cols] == main
            n = int(np.argmax(on_main)) if on_main.any() else 0  # row-major first
            prompt["point"] = [float(cols[n]) + 0.5, float(rows[n]) + 0.5]
        else:
            near = _nearest_part(labels, rows, cols) == main
            if near.any():
                rows, cols = rows[near], cols[near]
            prompt["scribble"] = _ordered_polyline(rows, cols)
    for kind, geometry in prompt_from_mask(object_mask, rng, drawn).items():
        if kind != "frame":
            prompt[kind] = geometry
    return {"frame": 0, **{k: prompt[k] for k in PROMPT_TYPES if k in prompt}}, drawn


class COCOInteractive(SeededPrompts, Recipe):
    """COCO-Interactive (PSALM): ``coco_interactive_{split}_psalm.json``, a list of ``{"image": file name,
    "image_info": COCO image record, "anns": [COCO annotation + point / scribble / box / mask prompt masks
    (compressed RLE)]}``; images in COCO's ``{split}2017/``. One sample per image, every annotation an
    object (crowd ones kept with ``iscrowd``: the conversation never targets them) with its prompts."""

    name = "coco_interactive"
    task = "img_intseg"
    splits = ("train", "val")
    layout = (
        "coco_interactive_{train,val}_psalm.json (PSALM's download) at the top or in annotations/, and the "
        "COCO images in {train,val}2017/"
    )

    def _json(self, root: Path, split: str) -> Path:
        name = f"coco_interactive_{split}_psalm.json"
        for path in (root / name, root / "annotations" / name):
            if path.is_file():
                return path
        raise LayoutError(
            f"expected the COCO-Interactive {split} json at {root / name} or {root / 'annotations' / name}"
        )

    def check_layout(self, root: Path, split: str) -> None:
        self._json(root, split)
        require_dir(root / f"{split}2017", f"the COCO {split} images")

    def plan(self, root: Path, split: str) -> Plan:
        path = self._json(root, split)
        data = load_json(path, f"the COCO-Interactive {split} json")
        if not isinstance(data, list):
            raise LayoutError(
                f"the COCO-Interactive json {path} should be a list of images, got {type(data).__name__}"
            )
        items = []
        for entry in data:
            require_keys(entry, ("image", "image_info", "anns"), "an entry", path)
            info = entry["image_info"]
            require_keys(info, ("id", "height", "width"), "an image_info", path)
            for ann in entry["anns"]:
                require_keys(ann, ("id", "category_id", "segmentation"), "an annotation", path)
                if ann["category_id"] not in COCO_THING_NAMES:
                    raise LayoutError(
                        f"{path}: annotation {ann['id']} has category_id {ann['category_id']}, not COCO's"
                    )
            items.append(
                {
                    "id": str(info["id"]),
                    "image": str(root / f"{split}2017" / entry["image"]),
                    "height": int(info["height"]),
                    "width": int(info["width"]),
                    "anns": entry["anns"],
                }
            )
        return Plan(items=items, num_items=len(items), categories=COCO_THING_CATEGORIES)

    def describe(self, item: Any) -> str:
        return item["image"]

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        if not item["anns"]:
            raise SkipItem("no annotations")
        height, width = item["height"], item["width"]
        media = _image(Path(item["image"]), height, width, "the COCO-Interactive json")
        objects = []
        for ann in item["anns"]:
            drawn = instance_mask(ann["segmentation"], height, width)
            if drawn is None:
                continue
            rle, mask = drawn
            prompt_masks = {}
            for kind, key in PSALM_PROMPT_KEYS.items():
                if ann.get(key) is not None:
                    try:
                        prompt_masks[kind] = decode_rle(to_rle(ann[key], height, width)).astype(bool)
                    except MaskFormatError as error:
                        raise ValueError(f"annotation {ann['id']} {key}: {error}") from None
            rng = prompt_rng(self.seed, self.name, item["id"], int(ann["id"]))
            prompt, _ = prompt_from_masks(prompt_masks, mask, rng)
            objects.append(
                {
                    "id": int(ann["id"]),
                    "category_id": int(ann["category_id"]),
                    "iscrowd": bool(ann.get("iscrowd", 0)),
                    "masks": [rle],
                    "prompt": prompt,
                }
            )
        if not objects:
            raise SkipItem("no drawable annotation")
        yield ConvertedSample(
            id=item["id"],
            json={"height": height, "width": width, "num_frames": 1, "objects": objects},
            media=media,
        )


RECIPES = [COCOPanoptic(), COCOInteractive(), COCOVGD()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
