"""Collation: ``list[SegSample]`` (one source, one clip length) -> :class:`SegBatch`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from x2sam_lightning.types import SegBatch, SegSample


def collate_samples(samples: Sequence[SegSample]) -> SegBatch:
    """Stack samples that share their source and frame count ``T`` into a batch.

    Args:
        samples: ``B`` samples with ``pixel_values [T, 3, H, W]``.

    Returns:
        A SegBatch with ``pixel_values [B, T, 3, H, W]``.

    Raises:
        ValueError: for an empty list, mixed sources or mixed ``T`` / ``H x W`` (the batching must group
            samples first: every batch is one source and one clip length), or a batch in which some
            samples have a conversation and others not.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    sources = {s.source for s in samples}
    if len(sources) != 1:
        raise ValueError(
            f"a batch must hold one source, got {sorted(sources)} (keys {[s.key for s in samples]})"
        )
    shapes = {tuple(s.pixel_values.shape) for s in samples}
    if len(shapes) != 1:
        detail = ", ".join(f"{s.key}: {list(s.pixel_values.shape)}" for s in samples)
        raise ValueError(f"a batch must share T and H x W ([T, 3, H, W]); got {detail}")
    with_conversation = [s.conversation is not None for s in samples]
    if any(with_conversation) and not all(with_conversation):
        raise ValueError(f"some samples of the batch have no conversation: {[s.key for s in samples]}")
    return SegBatch(
        pixel_values=torch.stack([s.pixel_values for s in samples]),
        targets=[s.targets for s in samples],
        image_sizes=torch.tensor([s.image_size for s in samples], dtype=torch.long),
        original_sizes=torch.tensor([s.original_size for s in samples], dtype=torch.long),
        keys=[s.key for s in samples],
        tasks=[s.task for s in samples],
        source=samples[0].source,
        categories=[s.categories for s in samples],
        meta=[s.meta for s in samples],
        conversations=[s.conversation for s in samples] if all(with_conversation) else [],
    )
