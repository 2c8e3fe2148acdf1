"""Qwen3-VL vision inputs from the segmentation batch, in torch (no torchvision, no second decode).

The batch carries frames resized, padded and normalised for SAM2 (ImageNet statistics). The Qwen3-VL
vision tower wants its own statistics, a side that is a multiple of ``patch_size * merge_size``, and the
patch layout of transformers' ``Qwen2VLImageProcessor``: per image, patches ordered
``(grid_h / merge, grid_w / merge, merge, merge)`` and flattened as ``(C, temporal_patch, patch, patch)``,
an image being repeated ``temporal_patch_size`` times along time. The layout is checked against
``Qwen2VLImageProcessorPil`` in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from x2sam_lightning.normalization import IMAGENET_MEAN, IMAGENET_STD, require_model_input


@dataclass(frozen=True)
class VisionInputSpec:
    """What the vision tower expects.

    Attributes:
        patch_size: ViT patch side.
        merge_size: patches merged per side into one LLM token.
        temporal_patch_size: frames per temporal patch (an image is repeated to fill it).
        image_mean, image_std: the tower's normalisation of 0..1 pixels.
        image_size: side the (square, padded) frame is resized to before patching; ``None`` keeps the
            segmentation input size. Must be a multiple of ``patch_size * merge_size``.
        input_mean, input_std: the normalisation the batch already carries (undone first).
    """

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: Sequence[float] = (0.5, 0.5, 0.5)
    image_std: Sequence[float] = (0.5, 0.5, 0.5)
    image_size: int | None = None
    input_mean: Sequence[float] = IMAGENET_MEAN
    input_std: Sequence[float] = IMAGENET_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def tokens_per_image(self, side: int) -> int:
        """LLM tokens of one square image of ``side`` pixels (after the optional resize)."""
        side = self.image_size or side
        return (side // self.factor) ** 2


def patchify_images(images: Tensor, spec: VisionInputSpec) -> tuple[Tensor, Tensor]:
    """Flatten normalised images into Qwen-VL patches.

    Args:
        images: ``[N, C, H, W]`` already normalised with ``spec.image_mean/std``; ``H`` and ``W`` multiples
            of ``patch_size * merge_size``.
        spec: the tower's patch geometry.

    Returns:
        ``patches [N * grid_h * grid_w, C * temporal_patch * patch * patch]`` and ``grid_thw [N, 3]``.
    """
    n, c, h, w = images.shape
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"image size {h}x{w} is not a multiple of patch_size * merge_size = {p * m}")
    gh, gw = h // p, w // p
    x = images.reshape(n, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # n, gh/m, gw/m, m, m, C, p, p
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, tp, -1, -1)  # ..., C, tp, p, p
    patches = x.reshape(n * gh * gw, c * tp * p * p)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=images.device).expand(n, -1)
    return patches, grid


def vision_inputs(pixel_values: Tensor, spec: VisionInputSpec) -> tuple[Tensor, Tensor]:
    """SAM-normalised frames -> Qwen-VL patches and grids.

    Args:
        pixel_values: ``[N, 3, S, S]`` frames as the data pipeline gives them (ImageNet-normalised).
        spec: the tower's input specification.

    Returns:
        See :func:`patchify_images`.
    """
    require_model_input(pixel_values)
    mean_in = pixel_values.new_tensor(spec.input_mean).view(1, 3, 1, 1)
    std_in = pixel_values.new_tensor(spec.input_std).view(1, 3, 1, 1)
    unit = pixel_values * std_in + mean_in  # back to 0..1
    if spec.image_size is not None and spec.image_size != unit.shape[-1]:
        size = (spec.image_size, spec.image_size)
        unit = F.interpolate(unit, size=size, mode="bicubic", align_corners=False, antialias=True)
        unit = unit.clamp(0.0, 1.0)
    mean = pixel_values.new_tensor(spec.image_mean).view(1, 3, 1, 1)
    std = pixel_values.new_tensor(spec.image_std).view(1, 3, 1, 1)
    return patchify_images((unit - mean) / std, spec)
