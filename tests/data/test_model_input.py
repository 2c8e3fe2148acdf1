"""Pixels cross DataLoader workers as uint8 source frames and become the model input on the device, once,
equal to what the workers used to make (resize, normalise, pad in float32 in the worker)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.shards import ClipSampler, DecodedClip, decode_sample, iter_raw_samples
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize, resized_shape
from x2sam_lightning.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    frames_to_model_input,
    require_model_input,
)
from x2sam_lightning.types import SegBatch


def _previous_pixels(frames: np.ndarray, size: int, flip: bool) -> torch.Tensor:
    """The pixel half of the transform before pixels moved to the device (verbatim): the reference."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    scale, shift = (1.0 / (255.0 * std)).view(1, 3, 1, 1), (-mean / std).view(1, 3, 1, 1)
    t, h0, w0, _ = frames.shape
    h, w = resized_shape(h0, w0, size)
    pixels = torch.zeros((t, 3, size, size), dtype=torch.float32)
    chw = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if (h, w) != (h0, w0):
        chw = F.interpolate(chw.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    area = pixels[:, :, :h, :w]
    area.copy_(chw.flip(-1) if flip else chw)
    area.mul_(scale).add_(shift)
    return pixels


def _clip(frames: np.ndarray, key: str) -> DecodedClip:
    t = frames.shape[0]
    return DecodedClip(
        frames=frames,
        masks=np.zeros((0, t, *frames.shape[1:3]), dtype=bool),
        valid=np.zeros((0, t), dtype=bool),
        labels=np.zeros(0, dtype=np.int64),
        object_ids=np.zeros(0, dtype=np.int64),
        iscrowd=np.zeros(0, dtype=bool),
        frame_indices=list(range(t)),
        sample={"task": "img_genseg", "objects": []},
        categories=[],
        key=key,
        url="u",
    )


def _model_input(clips: list[DecodedClip], transform: ResizePadNormalize) -> tuple[SegBatch, SegBatch]:
    samples = [transform(c, np.random.default_rng(0)) for c in clips]
    batch = collate_samples(samples)
    return batch, batch.to("cpu")


@pytest.mark.parametrize("dataset", ["synthetic_img", "synthetic_vid"])
@pytest.mark.parametrize("size", [48, 128, 200])  # down, none, up
@pytest.mark.parametrize("flip", [False, True])
def test_model_input_equals_the_previous_in_worker_path(tiny_root, dataset, size, flip):
    source = ShardSource("s", tiny_root / f"{dataset}-train.index.json")
    transform = ResizePadNormalize(size, hflip_prob=1.0 if flip else 0.0)
    clips = [
        decode_sample(raw, ClipSampler(4, mode="first"), mask_size=transform.mask_size)
        for raw in list(iter_raw_samples(source.urls, train=False))[:3]
    ]
    frames, moved = _model_input(clips, transform)
    assert frames.pixel_values.dtype == torch.uint8 and frames.input_size == size
    assert frames.pixel_values.shape[2:] == clips[0].frames.shape[1:]  # source resolution, channels last
    expected = torch.stack([_previous_pixels(c.frames, size, flip) for c in clips])
    assert moved.pixel_values.dtype == torch.float32 and moved.input_size is None
    torch.testing.assert_close(moved.pixel_values, expected, rtol=0, atol=1e-6)


def test_a_batch_of_different_source_sizes_is_padded_then_each_sample_resized_alone():
    rng = np.random.default_rng(3)
    shapes = [(2, 40, 64), (2, 64, 40), (2, 32, 32), (2, 40, 64)]  # the first and last resize together
    clips = [_clip(rng.integers(0, 256, (*s, 3), dtype=np.uint8), f"k{i}") for i, s in enumerate(shapes)]
    frames, moved = _model_input(clips, ResizePadNormalize(48))
    assert frames.pixel_values.shape == (4, 2, 64, 64, 3)  # padded to the largest source size
    assert frames.original_sizes.tolist() == [[40, 64], [64, 40], [32, 32], [40, 64]]
    expected = torch.stack([_previous_pixels(c.frames, 48, False) for c in clips])
    torch.testing.assert_close(moved.pixel_values, expected, rtol=0, atol=1e-6)
    assert moved.image_sizes.tolist() == [[30, 48], [48, 30], [48, 48], [30, 48]]


def test_frames_cost_a_quarter_of_the_bytes_and_are_normalised_exactly_once(tiny_root):
    clip = _clip(np.full((1, 128, 128, 3), 255, dtype=np.uint8), "white")
    frames, moved = _model_input([clip], ResizePadNormalize(128))
    assert frames.pixel_values.element_size() * 4 == moved.pixel_values.element_size()
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(moved.pixel_values[0, 0, :, 5, 7], white)
    again = moved.to("cpu")  # model input is moved as it is, never normalised again
    assert torch.equal(again.pixel_values, moved.pixel_values) and again.input_size is None
    with pytest.raises(TypeError, match="never normalised twice"):
        frames_to_model_input(moved.pixel_values, [[128, 128]], [[128, 128]], 128)
    with pytest.raises(TypeError, match=r"moved to the device \(batch.to\(device\)"):
        require_model_input(frames.pixel_values)
    with pytest.raises(ValueError, match="sample 0: content 64x64 / source 200x128 do not fit"):
        frames_to_model_input(frames.pixel_values, [[64, 64]], [[200, 128]], 64)


def test_collate_refuses_mixed_clip_lengths_or_input_sizes():
    rng = np.random.default_rng(0)
    a = ResizePadNormalize(32)(_clip(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8), "a"))
    b = ResizePadNormalize(32)(_clip(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), "b"))
    c = ResizePadNormalize(64)(_clip(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8), "c"))
    for pair in ((a, b), (a, c)):
        with pytest.raises(ValueError, match="must share T and the model input size"):
            collate_samples(list(pair))


class _Checker(pl.LightningModule):
    """Records the pixels every step of every verb sees (through SegDataModule's transfer hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen: dict[str, list[tuple[torch.dtype, tuple[int, ...], int | None]]] = {}

    def _see(self, stage: str, batch: SegBatch) -> torch.Tensor:
        require_model_input(batch.pixel_values)
        self.seen.setdefault(stage, []).append(
            (batch.pixel_values.dtype, tuple(batch.pixel_values.shape[-2:]), batch.input_size)
        )
        return (self.weight * batch.pixel_values.mean()) ** 2

    def training_step(self, batch, batch_idx):
        return self._see("train", batch)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._see("validate", batch)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._see("test", batch)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self._see("predict", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_every_verb_feeds_the_model_normalised_pixels_at_the_input_size(tiny_root):
    train = {"img": ShardSource("img", tiny_root / "synthetic_img-train.index.json")}
    val = {"vid": ShardSource("vid", tiny_root / "synthetic_vid-val.index.json")}
    dm = SegDataModule(train, val, batch_size=2, image_size=48, clip_length=2, shuffle_buffer=2)
    model = _Checker()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        limit_test_batches=1,
        limit_predict_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.predict(model, datamodule=dm)
    # Without the DataModule's hooks, Lightning's default transfer calls SegBatch.to as well.
    trainer.validate(model, dataloaders=dm.val_dataloader(), verbose=False)
    assert set(model.seen) == {"train", "validate", "test", "predict"}
    for stage, seen in model.seen.items():
        assert seen and all(s == (torch.float32, (48, 48), None) for s in seen), (stage, seen)


@pytest.mark.parametrize("keep_original", [False, True])
def test_masks_are_at_the_model_input_size_for_square_and_empty_samples(keep_original):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    empty = ResizePadNormalize(32, keep_original=keep_original)(_clip(frames, "none"))
    assert empty.targets.masks.shape == (0, 2, 32, 32)  # the canvas, not the source size
    clip = _clip(frames, "one")
    clip.masks = np.zeros((1, 2, 32, 32), dtype=bool)  # decoded at the input size (mask_size)
    clip.masks[0, :, 3:9, 0:5] = True
    (clip.valid, clip.labels, clip.object_ids, clip.iscrowd) = (
        np.ones((1, 2), dtype=bool),
        np.zeros(1, dtype=np.int64),
        np.arange(1),
        np.zeros(1, dtype=bool),
    )
    flipped = ResizePadNormalize(32, hflip_prob=1.0)(clip, np.random.default_rng(0))
    assert flipped.hflip and torch.equal(flipped.targets.masks, torch.from_numpy(clip.masks).flip(-1))
