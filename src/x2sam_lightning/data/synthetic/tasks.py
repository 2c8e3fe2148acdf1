"""One sample of each stage-2 image task dataset: a task scene plus the text or prompts of its task.

=======================  ============================================================================
dataset                  what a sample adds to its scene (1-6 shapes unless said otherwise)
=======================  ============================================================================
synthetic_img_ovseg      categories are colour-shape composites (``red circle``: never a category name in
                         training), objects drawn from :data:`OV_PAIRS`; val and test only
synthetic_img_refseg     ``references``: single-object, relational, multi-object and no-target expressions;
                         object ``expressions`` (each object's unique descriptions)
synthetic_img_reaseg     ``references``: reasoning queries (kind and colour riddles, extremes)
synthetic_img_gcgseg     ``caption`` and ``phrases`` naming every object
synthetic_img_intseg     val/test: every object stores a point, scribble, box and mask ``prompt``
synthetic_img_vgdseg     2-7 shapes of 1-3 kinds (several objects per category); prompts as intseg
synthetic_img_chat       ``conversation``: 1-3 question-answer pairs (train), one (val/test)
=======================  ============================================================================

Every object also stores its ``attributes``. The scene and text come from the sample's generator; stored
prompts from a second generator of the same sample, so they are fixed by the seed.
"""

from __future__ import annotations

from typing import Any

from x2sam_lightning.data.synthetic.config import DATASETS, IMAGE_TASK_DATASETS, SyntheticConfig
from x2sam_lightning.data.synthetic.language import (
    chat_turns,
    grounded_caption,
    reasoning_references,
    referring_references,
    unique_descriptions,
)
from x2sam_lightning.data.synthetic.scenes import SHAPES, _sample_json, sample_rng, task_scene
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, prompt_from_mask

#: The open-vocabulary categories: each shape in two colours (12 composites).
OV_PAIRS = (
    ("red", "circle"),
    ("blue", "circle"),
    ("green", "square"),
    ("yellow", "square"),
    ("blue", "triangle"),
    ("orange", "triangle"),
    ("purple", "ellipse"),
    ("red", "ellipse"),
    ("yellow", "star"),
    ("cyan", "star"),
    ("pink", "ring"),
    ("green", "ring"),
)
OV_CATEGORIES = [{"id": i + 1, "name": f"{c} {s}", "isthing": True} for i, (c, s) in enumerate(OV_PAIRS)]
#: Stream id of the stored-prompt generator (the scene uses the sample's main generator).
_PROMPT_STREAM = 1


def make_task_sample(
    dataset: str, index: int, split: str, cfg: SyntheticConfig
) -> tuple[dict[str, Any], bytes, list]:
    """Generate sample ``index`` of ``split`` of an image task dataset.

    Returns:
        The sample json, the JPEG bytes and the visible masks (``[H, W]`` bool per object).
    """
    if dataset not in IMAGE_TASK_DATASETS:
        raise ValueError(f"{dataset!r} is not an image task dataset")
    rng = sample_rng(cfg, dataset, split, index)
    task = DATASETS[dataset]["task"]
    size = cfg.image_size
    categories = None
    if task == "img_ovseg":
        scene = task_scene(rng, size, pairs=OV_PAIRS)
        categories = OV_CATEGORIES
        for record in scene.records:
            pair = (record["attributes"]["color"], record["attributes"]["shape"])
            record["category_id"] = OV_PAIRS.index(pair) + 1
    elif task == "img_vgdseg":
        kinds = [SHAPES[int(k)] for k in rng.choice(len(SHAPES), int(rng.integers(1, 4)), replace=False)]
        scene = task_scene(rng, size, count=(2, 7), shapes=kinds)
    else:
        scene = task_scene(rng, size)
    objects, facts = scene.attributes, scene.facts
    ids = [r["id"] for r in scene.records]
    sample = _sample_json(dataset, index, size, [0.0], scene.records, categories)

    if task == "img_refseg":
        for record, texts in zip(scene.records, unique_descriptions(objects)):
            if texts:
                record["expressions"] = texts
        sample["references"] = referring_references(objects, facts, ids, rng)
    elif task == "img_reaseg":
        sample["references"] = reasoning_references(objects, facts, ids, size, rng)
    elif task == "img_gcgseg":
        sample["caption"], sample["phrases"] = grounded_caption(objects, facts, ids, scene.background, rng)
    elif task == "img_chat":
        turns = int(rng.integers(1, 4)) if split == "train" else 1
        sample["conversation"] = chat_turns(objects, facts, rng, turns)
    elif task in ("img_intseg", "img_vgdseg") and split != "train":
        prompts = sample_rng(cfg, dataset, split, index, _PROMPT_STREAM)
        for record, mask in zip(scene.records, scene.masks):
            record["prompt"] = prompt_from_mask(mask, prompts, PROMPT_TYPES, frame=0)
    return sample, scene.jpg, scene.masks
