"""Pixel normalisation shared by the data pipeline (which applies it) and the models (which undo it).

The segmentation input is normalised with the ImageNet statistics SAM2 was trained with; the Qwen3-VL
vision tower wants its own statistics, so the vision-language backbone maps one to the other.

The loader ships uint8 frames at their source resolution (a quarter of float32's bytes, and often far
fewer pixels than the model input); :func:`frames_to_model_input` turns them into the model input on
whatever device they are on, once, when a :class:`~x2sam_lightning.types.SegBatch` is moved there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_model_input(
    frames: Tensor,
    content_sizes: Sequence[Sequence[int]],
    source_sizes: Sequence[Sequence[int]],
    side: int,
    hflip: Sequence[bool] | None = None,
) -> Tensor:
    """SAM-style model input from uint8 frames: resize, normalise, pad.

    Each sample's frames are resized (bilinear, antialiased, in float32) from its source size to its
    content size, mirrored left-right where ``hflip`` says so, normalised with the ImageNet mean and std,
    ``(x / 255 - mean) / std``, and placed in the top-left corner of a ``side x side`` canvas of zeros
    (zero = the mean colour after normalisation). Samples of one source size are resized together. The
    float32 operations are the ones the DataLoader workers used to run, in the same order.

    Args:
        frames: ``[B, T, H0, W0, 3]`` uint8 (channels last, as decoded), each sample's frames in its
            top-left ``h0 x w0`` (the batch is padded to its largest source size).
        content_sizes: per sample ``(h, w)``, the resized content (longest side = ``side``).
        source_sizes: per sample ``(h0, w0)``.
        side: the model input side ``S``.
        hflip: per sample, mirror it (after the resize); None: none.

    Returns:
        ``[B, T, 3, S, S]`` float32 on the frames' device.

    Raises:
        TypeError: for frames that are not uint8 (already model input: normalising twice is refused).
        ValueError: for sizes that do not fit the frames or the canvas.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[4] != 3:
        raise TypeError(
            f"frames_to_model_input takes uint8 frames [B, T, H0, W0, 3], got {frames.dtype} "
            f"{list(frames.shape)} (pixels that are already model input are never normalised twice)"
        )
    b, t = frames.shape[:2]
    flips = [False] * b if hflip is None else [bool(f) for f in hflip]
    if len(content_sizes) != b or len(source_sizes) != b or len(flips) != b:
        raise ValueError(
            f"{b} samples but {len(content_sizes)} content sizes, {len(source_sizes)} source sizes and "
            f"{len(flips)} flips"
        )
    # (x / 255 - mean) / std = x * scale + shift, applied in place (the same float32 operations as ever).
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(frames.device)
    shift = (-torch.tensor(IMAGENET_MEAN, dtype=torch.float32) / std).view(1, 3, 1, 1).to(frames.device)
    out = torch.empty((b, t, 3, side, side), dtype=torch.float32, device=frames.device)
    groups: dict[tuple[int, int, int, int, bool], list[int]] = {}
    for i, ((h, w), (h0, w0)) in enumerate(zip(content_sizes, source_sizes)):
        if not (0 < h <= side and 0 < w <= side and 0 < h0 <= frames.shape[2] and 0 < w0 <= frames.shape[3]):
            raise ValueError(
                f"sample {i}: content {h}x{w} / source {h0}x{w0} do not fit the canvas {side} or the frames "
                f"{list(frames.shape[2:4])}"
            )
        groups.setdefault((int(h), int(w), int(h0), int(w0), flips[i]), []).append(i)
    for (h, w, h0, w0, flip), members in groups.items():
        n = len(members)
        run = members == list(range(members[0], members[0] + n))
        index = slice(members[0], members[0] + n) if run else torch.tensor(members, device=frames.device)
        source = frames[index, :, :h0, :w0].permute(0, 1, 4, 2, 3)  # [n, T, 3, h0, w0], a view
        if (h, w) != (h0, w0):
            source = F.interpolate(  # channels-last float32, as the workers used to resize
                source.flatten(0, 1).float(),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).reshape(n, t, 3, h, w)
        if flip:
            source = source.flip(-1)
        # A run of samples is written in place; scattered ones (mixed sizes) through a buffer.
        area = (
            out[index, :, :, :h, :w]
            if run
            else torch.empty((n, t, 3, h, w), dtype=torch.float32, device=frames.device)
        )
        area.copy_(source).mul_(scale).add_(shift)  # uint8 -> float32 and HWC -> CHW in the copy
        if not run:
            out[index, :, :, :h, :w] = area
        out[index, :, :, h:, :] = 0  # the padding only (none for a square source)
        out[index, :, :, :h, w:] = 0
    return out


def require_model_input(pixel_values: Tensor) -> None:
    """Models take model input only: uint8 frames straight from the loader are refused, never guessed.

    Raises:
        TypeError: for pixels that are not floating point.
    """
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"the model takes normalised float pixels, got {pixel_values.dtype} {list(pixel_values.shape)}: "
            "a SegBatch from the data pipeline carries uint8 frames until it is moved to the device "
            "(batch.to(device), which SegDataModule's transfer hook and Lightning's default transfer call)"
        )
