"""Conversations of every task from the tiny synthetic sets, checked against the Conversation contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from x2sam_lightning.data.conversations import (
    EVAL_PROMPT_TYPES,
    ConversationError,
    build_conversation,
    check_conversation,
    eval_generator,
    seg_conditions,
)
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import DATASETS, IMAGE_TASK_DATASETS
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, SEG
from x2sam_lightning.types import Conversation, SegSample, TrackTargets

IMAGE_SETS = ["synthetic_img", *IMAGE_TASK_DATASETS]
SIZE = 80  # the tiny set's 64 px images are resized by a non-integer factor


def _samples(root, dataset: str, split: str) -> list[SegSample]:
    source = ShardSource(dataset, root / f"{dataset}-{split}.index.json")
    return list(iter_source(source, ResizePadNormalize(SIZE), ClipSampler(mode="all"), train=False))


def _same(a: Conversation, b: Conversation) -> bool:
    regions = (a.regions is None and b.regions is None) or torch.equal(a.regions, b.regions)
    return regions and replace(a, regions=None) == replace(b, regions=None)


@pytest.mark.parametrize("dataset", IMAGE_SETS)
def test_every_task_builds_valid_deterministic_conversations(tiny_root, dataset):
    task = DATASETS[dataset]["task"]
    for sample in _samples(tiny_root, dataset, "val"):
        for prompt_type in EVAL_PROMPT_TYPES.get(task, (None,)):
            conversation = build_conversation(sample, task, train=False, prompt_type=prompt_type)
            check_conversation(conversation)
            assert conversation.messages[0]["content"].startswith(IMAGE + "\n")
            assert conversation.prompt_type == prompt_type
            assert conversation.template.startswith(task) and (
                "/q0" in conversation.template or task == "img_chat"
            )
            again = build_conversation(
                sample, task, eval_generator(sample.key, prompt_type), train=False, prompt_type=prompt_type
            )
            assert _same(conversation, again)
    if dataset == "synthetic_img_ovseg":
        return
    templates = set()
    for sample in _samples(tiny_root, dataset, "train"):
        for seed in range(3):
            conversation = build_conversation(sample, task, np.random.default_rng(seed), train=True)
            check_conversation(conversation)
            assert _same(
                conversation, build_conversation(sample, task, np.random.default_rng(seed), train=True)
            )
            templates.add(conversation.template)
    assert len(templates) > 1 or task == "img_chat"  # training draws wordings


def test_generic_conditions_cover_the_vocabulary_in_evaluation_and_the_present_ones_in_training(tiny_root):
    sample = _samples(tiny_root, "synthetic_img", "val")[0]
    labels = sample.targets.labels.tolist()
    names = [c["name"] for c in sample.categories]
    conversation = build_conversation(sample, "img_genseg", train=False)
    assert conversation.messages[0]["content"].count(P_START) == len(names) == 6
    assert conversation.condition_labels == list(range(6))
    assert conversation.condition_objects == [
        [n for n, label in enumerate(labels) if label == k] for k in range(6)
    ]
    assert seg_conditions(conversation) == [list(range(6))]
    for seed in range(5):
        trained = build_conversation(sample, "img_genseg", np.random.default_rng(seed), train=True)
        assert set(labels) <= set(trained.condition_labels)
        for k, objects in zip(trained.condition_labels, trained.condition_objects):
            assert f"{P_START}{names[k]}{P_END}" in trained.messages[0]["content"]
            assert objects == [n for n, label in enumerate(labels) if label == k]


def test_referring_uses_the_first_reference_in_evaluation_and_several_turns_in_training(tiny_root):
    samples = _samples(tiny_root, "synthetic_img_refseg", "val")
    for sample in samples:
        conversation = build_conversation(sample, "img_refseg", train=False)
        first = sample.meta["references"][0]
        index = {i: n for n, i in enumerate(sample.targets.object_ids.tolist())}
        assert f"{P_START}{first['text']}{P_END}" in conversation.messages[0]["content"]
        assert conversation.condition_objects == [sorted(index[i] for i in first["object_ids"])]
        assert (SEG in conversation.messages[1]["content"]) == bool(first["object_ids"])
    sample = samples[0]
    turns = {
        len(build_conversation(sample, "img_refseg", np.random.default_rng(s), train=True).messages)
        for s in range(20)
    }
    assert turns == {2, 4, 6}  # 1-3 references per training conversation
    # A no-target reference: the reply says so, without <SEG>; the condition has no objects.
    absent = replace(
        sample, meta={**sample.meta, "references": [{"text": "the golden heart", "object_ids": []}]}
    )
    conversation = build_conversation(absent, "img_refseg", train=False)
    check_conversation(conversation)
    assert conversation.condition_objects == [[]] and SEG not in conversation.messages[1]["content"]
    assert seg_conditions(conversation) == []


def test_reasoning_question_mark_goes_after_the_condition(tiny_root):
    sample = _samples(tiny_root, "synthetic_img_reaseg", "val")[0]
    conversation = build_conversation(sample, "img_reaseg", train=False)
    query = sample.meta["references"][0]["text"]
    assert (
        conversation.messages[0]["content"]
        == f"{IMAGE}\n{P_START}{query[:-1]}{P_END}? Please segment the image."
    )


def test_gcg_answer_is_the_caption_with_phrases_marked(tiny_root):
    for sample in _samples(tiny_root, "synthetic_img_gcgseg", "val"):
        conversation = build_conversation(sample, "img_gcgseg", train=False)
        reply = conversation.messages[1]["content"]
        assert reply.replace(P_START, "").replace(P_END, "").replace(SEG, "") == sample.meta["caption"]
        assert reply.count(SEG) == len(sample.meta["phrases"]) == len(conversation.condition_objects)
        assert seg_conditions(conversation) == [[k] for k in range(len(conversation.condition_objects))]


@pytest.mark.parametrize("dataset", ["synthetic_img_intseg", "synthetic_img_vgdseg"])
def test_regions_prompt_their_objects(tiny_root, dataset):
    task = DATASETS[dataset]["task"]
    for sample in _samples(tiny_root, dataset, "val"):
        masks, labels = sample.targets.masks, sample.targets.labels.tolist()
        for prompt_type in EVAL_PROMPT_TYPES[task]:
            conversation = build_conversation(sample, task, train=False, prompt_type=prompt_type)
            assert conversation.regions.shape == (len(conversation.condition_objects), 1, SIZE, SIZE)
            for r, objects in enumerate(conversation.condition_objects):
                region = conversation.regions[r, 0]
                if task == "img_vgdseg":
                    assert objects == [
                        n for n, label in enumerate(labels) if label == conversation.condition_labels[r]
                    ]
                if prompt_type in ("point", "mask"):  # drawn from one of the objects, on it
                    assert any((region & masks[n, 0]).any() for n in objects)
                if prompt_type == "box" and task == "img_intseg":
                    assert (region & masks[objects[0], 0]).sum() >= 0.7 * masks[
                        objects[0], 0
                    ].sum()  # box scaled by >= 0.9
    trained = build_conversation(sample, task, np.random.default_rng(0), train=True)
    assert trained.prompt_type is None and trained.regions.shape[0] >= 1


def test_chat_keeps_the_sample_conversation(tiny_root):
    for sample in _samples(tiny_root, "synthetic_img_chat", "train"):
        conversation = build_conversation(sample, "img_chat", train=True, rng=np.random.default_rng(0))
        stored = sample.meta["conversation"]
        assert conversation.messages[0]["content"] == f"{IMAGE}\n{stored[0]['content']}"
        assert conversation.messages[1:] == stored[1:] and conversation.answer == stored[-1]["content"]


def _hand_sample(task: str, meta: dict, labels: list[int], crowd: list[bool]) -> SegSample:
    n = len(labels)
    masks = torch.zeros(n, 1, 16, 16, dtype=torch.bool)
    for i in range(n):
        masks[i, 0, 2 * i : 2 * i + 2, 1:5] = True
    targets = TrackTargets(
        masks=masks,
        labels=torch.tensor(labels),
        valid=torch.ones(n, 1, dtype=torch.bool),
        object_ids=torch.arange(1, n + 1),
        iscrowd=torch.tensor(crowd),
    )
    categories = [{"id": k + 1, "name": f"class{k}", "isthing": True} for k in range(3)]
    return SegSample(
        torch.zeros(1, 3, 16, 16), targets, (16, 16), (16, 16), "hand/1", "hand", task, categories, meta=meta
    )


def test_crowd_objects_are_never_targets_and_missing_text_is_named():
    sample = _hand_sample("img_genseg", {"objects": []}, [0, 0, 2], [False, True, False])
    conversation = build_conversation(sample, train=False)
    assert conversation.condition_objects == [[0], [], [2]]
    interactive = build_conversation(sample, "img_intseg", train=False, prompt_type="box")
    assert (
        interactive.condition_objects == [[0], [2]] and interactive.regions[:, 0, :, :].any(dim=(1, 2)).all()
    )
    empty = _hand_sample("img_genseg", {}, [], [])
    for seed in range(5):  # an image without objects still asks for some category
        check_conversation(build_conversation(empty, rng=np.random.default_rng(seed), train=True))
    with pytest.raises(ConversationError, match="no object with a mask"):
        build_conversation(empty, "img_intseg", train=False)
    with pytest.raises(ConversationError, match="hand/1.*no caption"):
        build_conversation(sample, "img_gcgseg", train=False)
    with pytest.raises(ConversationError, match="no references"):
        build_conversation(sample, "img_refseg", train=False)
    with pytest.raises(ConversationError, match="alternating"):
        build_conversation(
            replace(sample, meta={"conversation": [{"role": "user", "content": "Hi"}]}),
            "img_chat",
            train=False,
        )


def test_check_conversation_names_contract_breaks():
    good = Conversation(
        messages=[
            {"role": "user", "content": "<image>\n<p>a</p>"},
            {"role": "assistant", "content": "<SEG>."},
        ],
        mode="per_condition",
        condition_objects=[[0]],
        condition_labels=[-1],
    )
    check_conversation(good)
    with pytest.raises(ValueError, match="expected \\[0\\]"):
        check_conversation(replace(good, condition_objects=[[]]))
    with pytest.raises(ValueError, match="1 conditions in the text, 2"):
        check_conversation(replace(good, condition_objects=[[0], [1]]))
    with pytest.raises(ValueError, match="media marker"):
        check_conversation(
            replace(good, messages=[{"role": "user", "content": "<p>a</p>"}, good.messages[1]])
        )
    with pytest.raises(ValueError, match="region"):
        check_conversation(
            replace(good, mode="set", regions=torch.zeros(1, 1, 4, 4, dtype=torch.bool), region_frames=[0])
        )
