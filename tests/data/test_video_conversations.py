"""Conversations of the video tasks from the tiny synthetic video sets: markers, conditions, ``<SEG>``
counts, and region prompts on the right frames (the region sampler pools on ``region_frames``)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from x2sam_lightning.data.conversations import (
    EVAL_PROMPT_TYPES,
    build_conversation,
    check_conversation,
    seg_conditions,
)
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import DATASETS, VIDEO_TASK_DATASETS
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import IMAGE, P_START, REGION, SEG, VIDEO
from x2sam_lightning.types import SegSample

SIZE = 64  # the tiny set's own size: a stored prompt renders exactly onto the target masks


def _samples(root, dataset: str, split: str) -> list[SegSample]:
    source = ShardSource(dataset, root / f"{dataset}-{split}.index.json")
    return list(iter_source(source, ResizePadNormalize(SIZE), ClipSampler(mode="all"), train=False))


def _first_visible(sample: SegSample, n: int) -> int:
    targets = sample.targets
    return next(t for t in range(targets.masks.shape[1]) if targets.valid[n, t] and targets.masks[n, t].any())


def _check_video(conversation, sample: SegSample) -> None:
    check_conversation(conversation)
    first = conversation.messages[0]["content"]
    assert first.startswith(VIDEO + "\n") and IMAGE not in first
    text = " ".join(m["content"] for m in conversation.messages)
    assert " image" not in text.replace("<image>", "")
    assert text.count(P_START) == len(conversation.condition_objects)
    segs = text.count(SEG)
    if conversation.mode == "set":
        assert segs == 1 and seg_conditions(conversation) == [
            list(range(len(conversation.condition_objects)))
        ]
    elif conversation.mode == "per_condition":
        assert segs == sum(bool(objects) for objects in conversation.condition_objects)
    else:
        assert segs == 0 and conversation.answer == conversation.messages[-1]["content"]
    assert text.count(REGION) == len(conversation.region_frames)
    if conversation.regions is not None:
        assert conversation.regions.shape[1:] == sample.targets.masks.shape[1:]
        for r, t in enumerate(conversation.region_frames):
            # Drawn on its frame only: the region sampler pools there.
            others = [u for u in range(conversation.regions.shape[1]) if u != t]
            assert conversation.regions[r, t].any() and not conversation.regions[r, others].any()


@pytest.mark.parametrize("dataset", VIDEO_TASK_DATASETS)
def test_every_video_task_builds_valid_conversations(tiny_root, dataset):
    task = DATASETS[dataset]["task"]
    for sample in _samples(tiny_root, dataset, "val"):
        assert sample.task == task and sample.targets.masks.shape[1] == 6
        for prompt_type in EVAL_PROMPT_TYPES.get(task, (None,)):
            conversation = build_conversation(sample, task, train=False, prompt_type=prompt_type)
            _check_video(conversation, sample)
            assert conversation.template.startswith(task)
            assert "/q0" in conversation.template or task == "vid_chat"
        for seed in range(3):
            _check_video(build_conversation(sample, task, np.random.default_rng(seed), train=True), sample)


def test_video_referring_uses_the_papers_video_wording(tiny_root):
    for sample in _samples(tiny_root, "synthetic_vid_refseg", "val"):
        question = build_conversation(sample, train=False).messages[0]["content"]
        assert re.fullmatch(
            r"<video>\nWhat is <p>[^<]+</p> in this video\? Please output the corresponding segmentation mask\.",
            question,
        ), question


def test_object_segmentation_prompts_every_object_with_its_first_frame_mask(tiny_root):
    for sample in _samples(tiny_root, "synthetic_vid_objseg", "val"):
        for train in (False, True):
            conversation = build_conversation(sample, train=train, rng=np.random.default_rng(0))
            assert conversation.prompt_type == "mask" and conversation.mode == "set"
            assert conversation.condition_objects == [[n] for n in range(len(sample.targets))]
            assert conversation.region_frames == [0] * len(sample.targets)
            for r, (n,) in enumerate(conversation.condition_objects):
                # The object's exact mask (stored in evaluation, the target in training), not a blurred one.
                assert torch.equal(conversation.regions[r, 0], sample.targets.masks[n, 0])
        # A training clip on which an object shows first on a later frame: prompted there.
        masks, valid = sample.targets.masks.clone(), sample.targets.valid.clone()
        masks[0, 0] = False
        hidden = replace(sample, targets=replace(sample.targets, masks=masks, valid=valid))
        conversation = build_conversation(hidden, train=True, rng=np.random.default_rng(0))
        later = _first_visible(hidden, 0)
        assert later > 0 and conversation.region_frames[0] == later
        assert torch.equal(conversation.regions[0, later], masks[0, later])


def test_visual_grounding_prompts_on_the_stored_or_first_visible_frame(tiny_root):
    for sample in _samples(tiny_root, "synthetic_vid_vgdseg", "val"):
        for prompt_type in EVAL_PROMPT_TYPES["vid_vgdseg"]:
            conversation = build_conversation(sample, train=False, prompt_type=prompt_type)
            labels = sample.targets.labels.tolist()
            for r, (t, objects) in enumerate(zip(conversation.region_frames, conversation.condition_objects)):
                kind = labels[objects[0]]
                prompted = [
                    n for n in objects if (conversation.regions[r, t] & sample.targets.masks[n, t]).any()
                ]
                assert prompted and all(labels[n] == kind for n in objects)
                stored = sample.meta["objects"][prompted[0]]["prompt"]
                assert stored["frame"] == t == _first_visible(sample, prompted[0])
        conversation = build_conversation(sample, train=True, rng=np.random.default_rng(1))
        for r, t in enumerate(conversation.region_frames):
            on = [
                n
                for n in range(len(sample.targets))
                if (conversation.regions[r, t] & sample.targets.masks[n, t]).any()
            ]
            assert any(_first_visible(sample, n) == t for n in on)
