"""Collation: ``list[SegSample]`` (one source, one clip length) -> :class:`SegBatch`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from x2sam_lightning.types import SegBatch, SegSample


def _stack_frames(samples: Sequence[SegSample]) -> torch.Tensor:
    """``[B, T, H0, W0, 3]`` uint8: each sample's source frames in the top-left corner of the batch's
    largest source size (zeros elsewhere; the device-side resize reads only each sample's own area)."""
    t = samples[0].pixel_values.shape[0]
    height = max(s.pixel_values.shape[1] for s in samples)
    width = max(s.pixel_values.shape[2] for s in samples)
    same = all(tuple(s.pixel_values.shape[1:3]) == (height, width) for s in samples)
    if same:  # the usual batch: one plain copy
        return torch.stack([s.pixel_values for s in samples])
    frames = torch.zeros((len(samples), t, height, width, 3), dtype=torch.uint8)
    for out, sample in zip(frames, samples):
        h0, w0 = sample.pixel_values.shape[1:3]
        out[:, :h0, :w0] = sample.pixel_values
    return frames


def collate_samples(samples: Sequence[SegSample]) -> SegBatch:
    """Stack samples that share their source and frame count ``T`` into a batch.

    Args:
        samples: ``B`` samples with ``pixel_values [T, h0, w0, 3]`` uint8 frames (what the transform
            makes; source sizes may differ) or, built by hand, model input ``[T, 3, H, W]`` float32.

    Returns:
        A SegBatch with ``pixel_values [B, T, H0, W0, 3]`` uint8 frames (padded to the largest source
        size; ``input_size`` set) or ``[B, T, 3, H, W]`` model input.

    Raises:
        ValueError: for an empty list, mixed sources or mixed ``T`` (the batching must group samples
            first: every batch is one source and one clip length), mixed model input sizes, or a batch
            in which some samples have a conversation and others not.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    sources = {s.source for s in samples}
    if len(sources) != 1:
        raise ValueError(
            f"a batch must hold one source, got {sorted(sources)} (keys {[s.key for s in samples]})"
        )
    input_sizes = {s.input_size for s in samples}
    frames = {s.pixel_values.shape[0] for s in samples}
    shapes = {tuple(s.pixel_values.shape) for s in samples}
    if len(input_sizes) != 1 or len(frames) != 1 or (None in input_sizes and len(shapes) != 1):
        detail = ", ".join(
            f"{s.key}: {list(s.pixel_values.shape)} {s.pixel_values.dtype} input size {s.input_size}"
            for s in samples
        )
        raise ValueError(f"a batch must share T and the model input size; got {detail}")
    (input_size,) = input_sizes
    if input_size is not None and any(s.pixel_values.dtype != torch.uint8 for s in samples):
        raise ValueError(f"samples with an input_size carry uint8 frames: {[s.key for s in samples]}")
    with_conversation = [s.conversation is not None for s in samples]
    if any(with_conversation) and not all(with_conversation):
        raise ValueError(f"some samples of the batch have no conversation: {[s.key for s in samples]}")
    pixels = torch.stack([s.pixel_values for s in samples]) if input_size is None else _stack_frames(samples)
    return SegBatch(
        pixel_values=pixels,
        targets=[s.targets for s in samples],
        image_sizes=torch.tensor([s.image_size for s in samples], dtype=torch.long),
        original_sizes=torch.tensor([s.original_size for s in samples], dtype=torch.long),
        keys=[s.key for s in samples],
        tasks=[s.task for s in samples],
        source=samples[0].source,
        categories=[s.categories for s in samples],
        meta=[s.meta for s in samples],
        conversations=[s.conversation for s in samples] if all(with_conversation) else [],
        input_size=input_size,
        hflip=[s.hflip for s in samples] if any(s.hflip for s in samples) else [],
    )
