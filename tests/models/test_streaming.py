"""Streaming decoding: a video decoded chunk by chunk with the carried bank equals the whole clip at once."""

from __future__ import annotations

import pytest
import torch
from helpers.models import memory_off_zero, random_language, tiny_segmentor
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.models.streaming import DecodeInputs, StreamingDecoder

DECODER = {"mask_decoder.num_queries": 4, "mask_decoder.num_layers": 2}


def _trained(model: torch.nn.Module) -> torch.nn.Module:
    memory_off_zero(model.mask_memory)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _trained(tiny_segmentor(64, memory="tiny", **DECODER))


def _stream(model, clip: torch.Tensor, chunk: int, inputs: DecodeInputs | None = None):
    stream = StreamingDecoder(model, inputs)
    frames = [
        out for start in range(0, clip.shape[1], chunk) for out in stream.step(clip[0, start : start + chunk])
    ]
    return frames, stream


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_equals_whole(model, chunk):
    clip = torch.randn(1, 7, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model.decode(model.encode(clip), 7)
    frames, stream = _stream(model, clip, chunk)
    assert [f.frame for f in frames] == list(range(7)) and stream.next_frame == 7
    masks = torch.stack([f.pred_masks for f in frames], 2)  # [I, Q, T, h, w]
    torch.testing.assert_close(masks, whole["pred_masks"], rtol=1e-4, atol=1e-4)
    # The track's class logits are the mean of the frame logits.
    logits = torch.stack([f.pred_logits for f in frames]).mean(0)
    torch.testing.assert_close(logits, whole["pred_logits"], rtol=1e-4, atol=1e-4)
    assert not any(f.pred_masks.requires_grad for f in frames)


def test_the_bank_stays_bounded_and_detached(model):
    capacity = model.mask_memory.capacity
    clip = torch.randn(1, 50, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    stream = StreamingDecoder(model)
    sizes = []
    for start in range(0, 50, 4):
        stream.step(clip[0, start : start + 4])
        sizes.append(len(stream.bank.entries))
    assert max(sizes) == capacity and sizes[-1] == capacity
    assert [e.frame for e in stream.bank.entries] == list(range(50 - capacity, 50))
    assert stream.bank.next_frame == 50
    assert not any(f.requires_grad or f.grad_fn is not None for e in stream.bank.entries for f in e.features)


def test_stage2_instances_stream_with_their_language_inputs():
    """Several decoding instances (one request, several objects) with language inputs: chunked == whole."""
    torch.manual_seed(0)
    overrides = ["data.image_size=64", "model/mask_memory=tiny"]
    overrides += [f"model.segmentor.{k}={v}" for k, v in DECODER.items()]
    model = _trained(instantiate(compose_config("joint_image", overrides).model.segmentor))
    g = torch.Generator().manual_seed(0)
    language = random_language(3, g)
    clip = torch.randn(1, 5, 3, 64, 64, generator=g)
    with torch.no_grad():
        whole = model.decode(
            model.encode(clip), 5, instance_samples=torch.zeros(3, dtype=torch.long), **language
        )
    frames, _ = _stream(model, clip, 2, DecodeInputs.from_language(language))
    assert frames[0].pred_masks.shape == (3, 4, 16, 16)
    masks = torch.stack([f.pred_masks for f in frames], 2)
    torch.testing.assert_close(masks, whole["pred_masks"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="one row per instance"):
        DecodeInputs({"prompt": torch.zeros(2, 64)}, num_instances=3)


def test_without_a_memory_frames_are_independent():
    torch.manual_seed(0)
    model = tiny_segmentor(64, **DECODER).eval()
    clip = torch.randn(1, 4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(clip)
    frames, stream = _stream(model, clip, 3)
    assert stream.bank is None
    torch.testing.assert_close(
        torch.stack([f.pred_masks for f in frames], 2), whole["pred_masks"], rtol=1e-4, atol=1e-4
    )
