"""The loader's vectorised paths give what the plain ones give: masks decoded in groups, resizing,
normalisation and padding of a batch's frames on the device, and batches that cross DataLoader workers with their small tensors inline."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from x2sam_lightning.data import shards
from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.rle import decode_rle, decode_rles, encode_masks
from x2sam_lightning.data.shards import ClipSampler, decode_sample, iter_raw_samples
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize, resized_shape
from x2sam_lightning.normalization import IMAGENET_MEAN, IMAGENET_STD
from x2sam_lightning.types import INLINE_PICKLE_BYTES, SegBatch, TrackTargets


def test_decode_rles_equals_one_by_one_for_both_count_forms():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 9, 13)) > 0.6
    rles = encode_masks(masks)
    # The uncompressed (list) form is valid COCO too: column-major runs starting with zeros.
    flat = masks[2].T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
    runs = np.diff(np.concatenate(([0], change))).tolist()
    rles[2] = {"size": [9, 13], "counts": runs}  # a leading 0 run when the mask starts with a 1
    together = decode_rles(rles, 9, 13)
    assert together.dtype == bool and together.shape == (5, 9, 13)
    assert np.array_equal(together, masks)
    assert all(np.array_equal(together[i], decode_rle(r).astype(bool)) for i, r in enumerate(rles))
    assert decode_rles([], 9, 13).shape == (0, 9, 13)


@pytest.mark.parametrize("dataset", ["synthetic_img", "synthetic_vid"])
def test_masks_decoded_in_groups_equal_masks_decoded_object_by_object(tiny_root, monkeypatch, dataset):
    source = ShardSource("s", tiny_root / f"{dataset}-train.index.json")
    raws = list(iter_raw_samples(source.urls, train=False))
    clip, size = ClipSampler(4, mode="first"), (lambda h, w: resized_shape(h, w, 48))
    grouped = [decode_sample(r, clip, mask_size=size) for r in raws]
    monkeypatch.setattr(shards, "_DECODE_PIXELS", 1)  # every object alone
    alone = [decode_sample(r, clip, mask_size=size) for r in raws]
    assert sum(len(c.object_ids) for c in grouped) > len(grouped)  # several objects per sample
    for a, b in zip(grouped, alone):
        assert a.masks.shape == b.masks.shape and a.masks.shape[-2:] == size(*a.frames.shape[1:3])
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.valid, b.valid)
    # And both equal decoding at the source resolution, then resizing each frame with torch.
    full = [decode_sample(r, clip) for r in raws]
    for a, f in zip(grouped, full):
        n, t, h0, w0 = f.masks.shape
        flat = torch.from_numpy(f.masks).reshape(n * t, 1, h0, w0).to(torch.uint8)
        expected = F.interpolate(flat, size=a.masks.shape[-2:], mode="nearest-exact").bool()
        assert torch.equal(torch.from_numpy(a.masks).reshape(expected.shape), expected)


@pytest.mark.parametrize("shape", [(1, 40, 64), (3, 64, 40), (2, 32, 32)])
@pytest.mark.parametrize("flip", [False, True])
def test_resize_pad_normalise_equals_the_plain_formula(shape, flip):
    t, h0, w0 = shape
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (t, h0, w0, 3), dtype=np.uint8)
    masks = rng.random((2, t, h0, w0)) > 0.5
    clip = shards.DecodedClip(
        frames=frames,
        masks=masks,
        valid=np.ones((2, t), dtype=bool),
        labels=np.zeros(2, dtype=np.int64),
        object_ids=np.arange(2),
        iscrowd=np.zeros(2, dtype=bool),
        frame_indices=list(range(t)),
        sample={"task": "img_genseg", "objects": []},
        categories=[],
        key="k",
        url="u",
    )
    size = 32
    transform = ResizePadNormalize(size, hflip_prob=1.0 if flip else 0.0)
    out = transform(clip, np.random.default_rng(0))
    assert out.pixel_values.dtype == torch.uint8 and out.pixel_values.shape == (t, h0, w0, 3)
    out.source = "s"
    pixels = collate_samples([out]).to("cpu").pixel_values[0]  # the model input, made on the device
    h, w = resized_shape(h0, w0, size)
    unit = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    if (h, w) != (h0, w0):
        unit = F.interpolate(unit, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (unit - mean) / std
    mask = F.interpolate(
        torch.from_numpy(masks).reshape(2 * t, 1, h0, w0).to(torch.uint8), (h, w), mode="nearest-exact"
    )
    mask = mask.reshape(2, t, h, w).bool()
    if flip:
        expected, mask = expected.flip(-1), mask.flip(-1)
    assert pixels.shape == (t, 3, size, size) and pixels.is_contiguous()
    torch.testing.assert_close(pixels[..., :h, :w], expected, rtol=0, atol=1e-5)
    assert not pixels[..., h:, :].any() and not pixels[..., :, w:].any()
    assert out.targets.masks.shape == (2, t, size, size) and out.targets.masks.dtype == torch.bool
    assert torch.equal(out.targets.masks[..., :h, :w], mask) and not out.targets.masks[..., h:, w:].any()


def _batch(tiny_root) -> SegBatch:
    source = ShardSource("s", tiny_root / "synthetic_img-train.index.json")
    transform = ResizePadNormalize(64)
    samples = []
    for raw in list(iter_raw_samples(source.urls, train=False))[:4]:
        sample = transform(decode_sample(raw, ClipSampler(1, mode="first"), mask_size=transform.mask_size))
        sample.source = "s"
        samples.append(sample)
    return collate_samples(samples)


def test_a_batch_crosses_processes_with_small_tensors_inline(tiny_root):
    batch = _batch(tiny_root)
    batch.pixel_values = torch.zeros(4, 1, 3, 512, 512)  # 12 MB: above the inline limit
    assert batch.pixel_values.numel() * 4 > INLINE_PICKLE_BYTES
    data = ForkingPickler.dumps(batch)  # what a DataLoader worker's queue does
    # Tensors moved to shared memory are marked shared; the small ones were copied into the message.
    assert batch.pixel_values.is_shared()
    assert not any(t.masks.is_shared() or t.labels.is_shared() or t.valid.is_shared() for t in batch.targets)
    assert not batch.image_sizes.is_shared()
    back = pickle.loads(data)
    assert isinstance(back, SegBatch) and back.keys == batch.keys and back.meta == batch.meta
    assert torch.equal(back.pixel_values, batch.pixel_values)
    for a, b in zip(back.targets, batch.targets):
        for name in ("masks", "labels", "valid", "object_ids", "iscrowd"):
            x, y = getattr(a, name), getattr(b, name)
            assert type(x) is torch.Tensor and x.dtype == y.dtype and torch.equal(x, y)
        assert a.original_masks is None
    assert torch.equal(back.image_sizes, batch.image_sizes)


def test_bool_masks_cross_as_packed_bits():
    rng = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 2, 64, 96, generator=rng) > 0.5
    for given in (masks, masks.flip(-1), masks[:, :, :37]):  # contiguous, flipped view, odd bit count
        targets = TrackTargets(
            masks=given,
            labels=torch.arange(3),
            valid=torch.ones(3, 2, dtype=torch.bool),
            object_ids=torch.arange(3),
            iscrowd=torch.zeros(3, dtype=torch.bool),
        )
        data = ForkingPickler.dumps(targets)
        assert len(data) < given.numel() // 8 + 2000  # an eighth of the bool bytes, plus the small fields
        back = pickle.loads(data)
        assert back.masks.dtype == torch.bool and torch.equal(back.masks, given)
        assert torch.equal(back.valid, targets.valid) and torch.equal(back.iscrowd, targets.iscrowd)


def test_a_batchs_targets_cross_stacked_and_come_back_per_sample(tiny_root):
    batch = _batch(tiny_root)
    empty = batch.targets[0]
    batch.targets[1] = TrackTargets(  # a sample without objects
        masks=empty.masks[:0],
        labels=empty.labels[:0],
        valid=empty.valid[:0],
        object_ids=empty.object_ids[:0],
        iscrowd=empty.iscrowd[:0],
    )
    for keep_original in (False, True):  # source-resolution masks differ in size: sent per sample
        if keep_original:
            for t in batch.targets:
                t.original_masks = t.masks[..., : 10 + len(t), :20]
        data = bytes(ForkingPickler.dumps(batch))
        assert (b"_unstack_targets" in data) == (not keep_original)
        back = pickle.loads(data)
        assert [len(t) for t in back.targets] == [len(t) for t in batch.targets]
        for a, b in zip(back.targets, batch.targets):
            for name in ("masks", "labels", "valid", "object_ids", "iscrowd", "original_masks"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None and y is None) or (x.dtype == y.dtype and torch.equal(x, y))


def test_batches_from_two_workers_equal_batches_made_in_process(tiny_root):
    from torch.utils.data import DataLoader, IterableDataset

    batch = _batch(tiny_root)

    class Repeat(IterableDataset):
        def __iter__(self):
            yield batch

    crossed = list(DataLoader(Repeat(), batch_size=None, num_workers=2))
    assert len(crossed) == 2
    for back in crossed:
        assert torch.equal(back.pixel_values, batch.pixel_values) and back.keys == batch.keys
        assert all(torch.equal(a.masks, b.masks) for a, b in zip(back.targets, batch.targets))
