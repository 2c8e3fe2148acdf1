"""Qwen3-VL video input against transformers: the patch layout and the prompt of ``Qwen3VLVideoProcessor``
and ``Qwen3VLProcessor`` (a fixture they wrote, ``tests/models/reference/make_qwen3vl_video_fixture.py``),
the timestamps of the processor's own code, and the wrapper's logits on a video against the plain model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

from x2sam_lightning.models.chat_encoding import IGNORE_INDEX, ChatEncoder
from x2sam_lightning.models.tiny_qwen3vl import TinyQwen3VLConfig, build_tokenizer, save_tiny_qwen3vl
from x2sam_lightning.models.vision_inputs import (
    VisionInputSpec,
    patchify_images,
    patchify_videos,
    video_inputs,
    video_timestamps,
)
from x2sam_lightning.models.vl_backbone import VLBackbone
from x2sam_lightning.normalization import IMAGENET_MEAN, IMAGENET_STD
from x2sam_lightning.types import Conversation

TESTS = Path(__file__).parents[1]
FIXTURE = TESTS / "fixtures" / "models" / "qwen3vl_video.npz"
SCRIPT = TESTS / "models" / "reference" / "make_qwen3vl_video_fixture.py"
SPEC = VisionInputSpec(patch_size=8, merge_size=2, temporal_patch_size=2)


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        stored = {k: data[k] for k in data.files}
    clips = sorted({k.split("/")[0] for k in stored if k.startswith("clip")})
    return stored, clips


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_qwen3vl(tmp_path_factory.mktemp("vlm_video") / "tiny", TinyQwen3VLConfig())


def _unit(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255


def test_patchify_matches_the_qwen3vl_video_processor(fixture):
    stored, clips = fixture
    for clip in clips:
        unit = _unit(stored[f"{clip}/frames"])  # [T, 3, H, W]
        expected = torch.from_numpy(stored[f"{clip}/pixel_values_videos"])
        patches, grid = patchify_videos(((unit - 0.5) / 0.5)[None], SPEC)
        torch.testing.assert_close(patches, expected, rtol=0, atol=1e-6, msg=clip)
        assert grid.tolist() == stored[f"{clip}/video_grid_thw"].tolist(), clip
        # From the SAM-normalised batch (ImageNet statistics undone) the same patches come out.
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        patches, grid = video_inputs(((unit - mean) / std)[None], SPEC)
        torch.testing.assert_close(patches, expected, rtol=0, atol=1e-5, msg=clip)


def test_two_clips_are_patched_one_after_the_other(fixture):
    stored, _ = fixture
    unit = _unit(stored["clip0/frames"])
    second = unit.flip(0)
    both, grid = patchify_videos(torch.stack([unit, second]), SPEC)
    one, _ = patchify_videos(unit[None], SPEC)
    two, _ = patchify_videos(second[None], SPEC)
    assert torch.equal(both, torch.cat([one, two])) and grid.tolist() == [[2, 4, 4]] * 2


def test_a_one_frame_video_has_the_pixels_of_the_image_path():
    frame = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    video, video_grid = patchify_videos(frame[:, None], SPEC)
    image, image_grid = patchify_images(frame, SPEC)
    assert torch.equal(video, image) and torch.equal(video_grid, image_grid)


def test_the_fixture_is_what_transformers_writes(fixture):
    """Re-run the fixture script here (transformers' processors, a stand-in for two torchvision functions
    where torchvision is absent): it writes the stored fixture again."""
    spec = importlib.util.spec_from_file_location("make_qwen3vl_video_fixture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.compute()
    stored, _ = fixture
    assert sorted(fresh) == sorted(stored)
    for key, value in stored.items():
        if key == "stand_in":
            continue
        np.testing.assert_array_equal(fresh[key], value, err_msg=key)


@pytest.mark.parametrize("temporal", [1, 2, 4])
@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
def test_timestamps_are_the_processors(frames, temporal):
    indices = list(range(7, 7 + 3 * frames, 3))
    fps = 6.0
    expected = Qwen3VLProcessor._calculate_timestamps(None, np.array(indices), fps, temporal)
    assert video_timestamps([i / fps for i in indices], temporal) == pytest.approx(expected, abs=1e-12)


def test_video_chat_encoding_matches_the_processor(fixture):
    """The ids and mm token types of ``<video>`` (timestamps, vision tokens, outer wrapping) are those
    ``Qwen3VLProcessor`` made of the chat template's video item."""
    stored, clips = fixture
    tokenizer = build_tokenizer()
    for clip in clips:
        _, grid_h, grid_w = stored[f"{clip}/video_grid_thw"][0].tolist()
        encoder = ChatEncoder(tokenizer, grid_h * grid_w // 4, tokens_per_region=1, temporal_patch_size=2)
        conversation = Conversation(
            [
                {"role": "user", "content": "<video>" + str(stored["prompt"])},
                {"role": "assistant", "content": "A square."},
            ]
        )
        times = (stored[f"{clip}/frame_indices"] / stored[f"{clip}/fps"]).tolist()
        chat = encoder.encode(conversation, generation_prompt=True, frame_times=times)
        assert chat.input_ids == stored[f"{clip}/input_ids"].tolist(), str(stored[f"{clip}/text"])
        assert chat.mm_token_type_ids == stored[f"{clip}/mm_token_type_ids"].tolist(), clip


def test_video_tokens_labels_and_one_frame(folder):
    vl = VLBackbone(str(folder), lora=None)
    tokenizer = vl.tokenizer
    encoder = ChatEncoder(tokenizer, vl.image_tokens(64), tokens_per_region=4, temporal_patch_size=2)
    conversation = Conversation(
        [
            {"role": "user", "content": "<video>What is <p>the red circle</p> in this video?"},
            {"role": "assistant", "content": "It is <SEG>."},
        ]
    )
    chat = encoder.encode(conversation, frame_times=[0.0, 0.5, 1.0])  # odd: the last frame is repeated
    ids = torch.tensor(chat.input_ids)
    video_pad = vl.token_ids["<|video_pad|>"]
    assert int((ids == video_pad).sum()) == 2 * 16  # two temporal patches of 8x8 / 2^2 tokens
    assert [i for i, k in enumerate(chat.mm_token_type_ids) if k == 2] == (ids == video_pad).nonzero()[
        :, 0
    ].tolist()
    text = tokenizer.decode(chat.input_ids)
    assert "<|vision_start|><0.2 seconds><|vision_start|>" in text and "<|vision_end|><1.0 seconds>" in text
    assert text.count("<|vision_start|>") == text.count("<|vision_end|>") == 3
    learned = [t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "It is <SEG>.<|im_end|>"
    # One frame: read as an image, the same tokens as <image>.
    still = encoder.encode(conversation, frame_times=[0.4])
    image = encoder.encode(
        Conversation(
            [{**m, "content": m["content"].replace("<video>", "<image>")} for m in conversation.messages]
        )
    )
    assert still.input_ids == image.input_ids and still.mm_token_type_ids == image.mm_token_type_ids
    assert 1 in still.mm_token_type_ids and 2 not in still.mm_token_type_ids
    with pytest.raises(ValueError, match="<video>"):
        encoder.encode(Conversation([{"role": "user", "content": "<image>Hi"}]), frame_times=[0.0, 0.5])


def test_tokenizer_and_model_agree_on_the_video_token(folder):
    vl = VLBackbone(str(folder), lora=None)
    assert vl.token_ids["<|video_pad|>"] == vl.qwen.config.video_token_id
    assert vl.token_ids["<|image_pad|>"] == vl.qwen.config.image_token_id


@pytest.mark.parametrize("frames", [4, 3])
def test_wrapper_equals_plain_transformers_on_a_video(folder, frames):
    """The wrapper (LoRA at its zero init) on a batch of two clips computes what plain transformers does with
    the same ids, ``pixel_values_videos`` and ``video_grid_thw``; the video reaches the logits."""
    plain = Qwen3VLForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    vl = VLBackbone(str(folder), lora={"r": 8, "lora_alpha": 16}).eval()
    encoder = ChatEncoder(vl.tokenizer, vl.image_tokens(64), tokens_per_region=4, temporal_patch_size=2)
    times = [[i / 5 for i in range(frames)], [1 + i / 10 for i in range(frames)]]
    texts = ["<video>Describe the video.", "<video>What moves in this video?"]
    chats = [
        encoder.encode(Conversation([{"role": "user", "content": t}]), generation_prompt=True, frame_times=s)
        for t, s in zip(texts, times)
    ]
    length = max(len(c) for c in chats)
    pad = vl.tokenizer.pad_token_id
    ids = torch.tensor([c.input_ids + [pad] * (length - len(c)) for c in chats])
    mask = torch.tensor([[1] * len(c) + [0] * (length - len(c)) for c in chats])
    mm = torch.tensor([c.mm_token_type_ids + [0] * (length - len(c)) for c in chats])
    clips = torch.randn(2, frames, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    videos, grid = vl.video_inputs(clips)
    assert grid.tolist() == [[2, 8, 8]] * 2 and videos.shape == (2 * 2 * 64, 3 * 2 * 8 * 8)
    logits, hidden = vl(ids, mask, mm, pixel_values_videos=videos, video_grid_thw=grid)
    expected = plain(
        input_ids=ids,
        attention_mask=mask,
        mm_token_type_ids=mm,
        pixel_values_videos=videos,
        video_grid_thw=grid,
        output_hidden_states=True,
    )
    old = plain.config.text_config.vocab_size
    torch.testing.assert_close(logits[..., :old], expected.logits)
    torch.testing.assert_close(hidden, expected.hidden_states[-1])
    other, _ = vl(ids, mask, mm, pixel_values_videos=vl.video_inputs(clips.flip(1))[0], video_grid_thw=grid)
    assert not torch.allclose(other, logits)  # the frames' order matters
