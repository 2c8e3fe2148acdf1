"""SAM-style resize, pad and normalise: a :class:`DecodedClip` becomes a :class:`SegSample`.

Frames are resized so the longest side is ``image_size`` (bilinear, antialiased), normalised with the
ImageNet mean and std (what SAM2 uses), then padded bottom/right with zeros (= the mean colour after
normalisation) to ``image_size x image_size``. Masks use nearest-neighbour resizing and pad with False.

Semantic-only sources store one object per class (DESIGN.md section 3), so they need nothing here; the
synthetic data has instance objects only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from x2sam_lightning.data.shards import DecodedClip
from x2sam_lightning.normalization import IMAGENET_MEAN, IMAGENET_STD
from x2sam_lightning.types import SegSample, TrackTargets

#: Sample-json keys that become explicit SegSample fields (the rest goes to ``meta``).
_CONSUMED_KEYS = ("objects", "categories", "task", "schema")


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the longest side to ``image_size`` (aspect ratio kept)."""
    scale = image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class ResizePadNormalize:
    """Resize longest side, normalise, pad to a square; optional horizontal flip for training.

    Args:
        image_size: side ``H = W`` of the model input.
        mean, std: per-channel normalisation of 0..1 pixels.
        hflip_prob: probability of a horizontal flip (training). The flip mirrors pixels and masks only:
            referring expressions and ``attributes["position"]`` that say left/right are NOT rewritten, so
            keep it 0 for referring tasks until a text-aware flip exists.
        keep_original: also keep the masks at the source resolution (``targets.original_masks``, no
            copy): evaluation scores there.
    """

    def __init__(
        self,
        image_size: int = 128,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        hflip_prob: float = 0.0,
        keep_original: bool = False,
    ) -> None:
        self.image_size = int(image_size)
        self.keep_original = bool(keep_original)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.hflip_prob = float(hflip_prob)
        # (x / 255 - mean) / std = x * scale + shift, applied in place.
        self._scale = (1.0 / (255.0 * self.std)).view(1, 3, 1, 1)
        self._shift = (-self.mean / self.std).view(1, 3, 1, 1)

    def mask_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The size masks are resized to, for :func:`~x2sam_lightning.data.shards.decode_sample` to
        resize each object as it decodes it; None when the source-resolution masks are kept too."""
        return None if self.keep_original else resized_shape(height, width, self.image_size)

    def __call__(self, clip: DecodedClip, rng: np.random.Generator | None = None) -> SegSample:
        """Args: clip with ``frames [T, h0, w0, 3]`` uint8 and ``masks [N, T, h0, w0]``.

        Returns:
            A SegSample with ``pixel_values [T, 3, S, S]`` and ``targets.masks [N, T, S, S]``.
        """
        size = self.image_size
        t, h0, w0, _ = clip.frames.shape
        h, w = resized_shape(h0, w0, size)
        flip = self.hflip_prob > 0 and rng is not None and rng.random() < self.hflip_prob
        # One padded output buffer; zero padding = the mean colour after normalisation.
        pixels = torch.zeros((t, 3, size, size), dtype=torch.float32)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)  # [T, 3, h0, w0]
        if (h, w) != (h0, w0):
            frames = F.interpolate(
                frames.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )
        area = pixels[:, :, :h, :w]
        area.copy_(frames.flip(-1) if flip else frames)  # uint8 -> float32 and HWC -> CHW in one pass
        area.mul_(self._scale).add_(self._shift)  # (x / 255 - mean) / std
        masks = torch.from_numpy(clip.masks)
        n = masks.shape[0]
        # Masks may come decoded at the input size already (``mask_size``: resized as they are decoded).
        if n and tuple(masks.shape[-2:]) != (h, w):
            flat = masks.reshape(n * t, 1, h0, w0).to(torch.uint8)
            masks = F.interpolate(flat, size=(h, w), mode="nearest-exact").reshape(n, t, h, w).bool()
        padded = torch.zeros((n, t, size, size), dtype=torch.bool)
        if n:
            padded[..., :h, :w] = masks.flip(-1) if flip else masks
        masks = padded

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
        )
