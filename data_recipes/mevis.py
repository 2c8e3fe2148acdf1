"""MeViS (``mevis``, vid_refseg, motion expressions) and ReVOS (``revos``, vid_reaseg): the same release
format, ``meta_expressions.json`` + ``mask_dict.json``.

``meta_expressions``: ``{"videos": {video: {"frames": [...], "expressions": {exp_id: {"exp", "obj_id":
[...], "anno_id": [...]}}}}}``; an expression may name several objects (all of them are its target) or
none (a no-target expression). ``mask_dict``: ``{anno_id: [RLE or null per frame]}``, RLE counts as a
string or a list, aligned with the video's ``frames``. ReVOS expressions also carry ``type_id``: 0
referring, 1 reasoning, 2 neither (no target): VISA's ``eval_revos.py`` reports J&F per type and overall.

MeViS frames are consecutive and published without a frame rate: ``frame_times`` count them at ``--fps``
(default 6, an estimate, see docs/datasets.md). ReVOS gathers videos of several sources (its video ids
hold a ``/``); the same default applies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_recipes._video import add_unit_argument, frame_times, per_expression, rle_track
from data_recipes.framework import ConvertedSample, Recipe, SkipItem
from data_recipes.framework.cli import add_option, main
from data_recipes.framework.layout import load_json, require_dir, require_file, require_keys
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import Plan
from data_recipes.youtube_vos import _number_first

DEFAULT_FPS = 6.0
REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "no_target"}


@dataclass(frozen=True)
class MaskDictItem:
    """One sample to make: frame files, expressions and the RLE tracks of the annotations they name."""

    video: str
    sample_id: str
    frames: tuple[str, ...]
    frames_dir: str
    # (exp_id, text, object ids, annotation ids, type_id or None)
    expressions: tuple[tuple[str, str, tuple[int, ...], tuple[str, ...], int | None], ...]
    masks: tuple[tuple[str, tuple[Any, ...]], ...]  # anno_id -> per-frame RLE or None


def mask_dict_items(
    videos: dict[str, Any], mask_dict: dict[str, Any], frames_root: Path, split: str, unit: str, where: Path
) -> list[MaskDictItem]:
    """Work items from a loaded ``meta_expressions`` / ``mask_dict`` pair (each item carries its masks)."""
    items = []
    for video in sorted(videos):
        record = videos[video]
        require_keys(record, ("frames", "expressions"), f"video {video}", where)
        expressions = []
        for exp_id, e in sorted(record["expressions"].items(), key=lambda kv: _number_first(kv[0])):
            objects = tuple(int(i) for i in e.get("obj_id", []))
            annotations = tuple(str(a) for a in e.get("anno_id", []))
            type_id = e.get("type_id")
            expressions.append(
                (str(exp_id), e["exp"], objects, annotations, None if type_id is None else int(type_id))
            )
        base = {"video": video, "frames": tuple(record["frames"]), "frames_dir": str(frames_root / video)}

        def item(chosen: list, sample_id: str, base: dict = base) -> MaskDictItem:
            needed = sorted({a for e in chosen for a in e[3]})
            masks = tuple((a, tuple(mask_dict[a]) if a in mask_dict else ()) for a in needed)
            return MaskDictItem(sample_id=sample_id, expressions=tuple(chosen), masks=masks, **base)

        if per_expression(unit, split):
            items += [item([e], f"{video}/{e[0]}") for e in expressions]
        elif expressions:
            items.append(item(expressions, video))
    return items


class _MaskDictRecipe(Recipe):
    modality = "video"
    splits = ("train", "val")
    items_per_shard = 50

    def __init__(self) -> None:
        self.fps, self.unit = DEFAULT_FPS, "auto"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_option(parser, "--fps", type=float, default=None, help="frame rate of the frame numbers")
        add_unit_argument(parser)

    def configure(self, args: argparse.Namespace) -> None:
        self.fps, self.unit = args.fps or DEFAULT_FPS, args.unit

    def options(self) -> dict[str, Any]:
        return {"fps": self.fps, "unit": self.unit}

    def _paths(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        """(frames root, meta_expressions, mask_dict)."""
        raise NotImplementedError

    def check_layout(self, root: Path, split: str) -> None:
        frames, expressions, masks = self._paths(root, split)
        require_dir(frames, f"{self.name} frames (JPEGImages)")
        require_file(expressions, f"{self.name} expressions ({expressions.name})")
        require_file(masks, f"{self.name} masks (mask_dict.json)")

    def plan(self, root: Path, split: str) -> Plan:
        frames, expressions_path, masks_path = self._paths(root, split)
        expressions = load_json(expressions_path, expressions_path.name)
        require_keys(expressions, ("videos",), expressions_path.name, expressions_path)
        mask_dict = load_json(masks_path, "mask_dict.json")
        items = mask_dict_items(expressions["videos"], mask_dict, frames, split, self.unit, expressions_path)
        return Plan(items=items, num_items=len(items))

    def describe(self, item: MaskDictItem) -> str:
        return f"video {item.video} ({item.sample_id})"

    def _reference(
        self, exp_id: str, text: str, object_ids: list[int], type_id: int | None
    ) -> dict[str, Any]:
        return {"id": exp_id, "text": text, "object_ids": object_ids}

    def convert(self, item: MaskDictItem) -> Iterator[ConvertedSample]:
        folder = Path(item.frames_dir)
        paths = [folder / f"{name}.jpg" for name in item.frames]
        if not folder.is_dir() or not all(p.is_file() for p in paths):
            raise SkipItem("video frames missing")
        media, (height, width) = frame_media(paths)
        masks = dict(item.masks)
        annotation_of: dict[int, str] = {}
        for exp_id, _, objects, annos, _ in item.expressions:
            if len(objects) != len(annos):
                raise ValueError(f"expression {exp_id}: {len(objects)} obj_id but {len(annos)} anno_id")
            for object_id, anno in zip(objects, annos):
                if annotation_of.setdefault(object_id, anno) != anno:
                    raise ValueError(
                        f"object {object_id} has two annotations ({annotation_of[object_id]}, {anno})"
                    )
                if not masks.get(anno):
                    raise ValueError(f"expression {exp_id}: anno_id {anno} is not in mask_dict.json")
                if len(masks[anno]) != len(item.frames):
                    raise ValueError(
                        f"anno_id {anno} has {len(masks[anno])} masks for {len(item.frames)} frames"
                    )
        tracks = {i: rle_track(masks[a], height, width) for i, a in annotation_of.items()}
        annotated = {i for i, track in tracks.items() if any(m is not None for m in track)}
        references = []
        for exp_id, text, objects, _, type_id in item.expressions:
            text = " ".join(text.split())
            if not text or (objects and not set(objects) & annotated):
                continue  # named objects never annotated: not a no-target expression
            references.append(self._reference(exp_id, text, [i for i in objects if i in annotated], type_id))
        if not references:
            raise SkipItem("referred objects never annotated")
        used = sorted({i for r in references for i in r["object_ids"]})
        sample = {
            "video": item.video,
            "height": height,
            "width": width,
            "num_frames": len(item.frames),
            "frame_times": frame_times(item.frames, self.fps),
            "objects": [{"id": i, "iscrowd": False, "masks": tracks[i]} for i in used],
            "references": references,
        }
        yield ConvertedSample(id=item.sample_id, json=sample, media=media)


class MeViS(_MaskDictRecipe):
    name = "mevis"
    task = "vid_refseg"
    layout = (
        "train/ and valid_u/ (the val split), each with JPEGImages/<video>/<frame>.jpg, meta_expressions.json "
        "and mask_dict.json (valid/ has no masks: scored on the server)"
    )

    def _paths(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        folder = root / ("train" if split == "train" else "valid_u")
        return folder / "JPEGImages", folder / "meta_expressions.json", folder / "mask_dict.json"


class ReVOS(_MaskDictRecipe):
    name = "revos"
    task = "vid_reaseg"
    layout = (
        "JPEGImages/<video>/<frame>.jpg, mask_dict.json, meta_expressions_train_.json, "
        "meta_expressions_valid_.json (the json files may sit in annotations/)"
    )

    def _paths(self, root: Path, split: str) -> tuple[Path, Path, Path]:
        stem = "meta_expressions_train_.json" if split == "train" else "meta_expressions_valid_.json"
        folder = (
            root if (root / stem).is_file() or not (root / "annotations").is_dir() else root / "annotations"
        )
        return root / "JPEGImages", folder / stem, folder / "mask_dict.json"

    def _reference(
        self, exp_id: str, text: str, object_ids: list[int], type_id: int | None
    ) -> dict[str, Any]:
        reference = super()._reference(exp_id, text, object_ids, type_id)
        if type_id is not None:
            reference["type_id"] = type_id
            reference["type"] = REVOS_TYPES.get(type_id, str(type_id))
        return reference


RECIPES = [MeViS(), ReVOS()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
