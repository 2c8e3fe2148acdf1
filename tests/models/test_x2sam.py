"""X2SAM end to end on a hand-made batch: tokens, decoding instances, targets, gradients, generation."""

from __future__ import annotations

import pytest
import torch
from helpers.vlm import build_stage2, hand_made_batch

from x2sam_lightning.models.chat_encoding import IGNORE_INDEX
from x2sam_lightning.models.x2sam import instance_targets


@pytest.fixture(scope="module")
def module(stage2_dir):
    return build_stage2(stage2_dir)


def test_tokens_spans_and_labels(module):
    batch = hand_made_batch()
    chats = module.net.encode_conversations(batch.conversations, 64)
    tokenizer = module.net.vl_backbone.tokenizer
    for chat, conversation in zip(chats, batch.conversations):
        ids = torch.tensor([chat.input_ids])
        spans = module.net.find_conditions(ids)[0]
        assert len(spans) == len(conversation.condition_objects)
        for first, last in spans:
            assert chat.input_ids[first] == module.net.p_start and chat.input_ids[last] == module.net.p_end
        # Learned tokens are exactly the assistant replies (each ending with <|im_end|>).
        learned = [t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE_INDEX]
        replies = [m["content"] for m in conversation.messages if m["role"] == "assistant"]
        assert tokenizer.decode(learned) == "".join(r + "<|im_end|>" for r in replies)
    # The region prompts become tokens_per_region <region> tokens each.
    assert len(chats[2].region_positions) == 2 * module.net.region_sampler.tokens_per_region


def test_instances_targets_and_gradients(module):
    batch = hand_made_batch()
    module.train()
    out = module.net(batch)
    plan = [(i.sample, len(i.conditions), i.own) for i in out.instances]
    # genseg: one set instance over its 3 conditions; refseg: one <SEG> (the no-target turn has none),
    # scored against both referring conditions of the batch; intseg: one set instance over 2 regions.
    assert plan == [(0, 3, None), (1, 2, 0), (2, 2, None)]
    targets = instance_targets(out.instances, batch)
    assert [t.labels.tolist() for t in targets] == [[0, 1], [0], [0, 1]]
    assert out.seg["pred_logits"].shape[:2] == (3, 16) and out.seg["pred_logits"].shape[-1] == 4
    loss = module.training_loss(batch)  # training_step also steps the optimiser (needs a Trainer)
    loss.backward()
    named = dict(module.named_parameters())
    for part in (
        "net.llm_projector",
        "net.region_projector",
        "language_model.layers.0",
        "visual.blocks.0",
        "net.segmentor.mask_decoder.layers.0.condition_attn",
    ):
        grads = [p.grad for n, p in named.items() if part in n and p.requires_grad]
        assert grads and all(g is not None for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    module.zero_grad()


def test_generation_reply_without_seg_gives_no_masks(module):
    batch = hand_made_batch()
    module.eval()
    out, replies = module.net.generate(batch, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    seg = module.net.seg_id
    assert len(out.instances) == sum(r.count(seg) for r in replies)
    # A reply is what was generated: the second pass reads prompt + reply.
    for b, reply in enumerate(replies):
        start = out.reply_starts[b]
        assert out.input_ids[b, start : start + len(reply)].tolist() == reply


def test_the_generated_reply_decides_which_samples_get_masks(module, monkeypatch):
    """Scripted replies (the tiny random LM rarely writes <SEG> by itself): a reply with <SEG> is decoded
    into masks, one without is not, and nothing before the reply (earlier turns' <SEG>) is decoded."""
    net = module.net
    tokenizer, eos = net.vl_backbone.tokenizer, net.vl_backbone.token_ids["<|im_end|>"]
    scripted = [
        tokenizer("Sure, <SEG>.", add_special_tokens=False)["input_ids"] + [eos],
        tokenizer("There is none.", add_special_tokens=False)["input_ids"] + [eos],
        tokenizer("<SEG>", add_special_tokens=False)["input_ids"] + [eos],
    ]
    width = max(map(len, scripted))
    new_tokens = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in scripted])
    monkeypatch.setattr(net.vl_backbone, "generate", lambda **kwargs: new_tokens)
    module.eval()
    out, replies = net.generate(
        hand_made_batch(), max_new_tokens=8, generator=torch.Generator().manual_seed(0)
    )
    assert [r.count(net.seg_id) for r in replies] == [1, 0, 1]
    assert [i.sample for i in out.instances] == [0, 2]  # sample 1's context turn holds a <SEG> too
    assert all(i.seg_position >= out.reply_starts[i.sample] for i in out.instances)
    assert out.seg["pred_masks"].shape[0] == 2 and torch.isfinite(out.seg["pred_masks"]).all()


def test_target_copies_repeat_per_condition_targets_only(module):
    batch = hand_made_batch()
    out = module.net(batch)
    single = instance_targets(out.instances, batch)
    copied = instance_targets(out.instances, batch, copies=3)
    assert [len(t) for t in copied] == [len(single[0]), 3 * len(single[1]), len(single[2])]
    assert copied[1].labels.tolist() == [0, 0, 0]


def test_per_condition_instances_get_their_own_no_object_weight(module):
    out = module.net(hand_made_batch())
    eos = module.criterion.eos_coef
    assert module._no_object_weights(out.instances) is None  # default: the criterion's for every instance
    module.hparams.per_condition_eos_coef = 0.7
    try:
        # genseg and intseg decode sets (the criterion's weight); the referring <SEG> is per condition.
        assert module._no_object_weights(out.instances) == [eos, 0.7, eos]
    finally:
        module.hparams.per_condition_eos_coef = None


def test_same_words_are_no_contrastive_negative(module):
    net = module.net
    p, q, seg, pad = net.p_start, net.p_end, net.seg_id, net.pad_id
    ids = torch.tensor([[p, 5, 6, q, seg, pad, pad, pad, pad], [p, 5, 6, q, seg, p, 7, q, seg]])
    spans = net.find_conditions(ids)
    instances = net.plan_instances(ids, spans, ["per_condition"] * 2, contrastive=True)
    columns = [[i.conditions[k] for k in range(len(i.conditions))] for i in instances]
    owns = [i.conditions[i.own] for i in instances]
    assert owns == [(0, 0), (1, 0), (1, 1)]
    assert columns == [[(0, 0), (1, 1)], [(1, 0), (1, 1)], [(0, 0), (1, 0), (1, 1)]]
    # Evaluation scores a <SEG> against its own sample's conditions only.
    evaluated = net.plan_instances(ids, spans, ["per_condition"] * 2, contrastive=False)
    assert [i.conditions for i in evaluated] == [[(0, 0)], [(1, 0), (1, 1)], [(1, 0), (1, 1)]]
