"""Mask memory: the FIFO bank, the guidance, and clips decoded frame by frame through the segmentor."""

from __future__ import annotations

import pytest
import torch
from helpers.models import memory_off_zero, random_language, tiny_segmentor
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.models.mask_memory import MaskMemory, frame_gap_encoding, mask_guidance
from x2sam_lightning.models.memory_bank import MemoryBank

DECODER = {"mask_decoder.num_queries": 4, "mask_decoder.num_layers": 2}


def memory_segmentor(memory: str = "tiny", seed: int = 0, trained: bool = True, **parts):
    """The tiny segmentor with a mask memory; ``trained`` moves every zero-initialised memory weight (the
    no-memory embedding, the attention and FFN outputs, the mask-feature projection) off zero, as training
    would, so the memory is not the identity."""
    torch.manual_seed(seed)
    model = tiny_segmentor(64, memory=memory, **DECODER, **parts)
    if trained:
        memory_off_zero(model.mask_memory)
    return model.eval()


def memoryless_segmentor(seed: int = 0, **parts):
    torch.manual_seed(seed)
    return tiny_segmentor(64, **DECODER, **parts).eval()


# -- the bank ------------------------------------------------------------------------------------------


def test_bank_is_fifo_and_bounded_by_its_capacity():
    bank = MemoryBank(capacity=3)
    assert bank.is_empty and bank.num_instances is None
    for frame in range(5):
        bank = bank.push([torch.full((2, 4, 3, 3), float(frame)), torch.full((2, 4, 6, 6), float(frame))])
        assert len(bank.entries) == min(frame + 1, 3)
    assert [e.frame for e in bank.entries] == [2, 3, 4]  # oldest dropped first
    assert [float(e.features[0][0, 0, 0, 0]) for e in bank.entries] == [2.0, 3.0, 4.0]
    assert bank.next_frame == 5 and bank.gaps() == [3, 2, 1] and bank.num_instances == 2
    with pytest.raises(ValueError, match=r"memory bank at frame 5 holds features of shapes .*\(2, 4, 3, 3\)"):
        bank.push([torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 6, 6)])
    with pytest.raises(ValueError, match="at least one frame"):
        MemoryBank(capacity=0)


def test_a_detached_bank_keeps_no_graph():
    x = torch.ones(1, 2, 2, 2, requires_grad=True)
    kept = MemoryBank(2).push([x * 2])
    assert kept.entries[0].features[0].requires_grad
    cut = kept.detached().push([x * 3])
    assert cut.detach and not any(f.requires_grad for e in cut.entries for f in e.features)
    assert not MemoryBank(2, detach=True).push([x * 2]).entries[0].features[0].requires_grad


# -- guidance and gap encoding -------------------------------------------------------------------------


def test_guidance_follows_the_confident_query():
    """The authors' rule: the class score decides which query owns a pixel; the owner's mask probability is
    the guidance there."""
    masks = torch.full((1, 2, 4, 4), -10.0)
    masks[0, 0, :2] = 10.0  # query 0 (an object) covers the top half, says background below (-5)
    masks[0, 0, 2:] = -5.0
    masks[0, 1, 2:] = 5.0  # query 1 (no object) claims the bottom half
    logits = torch.tensor([[[8.0, -8.0], [-8.0, 8.0]]])
    guidance = mask_guidance(masks, logits, "ce")
    assert guidance.shape == (1, 1, 4, 4)
    assert guidance[0, 0, :2].min() > 0.99  # the confident object's mask
    assert guidance[0, 0, 2:].max() < 0.05  # the confident query owns the bottom too: background
    # Without class guidance the bottom would belong to query 1 (mask logit 5 > -5).
    assert mask_guidance(masks, logits.flip(-1), "ce")[0, 0, 2:].min() > 0.99
    # Focal-trained logits are read as sigmoid scores (the no-object column unused).
    focal = torch.tensor([[[8.0, 0.0], [-16.0, 0.0]]])
    assert mask_guidance(masks, focal, "focal")[0, 0, 2:].max() < 0.05
    assert mask_guidance(masks, focal.flip(1), "focal")[0, 0, 2:].min() > 0.99


def test_frame_gap_encoding_tells_gaps_apart_beyond_the_capacity():
    encoding = frame_gap_encoding([1, 2, 6, 40], 16, torch.device("cpu"), torch.float32)
    assert encoding.shape == (4, 16)
    distances = torch.cdist(encoding, encoding)
    assert (distances + torch.eye(4) * 10).min() > 0.1


# -- frames through the segmentor ----------------------------------------------------------------------


def test_a_new_memory_changes_nothing():
    """Zero-initialised read-out: a stage-1 decoder with a fresh memory gives what it gave without one,
    bit for bit on images (the same batch); on clips up to float rounding (frames are decoded in batches
    of ``I`` instead of one batch of ``I * T``)."""
    fresh = memory_segmentor(trained=False)
    plain = memoryless_segmentor()
    plain.load_state_dict({k: v for k, v in fresh.state_dict().items() if not k.startswith("mask_memory.")})
    images = torch.randn(2, 1, 3, 64, 64)
    with torch.no_grad():
        a, b = fresh(images), plain(images)
    for x, y in zip([a, *a["aux_outputs"]], [b, *b["aux_outputs"]]):
        assert torch.equal(x["pred_masks"], y["pred_masks"]) and torch.equal(
            x["pred_logits"], y["pred_logits"]
        )
    clip = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        a, b = fresh(clip), plain(clip)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=1e-5, atol=1e-6)


def test_t1_video_path_equals_the_image_path():
    """Frame 0 of a clip reads the no-memory embedding, as an image does: same masks as the frame decoded
    alone; later frames read the memory and differ from independent decoding."""
    model = memory_segmentor()
    clip = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        video = model(clip)
        image = model(clip[:, :1])
        later = model(clip[:, 2:3])
    assert image["pred_masks"].shape == (2, 4, 1, 16, 16) and image["pred_logits"].shape == (2, 4, 2)
    torch.testing.assert_close(video["pred_masks"][:, :, :1], image["pred_masks"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(video["pred_masks"][:, :, 2:3], later["pred_masks"], atol=1e-3)
    # Class logits of a track: the mean of its per-frame logits (the T=1 ones are the frame's own).
    assert video["pred_logits"].shape == (2, 4, 2)


def test_memory_outputs_keep_the_track_contract_and_images_match_the_memoryless_shapes():
    model = memory_segmentor()
    plain = memoryless_segmentor()
    for frames in (1, 4):
        clip = torch.randn(2, frames, 3, 64, 64)
        with torch.no_grad():
            a, b = model(clip), plain(clip)
        assert a["pred_masks"].shape == b["pred_masks"].shape == (2, 4, frames, 16, 16)
        assert [x["pred_masks"].shape for x in a["aux_outputs"]] == [
            x["pred_masks"].shape for x in b["aux_outputs"]
        ]


def test_stage2_instances_each_decode_their_own_frames():
    """Decoding instances (several per sample, with language inputs) through the memory equal decoding each
    instance's clip on its own."""
    torch.manual_seed(0)
    overrides = ["data.image_size=64", "model/mask_memory=tiny"]
    overrides += [f"model.segmentor.{k}={v}" for k, v in DECODER.items()]
    model = instantiate(compose_config("joint_image", overrides).model.segmentor).eval()  # stage-2 decoder
    assert model.mask_decoder.class_head == "cosine"
    memory_off_zero(model.mask_memory)
    clip = torch.randn(2, 3, 3, 64, 64)
    samples = torch.tensor([1, 0, 1])
    g = torch.Generator().manual_seed(0)
    language = random_language(3, g)
    with torch.no_grad():
        features = model.encode(clip)
        together = model.decode(features, 3, instance_samples=samples, **language)
        for i, sample in enumerate(samples.tolist()):
            alone = model.decode(
                model.encode(clip[sample : sample + 1]), 3, **{k: v[i : i + 1] for k, v in language.items()}
            )
            torch.testing.assert_close(
                together["pred_masks"][i], alone["pred_masks"][0], rtol=1e-4, atol=1e-4
            )
            torch.testing.assert_close(
                together["pred_logits"][i], alone["pred_logits"][0], rtol=1e-4, atol=1e-4
            )


def test_gradients_reach_the_memory_from_the_last_frame_only():
    """The last frame's loss alone trains the memory encoder, the memory attention and the first frame's
    features (through the bank); without memory, or with a detached bank, frame 0 gets nothing."""
    model = memory_segmentor().train()
    clip = torch.randn(1, 3, 3, 64, 64, requires_grad=True)
    out = model(clip)
    out["pred_masks"][:, :, -1].square().mean().backward()
    assert clip.grad[:, 0].abs().sum() > 0
    memory = model.mask_memory
    for part in (memory.encoders, memory.attention, memory.gap_proj, memory.mask_feature_proj):
        missing = [name for name, p in part.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing, missing

    plain = memoryless_segmentor().train()
    clip.grad = None
    plain(clip)["pred_masks"][:, :, -1].square().mean().backward()
    assert clip.grad[:, 0].abs().sum() == 0

    clip.grad = None
    model.zero_grad()
    features = model.encode(clip)
    out, _ = model.decode_with_memory(features, 3, memory=model.mask_memory.empty(detach=True))
    out["pred_masks"][:, :, -1].square().mean().backward()
    assert clip.grad[:, 0].abs().sum() == 0 and clip.grad[:, 2].abs().sum() > 0


def test_a_video_in_chunks_with_the_carried_bank_equals_one_pass():
    """The seam for streaming: chunk after chunk with the returned (detached) bank gives the one-pass masks,
    and the bank never holds more than ``capacity`` frames."""
    model = memory_segmentor(**{"mask_memory.capacity": 2})
    video = torch.randn(1, 6, 3, 64, 64)
    with torch.no_grad():
        whole = model(video)["pred_masks"]
        bank, chunks = model.mask_memory.empty(detach=True), []
        for start in range(0, 6, 2):
            out, bank = model.decode_with_memory(model.encode(video[:, start : start + 2]), 2, memory=bank)
            chunks.append(out["pred_masks"])
            assert len(bank.entries) <= 2
    torch.testing.assert_close(torch.cat(chunks, 2), whole, rtol=1e-4, atol=1e-4)
    assert [e.frame for e in bank.entries] == [4, 5] and bank.next_frame == 6


def test_a_bank_of_other_instances_is_refused():
    model = memory_segmentor()
    with torch.no_grad():
        _, bank = model.decode_with_memory(model.encode(torch.randn(2, 2, 3, 64, 64)), 2)
        with pytest.raises(ValueError, match="holds 2 decoding instances, this frame has 1"):
            model.decode_with_memory(model.encode(torch.randn(1, 1, 3, 64, 64)), 1, memory=bank)
    with pytest.raises(ValueError, match="no mask memory"):
        memoryless_segmentor().decode_with_memory(model.encode(torch.randn(1, 1, 3, 64, 64)), 1)


def test_the_paper_preset_stores_every_level_at_the_coarsest_size():
    model = memory_segmentor("default")
    with torch.no_grad():
        _, bank = model.decode_with_memory(model.encode(torch.randn(1, 2, 3, 64, 64)), 2)
    assert [tuple(f.shape[-2:]) for f in bank.entries[0].features] == [(4, 4)] * 3
    tiny = memory_segmentor("tiny")
    with torch.no_grad():
        _, bank = tiny.decode_with_memory(tiny.encode(torch.randn(1, 2, 3, 64, 64)), 2)
    assert [tuple(f.shape[-2:]) for f in bank.entries[0].features] == [(8, 8)] * 3


def test_only_the_coarse_levels_can_read_the_memory():
    """``read_levels=2``: the stride-4 map passes unchanged; the mask features still get the (upsampled)
    read-out of the finest reading level."""
    model = memory_segmentor(**{"mask_memory.read_levels": 2})
    with torch.no_grad():
        features = model.encode(torch.randn(1, 2, 3, 64, 64))
        out, bank = model.decode_with_memory(features, 2)
        assert out["pred_masks"].shape == (1, 4, 2, 16, 16) and len(bank.entries[0].features) == 2
        pixels = model.pixel_decoder(features.fpn)
        maps = [f[:1] for f in pixels.multi_scale_features]
        levels, mask_features = model.mask_memory.read(maps, pixels.mask_features[:1], bank)
    assert levels[2] is maps[2] and not torch.equal(levels[1], maps[1])
    assert not torch.equal(mask_features, pixels.mask_features[:1])
    with pytest.raises(ValueError, match=r"read_levels must be in \[1, 3\]"):
        MaskMemory(64, 64, num_levels=3, read_levels=4)


def test_only_the_joint_experiment_turns_the_memory_on():
    """The image and stage-1 experiments keep their outputs of before the memory; `joint` (images and
    videos) trains with the CPU preset."""
    from x2sam_lightning import cli

    for experiment in cli.available_experiments():
        memory = compose_config(experiment).model.segmentor.mask_memory
        if experiment == "joint":
            assert memory.capacity == 6 and memory.num_layers == 1, experiment
        else:
            assert memory is None, experiment
    assert compose_config("agnostic", ["model/mask_memory=default"]).model.segmentor.mask_memory.capacity == 6
