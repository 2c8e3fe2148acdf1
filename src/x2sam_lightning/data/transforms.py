"""SAM-style resize, pad and normalise: a :class:`DecodedClip` becomes a :class:`SegSample`.

Frames are resized so the longest side is ``image_size`` (bilinear, antialiased), normalised with the
ImageNet mean and std (what SAM2 uses), then padded bottom/right with zeros (= the mean colour after
normalisation) to ``image_size x image_size``. Masks use nearest-neighbour resizing and pad with False.

The work is split where it is cheapest: masks are resized and padded here, in the DataLoader worker
(they are decoded at the input size anyway); pixels stay uint8 at the source resolution (a view of the
decoded frames; ``SegSample.hflip`` records a flip) and become the model input on the device, when the
batch is moved there (:meth:`~x2sam_lightning.types.SegBatch.to`): a quarter of float32's bytes through
the worker queue and the host-to-device copy, and the resize runs on the accelerator.

Semantic-only sources store one object per class (DESIGN.md section 3), so they need nothing here; the
synthetic data has instance objects only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from x2sam_lightning.data.shards import DecodedClip
from x2sam_lightning.types import SegSample, TrackTargets

#: Sample-json keys that become explicit SegSample fields (the rest goes to ``meta``).
_CONSUMED_KEYS = ("objects", "categories", "task", "schema")


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the longest side to ``image_size`` (aspect ratio kept)."""
    scale = image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class ResizePadNormalize:
    """Resize longest side, normalise, pad to a square; optional horizontal flip for training.

    Masks are resized and padded here; pixels on the device (see the module docstring; the ImageNet
    statistics are fixed: the models undo exactly these, ``x2sam_lightning.normalization``).

    Args:
        image_size: side ``H = W`` of the model input.
        hflip_prob: probability of a horizontal flip (training). The flip mirrors pixels and masks only:
            referring expressions and ``attributes["position"]`` that say left/right are NOT rewritten, so
            keep it 0 for referring tasks until a text-aware flip exists.
        keep_original: also keep the masks at the source resolution (``targets.original_masks``, no
            copy): evaluation scores there.
    """

    def __init__(
        self,
        image_size: int = 128,
        hflip_prob: float = 0.0,
        keep_original: bool = False,
    ) -> None:
        self.image_size = int(image_size)
        self.keep_original = bool(keep_original)
        self.hflip_prob = float(hflip_prob)

    def mask_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The size masks are resized to, for :func:`~x2sam_lightning.data.shards.decode_sample` to
        resize each object as it decodes it; None when the source-resolution masks are kept too."""
        return None if self.keep_original else resized_shape(height, width, self.image_size)

    def __call__(self, clip: DecodedClip, rng: np.random.Generator | None = None) -> SegSample:
        """Args: clip with ``frames [T, h0, w0, 3]`` uint8 and ``masks [N, T, h0, w0]``.

        Returns:
            A SegSample with ``pixel_values [T, h0, w0, 3]`` uint8 (source frames, ``input_size = S``) and
            ``targets.masks [N, T, S, S]``.
        """
        size = self.image_size
        t, h0, w0, _ = clip.frames.shape
        h, w = resized_shape(h0, w0, size)
        flip = self.hflip_prob > 0 and rng is not None and rng.random() < self.hflip_prob
        # The decoded frames themselves, [T, h0, w0, 3] (channels last: no copy here, one plain copy in
        # collation). A flip is applied on the device after the resize (``hflip``), as ever: flipping
        # before it would differ by float rounding.
        pixels = torch.from_numpy(np.ascontiguousarray(clip.frames))
        masks = torch.from_numpy(clip.masks)
        n = masks.shape[0]
        # Masks may come decoded at the input size already (``mask_size``: resized as they are decoded).
        if tuple(masks.shape[-2:]) != (h, w):
            if n:
                flat = masks.reshape(n * t, 1, h0, w0).to(torch.uint8)
                masks = F.interpolate(flat, size=(h, w), mode="nearest-exact").reshape(n, t, h, w).bool()
            else:
                masks = torch.zeros((0, t, h, w), dtype=torch.bool)
        if (h, w) != (size, size):
            padded = torch.zeros((n, t, size, size), dtype=torch.bool)
            padded[..., :h, :w] = masks.flip(-1) if flip else masks
            masks = padded
        elif flip:
            masks = masks.flip(-1)  # a square source needs no padding (nor a copy)

        meta: dict[str, Any] = {k: v for k, v in clip.sample.items() if k not in _CONSUMED_KEYS}
        meta["frame_indices"] = clip.frame_indices
        if "frame_times" in clip.sample:
            meta["frame_times"] = [clip.sample["frame_times"][i] for i in clip.frame_indices]
        kept = set(clip.object_ids.tolist())
        # Everything but the masks, for prompts / expressions in later stages.
        meta["objects"] = [
            {k: v for k, v in obj.items() if k != "masks"}
            for obj in clip.sample["objects"]
            if obj["id"] in kept
        ]
        return SegSample(
            pixel_values=pixels,
            targets=TrackTargets(
                masks=masks,
                labels=torch.from_numpy(clip.labels),
                valid=torch.from_numpy(clip.valid),
                object_ids=torch.from_numpy(clip.object_ids),
                iscrowd=torch.from_numpy(clip.iscrowd),
                original_masks=torch.from_numpy(clip.masks) if self.keep_original else None,
            ),
            image_size=(h, w),
            original_size=(h0, w0),
            key=clip.key,
            source="",
            task=clip.sample["task"],
            categories=clip.categories,
            shard=clip.url,
            meta=meta,
            input_size=size,
            hflip=flip,
        )
