"""Qwen3-VL vision inputs from the segmentation batch, in torch (no torchvision, no second decode).

The batch carries frames resized, padded and normalised for SAM2 (ImageNet statistics). The Qwen3-VL
vision tower wants its own statistics, a side that is a multiple of ``patch_size * merge_size``, and the
patch layout of transformers' processors:

- images (``Qwen2VLImageProcessor``): per image, patches ordered ``(grid_h / merge, grid_w / merge, merge,
  merge)`` and flattened as ``(C, temporal_patch, patch, patch)``, the image repeated
  ``temporal_patch_size`` times along time; ``grid_thw = (1, grid_h, grid_w)``. Checked against
  ``Qwen2VLImageProcessorPil`` in the tests.
- videos (``Qwen3VLVideoProcessor``): the frames grouped into ``grid_t = ceil(T / temporal_patch_size)``
  temporal patches (an odd clip padded by repeating its last frame, as the processor does), patches
  ordered ``(grid_t, grid_h / merge, grid_w / merge, merge, merge)`` and flattened as ``(C,
  temporal_patch, patch, patch)``; ``grid_thw = (grid_t, grid_h, grid_w)``. Checked against the
  processor's own output on a fixture (``tests/fixtures/qwen3vl_video``).

:func:`video_timestamps` gives the ``<t seconds>`` of each temporal patch as ``Qwen3VLProcessor`` writes
them into the prompt.
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
        temporal_patch_size: frames per temporal patch (an image is repeated to fill it, an odd video
            padded with its last frame).
        image_mean, image_std: the tower's normalisation of 0..1 pixels (images, and videos unless
            ``video_mean`` / ``video_std`` are given).
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
    video_mean: Sequence[float] | None = None
    video_std: Sequence[float] | None = None

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def tokens_per_image(self, side: int) -> int:
        """LLM tokens of one square image of ``side`` pixels (after the optional resize)."""
        side = self.image_size or side
        return (side // self.factor) ** 2

    def temporal_patches(self, num_frames: int) -> int:
        """Temporal patches of a ``num_frames`` video (an odd count is padded up)."""
        return -(-num_frames // self.temporal_patch_size)

    def tokens_per_video(self, num_frames: int, side: int) -> int:
        """``<|video_pad|>`` tokens of a ``num_frames`` video of square ``side`` frames (all patches)."""
        return self.temporal_patches(num_frames) * self.tokens_per_image(side)


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


def patchify_videos(videos: Tensor, spec: VisionInputSpec) -> tuple[Tensor, Tensor]:
    """Flatten normalised clips into Qwen3-VL video patches (``Qwen3VLVideoProcessor.patchify``'s layout).

    Args:
        videos: ``[N, T, C, H, W]`` already normalised with the tower's statistics; ``H`` and ``W``
            multiples of ``patch_size * merge_size``. ``T`` not a multiple of ``temporal_patch_size`` is
            padded by repeating the last frame.
        spec: the tower's patch geometry.

    Returns:
        ``patches [N * grid_t * grid_h * grid_w, C * temporal_patch * patch * patch]`` (video after video)
        and ``grid_thw [N, 3]``.
    """
    n, t, c, h, w = videos.shape
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frame size {h}x{w} is not a multiple of patch_size * merge_size = {p * m}")
    if pad := -t % tp:
        videos = torch.cat([videos, videos[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        t += pad
    gt, gh, gw = t // tp, h // p, w // p
    x = videos.reshape(n, gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # n, gt, gh/m, gw/m, m, m, C, tp, p, p
    patches = x.reshape(n * gt * gh * gw, c * tp * p * p)
    grid = torch.tensor([[gt, gh, gw]], dtype=torch.long, device=videos.device).expand(n, -1)
    return patches, grid


def video_timestamps(frame_times: Sequence[float], temporal_patch_size: int) -> list[float]:
    """Seconds of each temporal patch, as ``Qwen3VLProcessor`` writes them (``<t seconds>``, ``.1f``).

    The clip is padded with its last frame to a multiple of ``temporal_patch_size`` (as the pixels are),
    and each patch's time is the mean of its first and last frame's.

    Args:
        frame_times: seconds of each frame the LLM sees, in order.
        temporal_patch_size: frames per temporal patch.
    """
    times = [float(x) for x in frame_times]
    if not times:
        raise ValueError("a video needs at least one frame time")
    times += [times[-1]] * (-len(times) % temporal_patch_size)
    k = temporal_patch_size
    return [(times[i] + times[i + k - 1]) / 2 for i in range(0, len(times), k)]


def _to_tower(pixel_values: Tensor, spec: VisionInputSpec, video: bool) -> Tensor:
    """``[N, 3, S, S]`` SAM-normalised -> the tower's normalisation (and size)."""
    require_model_input(pixel_values)
    mean_in = pixel_values.new_tensor(spec.input_mean).view(1, 3, 1, 1)
    std_in = pixel_values.new_tensor(spec.input_std).view(1, 3, 1, 1)
    unit = pixel_values * std_in + mean_in  # back to 0..1
    if spec.image_size is not None and spec.image_size != unit.shape[-1]:
        size = (spec.image_size, spec.image_size)
        unit = F.interpolate(unit, size=size, mode="bicubic", align_corners=False, antialias=True)
        unit = unit.clamp(0.0, 1.0)
    mean_out = spec.video_mean if video and spec.video_mean is not None else spec.image_mean
    std_out = spec.video_std if video and spec.video_std is not None else spec.image_std
    mean = pixel_values.new_tensor(mean_out).view(1, 3, 1, 1)
    std = pixel_values.new_tensor(std_out).view(1, 3, 1, 1)
    return (unit - mean) / std


def vision_inputs(pixel_values: Tensor, spec: VisionInputSpec) -> tuple[Tensor, Tensor]:
    """SAM-normalised frames -> Qwen-VL image patches and grids.

    Args:
        pixel_values: ``[N, 3, S, S]`` frames as the data pipeline gives them (ImageNet-normalised).
        spec: the tower's input specification.

    Returns:
        See :func:`patchify_images`.
    """
    return patchify_images(_to_tower(pixel_values, spec, video=False), spec)


def video_inputs(pixel_values: Tensor, spec: VisionInputSpec) -> tuple[Tensor, Tensor]:
    """SAM-normalised clips -> Qwen3-VL ``pixel_values_videos`` and ``video_grid_thw``.

    Args:
        pixel_values: ``[B, T, 3, S, S]`` clips as the data pipeline gives them (ImageNet-normalised).
        spec: the tower's input specification.

    Returns:
        See :func:`patchify_videos`.
    """
    b, t = pixel_values.shape[:2]
    tower = _to_tower(pixel_values.flatten(0, 1), spec, video=True)
    return patchify_videos(tower.unflatten(0, (b, t)), spec)
