"""The V-VGD builder (video visual grounded segmentation, task ``vid_vgdseg``): ``ytvis19_vgd`` from
YouTube-VIS 2019 and ``vipseg_vgd`` from VIPSeg's thing classes with instance ids.

The sample unit is the one of image VGD (``img_vgdseg``): one sample per video holding every promptable
object track (not crowd, visible on at least one annotated frame; for VIPSeg, thing instances only), each
the whole track. A track's prompts come from its first visible annotated frame (``prompt.frame``): a
point, a scribble, a box and a mask, drawn by ``x2sam_lightning.data.visual_prompts.prompt_from_mask``
with a generator seeded from ``--seed``, the sample key and the track id, and stored on the evaluation
split (training draws fresh prompts from the masks). The conversation builder then prompts one track per
category present and targets every track of that category; the V-VGD metric scores each prompt's
predicted track against all tracks (``x2sam_lightning.metrics.vgd_ap``).

Splits are those of the source recipe with annotations: ``train`` and ``val`` (YouTube-VIS: the training
videos with json id divisible by 10 are held out; VIPSeg: its own val list).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from data_recipes.framework import ConvertedSample, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.prompts import SeededPrompts, prompt_rng
from data_recipes.framework.recipe import sample_key
from data_recipes.vipseg import INSTANCE_FROM, VIPSeg
from data_recipes.ytvis import YouTubeVIS
from x2sam_lightning.data.rle import decode_rle
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, prompt_from_mask

#: Splits whose objects store prompts (evaluation); training draws them from the masks.
PROMPTED_SPLITS = ("val",)


def first_visible(masks: list[Any]) -> int | None:
    """The first frame with a non-empty mask (``None`` if the track is never visible)."""
    for t, rle in enumerate(masks):
        if rle is not None and decode_rle(rle).any():
            return t
    return None


class _VGDBuilder(SeededPrompts):
    """Turns a source recipe's sample into a V-VGD sample (mixed into a source recipe)."""

    def promptable(self, obj: dict[str, Any]) -> bool:
        return not obj["iscrowd"]

    def to_vgd(self, converted: ConvertedSample, split: str) -> ConvertedSample:
        key = sample_key(self.name, converted.id)  # type: ignore[attr-defined]
        objects = []
        for obj in converted.json["objects"]:
            frame = first_visible(obj["masks"]) if self.promptable(obj) else None
            if frame is None:
                continue
            if split in PROMPTED_SPLITS:
                mask = decode_rle(obj["masks"][frame]).astype(bool)
                obj["prompt"] = prompt_from_mask(
                    mask, prompt_rng(self.seed, key, obj["id"]), PROMPT_TYPES, frame=frame
                )
            objects.append(obj)
        if not objects:
            raise SkipItem("no promptable track")
        converted.json["objects"] = objects
        return converted


class YTVIS19VGD(_VGDBuilder, YouTubeVIS):
    name = "ytvis19_vgd"
    task = "vid_vgdseg"
    splits = ("train", "val")

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def plan(self, root, split):  # noqa: ANN001, ANN201
        plan = super().plan(root, split)
        plan.items = [{**item, "split": split} for item in plan.items]
        return plan

    def convert(self, item: dict[str, Any]) -> Iterator[ConvertedSample]:
        for converted in super().convert(item):
            yield self.to_vgd(converted, item["split"])


class VIPSegVGD(_VGDBuilder, VIPSeg):
    name = "vipseg_vgd"
    task = "vid_vgdseg"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def plan(self, root, split):  # noqa: ANN001, ANN201
        plan = super().plan(root, split)
        plan.categories = [c for c in plan.categories if c["isthing"]]
        plan.items = [(*item, split) for item in plan.items]
        return plan

    def objects(self, tracks, known, things):  # noqa: ANN001, ANN201
        """Thing instances only (label values with an instance id, of a thing class)."""
        objects = super().objects(tracks, known, things)
        return [o for o in objects if o["id"] >= INSTANCE_FROM and o["category_id"] in things]

    def convert(self, item: tuple) -> Iterator[ConvertedSample]:
        *source, split = item
        for converted in super().convert(tuple(source)):
            yield self.to_vgd(converted, split)


RECIPES = [YTVIS19VGD(), VIPSegVGD()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
