"""Every task's conversations as tokens: one span per condition, <SEG> where the contract says, labels on
the answers only (checked on the tiny synthetic sets, training and evaluation conversations)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.synthetic import TINY
from helpers.vlm import build_stage2

from x2sam_lightning.data.conversations import EVAL_PROMPT_TYPES, build_conversation, seg_conditions
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import DATASETS, IMAGE_TASK_DATASETS, generate_synthetic
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.models.chat_encoding import IGNORE_INDEX

IMAGE_SETS = ["synthetic_img", *IMAGE_TASK_DATASETS]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic_tokens")
    generate_synthetic(folder, **TINY)
    return folder


@pytest.fixture(scope="module")
def model(stage2_dir):
    return build_stage2(stage2_dir).net


@pytest.mark.parametrize("dataset", IMAGE_SETS)
def test_spans_segs_and_labels_line_up(root, model, dataset):
    task = DATASETS[dataset]["task"]
    tokenizer = model.vl_backbone.tokenizer
    samples = list(
        iter_source(
            ShardSource(dataset, root / f"{dataset}-val.index.json"),
            ResizePadNormalize(64),
            ClipSampler(mode="all"),
            train=False,
        )
    )
    conversations = [
        build_conversation(s, task, train=False, prompt_type=t)
        for s in samples
        for t in EVAL_PROMPT_TYPES.get(task, (None,))
    ]
    if dataset != "synthetic_img_ovseg":
        conversations += [
            build_conversation(s, task, np.random.default_rng(i), train=True) for i, s in enumerate(samples)
        ]
    for conversation in conversations:
        chat = model.chat_encoder(64).encode(conversation)
        spans = model.find_conditions(__import__("torch").tensor([chat.input_ids]))[0]
        assert len(spans) == len(conversation.condition_objects), conversation.template
        segs = [i for i, t in enumerate(chat.input_ids) if t == model.seg_id]
        decoded = seg_conditions(conversation)
        assert len(segs) == len(decoded), conversation.template
        if conversation.mode == "per_condition":  # each <SEG> right after (the turn of) its own condition
            for position, (k,) in zip(segs, decoded):
                assert max(i for i, s in enumerate(spans) if s[1] < position) == k
        learned = [t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE_INDEX]
        replies = [m["content"] for m in conversation.messages if m["role"] == "assistant"]
        assert tokenizer.decode(learned) == "".join(r + "<|im_end|>" for r in replies)
        regions = 0 if conversation.regions is None else conversation.regions.shape[0]
        assert len(chat.region_positions) == regions * model.region_sampler.tokens_per_region
