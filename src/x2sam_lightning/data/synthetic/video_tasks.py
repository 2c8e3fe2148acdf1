"""One sample of each stage-2 video task set: a video scene (:mod:`.video_scenes`) plus its task's text
or prompts (:mod:`.video_language`).

=======================  ============================================================================
dataset                  what a sample adds to its video (2-5 moving shapes unless said otherwise)
=======================  ============================================================================
synthetic_vid_ovseg      categories are the colour-shape composites of ``synthetic_img_ovseg``; val and
                         test only
synthetic_vid_refseg     ``references``: single-object (colour, kind, size, motion) and multi-object
                         descriptions and a no-target one; object ``expressions``
synthetic_vid_reaseg     ``references``: kind, colour and motion riddles, "which shape disappears behind
                         another shape and then reappears?", the largest
synthetic_vid_gcgseg     ``caption`` and ``phrases`` naming every object and how it moves
synthetic_vid_objseg     every object's ``prompt``: its mask on frame 0 (``type: mask``); the target is
                         the whole track (every split: the first-frame mask is the task's input)
synthetic_vid_vgdseg     2-6 shapes of 1-3 kinds; val/test objects store a point, scribble, box and mask
                         ``prompt`` drawn on the track's first visible frame
synthetic_vid_chat       ``conversation``: 1-3 question-answer pairs (train), one (val/test), one-word
                         answers (counts, colours, directions, yes / no about exits and occlusions)
=======================  ============================================================================

Every sample has ``tags`` (``occlusion``, ``exit``, ``reappearance``: what its masks show) so that an
evaluation can report the videos where a memory matters apart; every object has ``attributes`` with its
``motion``. Absent frames are empty masks (schema 2). The scene and text come from the sample's
generator, stored prompts from a second generator of the same sample.
"""

from __future__ import annotations

from typing import Any

from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.synthetic.config import DATASETS, VIDEO_TASK_DATASETS, SyntheticConfig
from x2sam_lightning.data.synthetic.scenes import SHAPES, _sample_json, sample_rng
from x2sam_lightning.data.synthetic.tasks import OV_CATEGORIES, OV_PAIRS
from x2sam_lightning.data.synthetic.video_language import (
    unique_video_descriptions,
    video_chat_turns,
    video_grounded_caption,
    video_reasoning_references,
    video_referring_references,
)
from x2sam_lightning.data.synthetic.video_scenes import video_task_scene
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES, prompt_from_mask

#: Stream id of the stored-prompt generator (the scene uses the sample's main generator).
_PROMPT_STREAM = 1


def make_video_task_sample(
    dataset: str, index: int, split: str, cfg: SyntheticConfig
) -> tuple[dict[str, Any], bytes, list]:
    """Generate sample ``index`` of ``split`` of a video task set.

    Returns:
        The sample json, the mp4 bytes and, per object, its ``T`` visible masks (``[H, W]`` bool, empty
        where absent).
    """
    if dataset not in VIDEO_TASK_DATASETS:
        raise ValueError(f"{dataset!r} is not a video task dataset")
    rng = sample_rng(cfg, dataset, split, index)
    task = DATASETS[dataset]["task"]
    size, frames = cfg.image_size, cfg.frames
    categories = None
    if task == "vid_ovseg":
        scene = video_task_scene(rng, size, frames, cfg.fps, pairs=OV_PAIRS)
        categories = OV_CATEGORIES
        for record in scene.records:
            pair = (record["attributes"]["color"], record["attributes"]["shape"])
            record["category_id"] = OV_PAIRS.index(pair) + 1
    elif task == "vid_vgdseg":
        kinds = [SHAPES[int(k)] for k in rng.choice(len(SHAPES), int(rng.integers(1, 4)), replace=False)]
        scene = video_task_scene(rng, size, frames, cfg.fps, count=(2, 6), shapes=kinds)
    else:
        scene = video_task_scene(rng, size, frames, cfg.fps)
    objects, facts = scene.attributes, scene.facts
    ids = [r["id"] for r in scene.records]
    times = [round(t / cfg.fps, 6) for t in range(frames)]
    sample = _sample_json(dataset, index, size, times, scene.records, categories)
    sample["tags"] = scene.tags

    if task == "vid_refseg":
        for record, texts in zip(scene.records, unique_video_descriptions(objects)):
            if texts:
                record["expressions"] = texts
        sample["references"] = video_referring_references(objects, ids, rng)
    elif task == "vid_reaseg":
        sample["references"] = video_reasoning_references(objects, facts, ids, rng)
    elif task == "vid_gcgseg":
        sample["caption"], sample["phrases"] = video_grounded_caption(
            objects, facts, ids, scene.background, rng
        )
    elif task == "vid_chat":
        turns = int(rng.integers(1, 4)) if split == "train" else 1
        sample["conversation"] = video_chat_turns(objects, scene.tags, rng, turns)
    elif task == "vid_objseg":
        for record, track in zip(scene.records, scene.tracks):
            record["prompt"] = {"type": "mask", "frame": 0, "mask": encode_mask(track[0])}
    elif task == "vid_vgdseg" and split != "train":
        prompts = sample_rng(cfg, dataset, split, index, _PROMPT_STREAM)
        for record, track, fact in zip(scene.records, scene.tracks, facts):
            first = int(fact["frame"])
            record["prompt"] = prompt_from_mask(track[first], prompts, PROMPT_TYPES, frame=first)
    return sample, scene.mp4, scene.tracks
