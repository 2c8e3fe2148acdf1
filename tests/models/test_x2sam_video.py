"""X2SAM on clips: the LLM reads a Qwen3-VL video (timestamps from the clip), the decoder every frame, with
and without the mask memory; region prompts from their prompt frame; generation; one frame = an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.vlm import build_stage2, hand_made_video_batch

from x2sam_lightning.models.chat_encoding import IGNORE_INDEX
from x2sam_lightning.models.x2sam import DEFAULT_FPS, DecodeInstance, instance_targets

LORA = ("model.vl_backbone.lora={r: 4, lora_alpha: 8}", "model.vl_backbone.freeze_llm=true")


@pytest.fixture(scope="module", params=["none", "tiny"], ids=["no_memory", "mask_memory"])
def module(request, stage2_dir):
    return build_stage2(stage2_dir, f"model/mask_memory={request.param}", *LORA)


@pytest.fixture(scope="module")
def plain(stage2_dir):
    """The tiny preset as configured (no LoRA, no memory)."""
    return build_stage2(stage2_dir)


@pytest.mark.parametrize("frames", [4, 3])
def test_video_forward_and_backward(module, frames):
    batch = hand_made_video_batch(frames)
    module.train()
    out = module.net(batch)
    assert [(i.sample, i.own) for i in out.instances] == [(0, 0), (1, None)]
    assert out.seg["pred_masks"].shape[:3] == (2, 16, frames)
    loss = module.training_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    named = {n: p for n, p in module.named_parameters() if p.requires_grad}
    parts = [
        "lora_B",
        "net.llm_projector",
        "net.region_projector",
        "net.segmentor.mask_decoder.layers.0.condition_attn",
    ]
    if module.net.segmentor.mask_memory is not None:
        parts.append("net.segmentor.mask_memory")
    for part in parts:
        grads = [p.grad for n, p in named.items() if part in n]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    lora_a = [p.grad for n, p in named.items() if "lora_A" in n and "language_model" in n]
    assert lora_a and all(g is not None for g in lora_a)  # (zero while lora_B is at its zero init)
    module.zero_grad()


def test_the_llm_reads_the_clip_as_a_video(plain):
    net = plain.net
    batch = hand_made_video_batch(4)
    chats = net.encode_conversations(batch.conversations, 64, frame_times=net.llm_frame_times(batch))
    features = net.segmentor.encode(batch.pixel_values)
    tokens, inputs = net._llm_inputs(batch, chats, features, None)
    assert "pixel_values" not in inputs and inputs["video_grid_thw"].tolist() == [[2, 8, 8]] * 2
    assert inputs["pixel_values_videos"].shape[0] == 2 * 2 * 64
    video_pad = net.vl_backbone.token_ids["<|video_pad|>"]
    is_video = tokens["input_ids"] == video_pad
    assert is_video.sum(1).tolist() == [2 * 16, 2 * 16]
    assert torch.equal(tokens["mm_token_type_ids"] == 2, is_video)
    tokenizer = net.vl_backbone.tokenizer
    text = tokenizer.decode(chats[0].input_ids)
    # Frames 2..5 at 5 fps: temporal patches (0.4 + 0.6) / 2 and (0.8 + 1.0) / 2.
    assert "<0.5 seconds>" in text and "<0.9 seconds>" in text
    for chat, conversation in zip(chats, batch.conversations):
        learned = [t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE_INDEX]
        replies = [m["content"] for m in conversation.messages if m["role"] == "assistant"]
        assert tokenizer.decode(learned) == "".join(r + "<|im_end|>" for r in replies)


def test_frame_times_fall_back_to_indices_at_the_default_fps(plain):
    batch = hand_made_video_batch(4, frame_times=False)
    assert plain.net.llm_frame_times(batch) == [[i / DEFAULT_FPS for i in range(2, 6)]] * 2
    batch.meta = []  # a batch built by hand with no meta at all
    assert plain.net.llm_frame_times(batch) == [[i / DEFAULT_FPS for i in range(4)]] * 2


@pytest.mark.parametrize("keep", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("frames", [1, 2, 5, 8, 13, 64])
def test_llm_frames_spread_like_the_processors_sampling(plain, frames, keep, monkeypatch):
    monkeypatch.setattr(plain.net, "video_llm_frames", keep)
    chosen = plain.net.llm_frames(frames)
    if frames <= keep:
        assert chosen == list(range(frames))
    else:  # Qwen3VLVideoProcessor.sample_frames: np.linspace(0, total - 1, n).round()
        assert chosen == np.linspace(0, frames - 1, keep).round().astype(int).tolist()


def test_sub_sampled_frames_reach_the_llm(plain, monkeypatch):
    net = plain.net
    monkeypatch.setattr(net, "video_llm_frames", 2)
    batch = hand_made_video_batch(4)
    assert net.llm_frame_times(batch) == [[0.4, 1.0]] * 2  # frames 0 and 3 of 2..5 at 5 fps
    chats = net.encode_conversations(batch.conversations, 64, frame_times=net.llm_frame_times(batch))
    features = net.segmentor.encode(batch.pixel_values)
    _, inputs = net._llm_inputs(batch, chats, features, None)
    assert inputs["video_grid_thw"].tolist() == [[1, 8, 8]] * 2
    expected, _ = net.vl_backbone.video_inputs(batch.pixel_values[:, [0, 3]])
    assert torch.equal(inputs["pixel_values_videos"], expected)
    out = net(batch)  # the decoder still reads all four frames
    assert out.seg["pred_masks"].shape[2] == 4


def test_a_one_frame_clip_goes_the_image_path(plain):
    net = plain.net
    batch = hand_made_video_batch(1)
    assert net.llm_frame_times(batch) is None
    chats = net.encode_conversations(batch.conversations, 64)
    features = net.segmentor.encode(batch.pixel_values)
    tokens, inputs = net._llm_inputs(batch, chats, features, None)
    assert "pixel_values_videos" not in inputs and inputs["image_grid_thw"].tolist() == [[1, 8, 8]] * 2
    assert (tokens["mm_token_type_ids"] == 1).sum(1).tolist() == [16, 16]
    assert not (tokens["mm_token_type_ids"] == 2).any()
    out = net(batch)
    assert out.seg["pred_masks"].shape[2] == 1


def test_region_prompts_use_their_prompt_frame(plain, monkeypatch):
    net = plain.net
    batch = hand_made_video_batch(4)
    seen = {}
    sampler = net.region_sampler.forward

    def spy(level, masks, index, generator=None):
        seen["index"], seen["masks"] = index.tolist(), masks
        return sampler(level, masks, index, generator)

    monkeypatch.setattr(net.region_sampler, "forward", spy)
    net(batch)
    # Sample 1's box is drawn on its frame 1: the features of frame 1 * T + 1 of the flattened clips.
    assert seen["index"] == [1 * 4 + 1]
    assert torch.equal(seen["masks"][0], batch.conversations[1].regions[0, 1])


def test_generate_on_a_video_batch(plain, monkeypatch):
    net = plain.net
    plain.eval()
    batch = hand_made_video_batch(3)
    out, replies = net.generate(batch, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    for b, reply in enumerate(replies):
        start = out.reply_starts[b]
        assert out.input_ids[b, start : start + len(reply)].tolist() == reply
    # Scripted replies with <SEG> (the tiny random LM rarely writes one): masks for every frame.
    tokenizer, eos = net.vl_backbone.tokenizer, net.vl_backbone.token_ids["<|im_end|>"]
    scripted = [tokenizer("It is <SEG>.", add_special_tokens=False)["input_ids"] + [eos]] * 2
    seen = {}

    def scripted_generate(**kwargs):
        seen.update(kwargs)
        return torch.tensor(scripted)

    monkeypatch.setattr(net.vl_backbone, "generate", scripted_generate)
    out, replies = net.generate(batch, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    assert seen["video_grid_thw"].tolist() == [[2, 8, 8]] * 2 and "pixel_values" not in seen
    assert [i.sample for i in out.instances] == [0, 1]
    assert out.seg["pred_masks"].shape[2] == 3 and torch.isfinite(out.seg["pred_masks"]).all()
    targets = instance_targets(out.instances, batch)
    assert [t.masks.shape[1] for t in targets] == [3, 3]


def test_a_clip_from_the_data_pipeline_trains(plain, tmp_path_factory):
    """Synthetic video clips decoded, given their conversation and collated as in training: the LLM reads
    the frames' stored times."""
    from dataclasses import replace

    from helpers.synthetic import TINY

    from x2sam_lightning.data.collate import collate_samples
    from x2sam_lightning.data.conversations import build_conversation
    from x2sam_lightning.data.shards import ClipSampler, iter_source
    from x2sam_lightning.data.sources import ShardSource
    from x2sam_lightning.data.synthetic import generate_synthetic
    from x2sam_lightning.data.transforms import ResizePadNormalize

    root = tmp_path_factory.mktemp("synthetic_video")
    generate_synthetic(root, **{**TINY, "datasets": ["synthetic_vid"]})
    source = ShardSource("synthetic_vid", root / "synthetic_vid-val.index.json")
    samples = list(
        iter_source(source, ResizePadNormalize(64), ClipSampler(length=3, mode="first"), train=False)
    )
    samples = [
        replace(s, conversation=build_conversation(s, s.task, np.random.default_rng(i), train=True))
        for i, s in enumerate(samples)
    ]
    batch = collate_samples(samples).to("cpu")
    assert batch.num_frames == 3
    times = plain.net.llm_frame_times(batch)
    assert times == [list(s.meta["frame_times"]) for s in samples]
    plain.train()
    loss = plain.training_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    plain.zero_grad()


def test_a_union_target_is_trained_only_where_all_its_objects_are_annotated():
    """A union ("both shapes") on a clip where shape 1 is not annotated on frame 1 (schema 2's null) and absent
    (annotated, empty) on frame 2: the union is unknown on frame 1, known on frame 2."""
    batch = hand_made_video_batch(4)
    targets = batch.targets[0]
    targets.valid[1, 1] = False
    targets.masks[1, 2] = False
    batch.conversations[0].condition_objects[0] = [0, 1]
    union = instance_targets([DecodeInstance(0, 5, [(0, 0)], own=0)], batch)[0]
    assert union.valid.tolist() == [[True, False, True, True]]
    assert torch.equal(union.masks[0, 2], targets.masks[0, 2])
