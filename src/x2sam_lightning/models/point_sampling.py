"""Point sampling for mask losses and matching (PointRend / Mask2Former), extended to tracks.

A track's masks ``[T, h, w]`` are treated as ``T`` channels of one map, so the same points are sampled on
every frame of the track. Coordinates are normalised ``(x, y)`` in ``[0, 1]`` (pixel centres of an
``h x w`` map are ``((j + 0.5) / w, (i + 0.5) / h)``), sampled bilinearly with ``align_corners=False``
and border padding, so a point between the outermost pixel centre and the image edge reads the edge pixel
(as ``F.interpolate`` does) instead of blending with zeros (Mask2Former's ``point_sample``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(inputs: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinearly sample maps at normalised points.

    Args:
        inputs: ``[N, C, H, W]`` maps (``C`` may be frames).
        coords: ``[N, P, 2]`` normalised ``(x, y)`` in ``[0, 1]``.
        align_corners: As in ``F.grid_sample``.

    Returns:
        ``[N, C, P]``.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(inputs.dtype)
    return F.grid_sample(
        inputs, grid, mode="bilinear", padding_mode="border", align_corners=align_corners
    ).squeeze(3)


def grid_coords(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Pixel centres of an ``height x width`` map as normalised points ``[height * width, 2]`` (row-major).

    Sampling a map of that size at these points returns its pixels exactly; sampling a smaller map
    bilinearly upsamples it (as ``F.interpolate(..., mode="bilinear", align_corners=False)``).
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], -1)


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Mask2Former's uncertainty of binary logits: ``-|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    frame_valid: Tensor | None = None,
) -> Tensor:
    """Points focused on uncertain regions, plus uniform random ones (PointRend training sampling).

    ``num_points * oversample_ratio`` random points are scored; the ``importance_sample_ratio`` share
    with the highest uncertainty is kept and the rest are drawn uniformly. For tracks, a point's
    uncertainty is the highest over the track's valid frames, so one set of points serves every frame.

    Args:
        coarse_logits: ``[N, T, h, w]`` mask logits (``T`` frames of each track).
        uncertainty_func: Maps ``[N, T, P]`` logits to uncertainties of the same shape.
        num_points: ``P``, points per track.
        oversample_ratio: ``>= 1``.
        importance_sample_ratio: In ``[0, 1]``.
        frame_valid: Optional ``[N, T]`` bool; invalid frames do not vote on uncertainty.

    Returns:
        ``[N, P, 2]`` normalised ``(x, y)`` points.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=coarse_logits.device)
    uncertainty = uncertainty_func(point_sample(coarse_logits, coords))  # [N, T, S]
    if frame_valid is not None:
        uncertainty = uncertainty.masked_fill(~frame_valid[:, :, None], float("-inf"))
    uncertainty = uncertainty.amax(1)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    index = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
    coords = torch.gather(coords, 1, index[:, :, None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=coarse_logits.device)], 1)
    return coords
