"""RefCOCO, RefCOCO+, RefCOCOg (REFER) and gRefCOCO: image referring segmentation, task ``img_refseg``.

The REFER layout (``lichengunc/refer``) keeps, per dataset, ``instances.json`` (COCO-style images,
annotations with polygon or RLE masks, categories) beside ``refs(<splitBy>).p``, a Python 2 pickle of
refs ``{ref_id, ann_id, image_id, split, sentences: [{sent, raw, tokens, sent_id}], category_id, ...}``.
gRefCOCO (``henghuiding/gRefCOCO``, ReLA) uses the same layout with ``grefs(unc).json``: ``ann_id`` is a
list (``[-1]``: the expression refers to nothing, also flagged ``no_target``).

Sample unit (docs/datasets.md):
- ``train``: one sample per image, holding every referred object of the split and every expression of
  the image as ``references`` (``[{"text", "object_ids"}]``); training draws 1-3 of them per visit.
- evaluation splits (``val``, ``testA``, ``testB``, ``test``): one sample per expression (key
  ``<image_id>_<sent_id>``) holding only its target object(s), so cIoU / gIoU run over every expression
  of the split, as LISA's and ReLA's scorers do.

Pickles are read with the restricted unpickler (no code runs): Python 2 ``str`` comes back as latin-1
text, re-read as UTF-8 where that is what the bytes were.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_file
from data_recipes.framework.masks import to_rle
from data_recipes.framework.media import image_media
from data_recipes.framework.recipe import Plan
from data_recipes.framework.safe_pickle import load_plain_pickle

#: Image folders tried below --root when --images is not given (REFER's, G_REFER's, a flat one).
IMAGE_FOLDERS = ("images/mscoco/images/train2014", "images/train2014", "train2014")
TRAIN = "train"


def plain_text(value: Any) -> Any:
    """Bytes and Python 2 ``str`` (read as latin-1) as the text they hold, recursively.

    A Python 2 ``str`` holding UTF-8 bytes comes out of a latin-1 unpickler as mojibake (``cafÃ©``);
    re-encoding as latin-1 and decoding as UTF-8 recovers it. Text that is not such a round trip (a
    genuine ``unicode`` string with latin-1 letters) stays as it is.
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    if isinstance(value, dict):
        return {plain_text(k): plain_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_text(v) for v in value]
    return value


@lru_cache(maxsize=2)
def _load_refs(path: str, mtime: float) -> list[dict[str, Any]]:
    """The refs of a REFER pickle or a gRefCOCO json (cached: check_layout and plan both read it)."""
    if path.endswith(".json"):
        refs = load_json(Path(path), "the refs file")
    else:
        refs = plain_text(load_plain_pickle(path))
    if not isinstance(refs, list):
        raise LayoutError(f"{path} should hold a list of refs, got {type(refs).__name__}")
    return refs


def _id(value: Any) -> str:
    """Ids compared as text: an image id may be an int in one file and a string in another."""
    return str(value)


@dataclass
class ReferItem:
    """One sample to write: an image, the objects it keeps and the expressions that refer to them."""

    id: str
    image: str
    height: int
    width: int
    objects: list[tuple[int, Any]] = field(default_factory=list)  # (ann id, segmentation)
    references: list[tuple[str, list[int]]] = field(default_factory=list)


class ReferRecipe(Recipe):
    """A REFER-layout dataset: ``<root>/<folder>/instances.json`` + ``<root>/<folder>/refs(<by>).p``."""

    task = "img_refseg"
    folder = ""
    split_by = "unc"
    refs_pattern = "refs({}).p"
    items_per_shard = 500

    def __init__(self) -> None:
        self.images: Path | None = None
        self.text_key = "sent"

    @property
    def layout(self) -> str:  # type: ignore[override]
        return (
            f"{self.folder}/instances.json + {self.folder}/{self.refs_pattern.format(self.split_by)} (REFER), "
            f"COCO train2014 images in --images (default: the first of {', '.join(IMAGE_FOLDERS)} below --root)"
        )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if any(a.dest == "images" for a in parser._actions):
            return
        parser.add_argument(
            "--images", type=Path, default=None, help="the COCO train2014 folder (COCO_train2014_*.jpg)"
        )
        parser.add_argument(
            "--text",
            choices=("sent", "raw"),
            default="sent",
            help="expression field: 'sent' (cleaned, lower case; LISA's choice) or 'raw' (as typed)",
        )

    def configure(self, args: argparse.Namespace) -> None:
        self.images = getattr(args, "images", None)
        self.text_key = getattr(args, "text", "sent")

    def options(self) -> dict[str, Any]:
        return {"split_by": self.split_by, "text": self.text_key, "images": str(self.images or "")}

    # ------------------------------------------------------------------------------------------- layout
    def refs_path(self, root: Path) -> Path:
        return root / self.folder / self.refs_pattern.format(self.split_by)

    def image_dir(self, root: Path) -> Path:
        if self.images is not None:
            return self.images
        for folder in IMAGE_FOLDERS:
            if (root / folder).is_dir():
                return root / folder
        raise LayoutError(
            f"expected the COCO train2014 images in one of {', '.join(str(root / f) for f in IMAGE_FOLDERS)} "
            "(or pass --images DIR), found none"
        )

    def refs(self, root: Path) -> list[dict[str, Any]]:
        path = require_file(self.refs_path(root), f"the {self.name} refs file")
        return _load_refs(str(path), path.stat().st_mtime)

    def check_layout(self, root: Path, split: str) -> None:
        require_file(root / self.folder / "instances.json", f"the {self.name} instances file")
        refs = self.refs(root)
        self.image_dir(root)
        if not any(ref.get("split") == split for ref in refs):
            found = sorted({str(ref.get("split")) for ref in refs})
            raise LayoutError(f"{self.refs_path(root)} has no ref of split {split!r} (splits: {found})")

    # --------------------------------------------------------------------------------------------- plan
    def _text(self, sentence: dict[str, Any]) -> str:
        other = "raw" if self.text_key == "sent" else "sent"
        for key in (self.text_key, other):
            text = sentence.get(key)
            if isinstance(text, str) and text.strip():
                return " ".join(text.split())
        return ""

    def _targets(self, ref: dict[str, Any], anns: dict[str, dict[str, Any]]) -> list[int] | None:
        """The ann ids a ref refers to (``[]``: no target); None when an id is not in instances.json."""
        ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        if all(int(a) == -1 for a in ann_ids):
            return []
        if any(_id(a) not in anns for a in ann_ids):
            return None
        return [int(a) for a in ann_ids]

    def plan(self, root: Path, split: str) -> Plan:
        instances = load_json(root / self.folder / "instances.json", f"the {self.name} instances file")
        images = {_id(i["id"]): i for i in instances["images"]}
        anns = {_id(a["id"]): a for a in instances["annotations"]}
        image_dir = self.image_dir(root)
        refs = [r for r in self.refs(root) if r.get("split") == split]
        by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ref in refs:
            by_image[_id(ref["image_id"])].append(ref)

        def item(image_id: str, sample_id: str, chosen: list[tuple[str, list[int]]]) -> ReferItem:
            info = images[image_id]
            keep = sorted({a for _, targets in chosen for a in targets})
            return ReferItem(
                id=sample_id,
                image=str(image_dir / info["file_name"]),
                height=int(info["height"]),
                width=int(info["width"]),
                objects=[(a, self._segmentation(anns[_id(a)])) for a in keep],
                references=chosen,
            )

        items: list[ReferItem | tuple[str, str]] = []
        for image_id in sorted(by_image, key=lambda i: (len(i), i)):
            if image_id not in images:
                items.append(("image not in instances.json", image_id))
                continue
            expressions = []
            for ref in by_image[image_id]:
                targets = self._targets(ref, anns)
                for sentence in ref["sentences"]:
                    text = self._text(sentence)
                    sample_id = f"{image_id}_{sentence.get('sent_id', len(expressions))}"
                    if targets is None:
                        expressions.append((sample_id, None))
                    elif not text:
                        expressions.append((sample_id, "empty expression"))
                    else:
                        expressions.append((sample_id, (text, targets)))
            usable = [(s, e) for s, e in expressions if isinstance(e, tuple)]
            if split == TRAIN:
                if usable:
                    items.append(item(image_id, image_id, [e for _, e in usable]))
                else:
                    items.append(("no usable expression", image_id))
                continue
            for sample_id, expression in expressions:
                if isinstance(expression, tuple):
                    items.append(item(image_id, sample_id, [expression]))
                else:
                    items.append((expression or "annotation not in instances.json", sample_id))
        return Plan(items=items, num_items=len(items))

    @staticmethod
    def _segmentation(ann: dict[str, Any]) -> Any:
        """The annotation's mask record; polygon parts with fewer than 3 points are dropped (as ReLA's
        loader does); None when nothing is left."""
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            segmentation = [
                p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
            ]
        return segmentation or None

    # ------------------------------------------------------------------------------------------ convert
    def describe(self, item: Any) -> str:
        if isinstance(item, ReferItem):
            return f"sample {item.id} ({item.image})"
        return f"{item[1]} ({item[0]})"

    def convert(self, item: ReferItem | tuple[str, str]) -> Iterator[ConvertedSample]:
        if isinstance(item, tuple):
            raise SkipItem(item[0])
        path = Path(item.image)
        if not path.is_file():
            raise SkipItem("image file missing")
        objects = []
        for ann_id, segmentation in item.objects:
            if segmentation is None:
                raise SkipItem("empty segmentation")
            objects.append(
                {"id": ann_id, "iscrowd": False, "masks": [to_rle(segmentation, item.height, item.width)]}
            )
        media, (height, width) = image_media(path)
        if (height, width) != (item.height, item.width):
            raise ValueError(f"image is {width}x{height} but instances.json says {item.width}x{item.height}")
        sample = {
            "height": height,
            "width": width,
            "num_frames": 1,
            "objects": objects,
            "references": [{"text": text, "object_ids": list(targets)} for text, targets in item.references],
        }
        yield ConvertedSample(id=item.id, json=sample, media=media)


class RefCOCO(ReferRecipe):
    name = "refcoco"
    folder = "refcoco"
    splits = ("train", "val", "testA", "testB")


class RefCOCOPlus(ReferRecipe):
    name = "refcocoplus"
    folder = "refcoco+"
    splits = ("train", "val", "testA", "testB")


class RefCOCOg(ReferRecipe):
    """RefCOCOg with the UMD splits (train / val / test) by default; ``--refcocog-split-by google`` reads
    ``refs(google).p`` (train / val; its test split was never released)."""

    name = "refcocog"
    folder = "refcocog"
    split_by = "umd"
    splits = ("train", "val", "test")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--refcocog-split-by", choices=("umd", "google"), default="umd", help="RefCOCOg's split files"
        )

    def configure(self, args: argparse.Namespace) -> None:
        super().configure(args)
        self.split_by = getattr(args, "refcocog_split_by", "umd")


class GRefCOCO(ReferRecipe):
    """gRefCOCO: expressions that refer to several objects or to none (``ann_id`` ``[-1]``)."""

    name = "grefcoco"
    folder = "grefcoco"
    refs_pattern = "grefs({}).json"
    splits = ("train", "val", "testA", "testB")

    def refs_path(self, root: Path) -> Path:
        path = root / self.folder / self.refs_pattern.format(self.split_by)
        pickled = path.with_suffix(".p")
        return pickled if not path.is_file() and pickled.is_file() else path  # G_REFER reads either

    def _targets(self, ref: dict[str, Any], anns: dict[str, dict[str, Any]]) -> list[int] | None:
        targets = super()._targets(ref, anns)
        if ref.get("no_target") and targets:
            raise ValueError(f"ref {ref.get('ref_id')} is flagged no_target but refers to anns {targets}")
        # Crowd annotations are left out of the targets, as ReLA's loader does.
        return None if targets is None else [a for a in targets if not anns[_id(a)].get("iscrowd")]


RECIPES = [RefCOCO(), RefCOCOPlus(), RefCOCOg(), GRefCOCO()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
