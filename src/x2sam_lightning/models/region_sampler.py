"""The region sampler: visual prompts as LLM tokens, with no learned parameter (X2SAM section 3.2).

For each visual prompt (a binary mask on one frame: point, scribble, box and mask prompts all arrive as
masks), ``num_points`` points are drawn uniformly among its pixels (with replacement, so a one-pixel prompt
works), the mask-encoder features are sampled there bilinearly (``grid_sample`` at the pixel centres), and
consecutive groups of ``pool_kernel`` points are averaged: ``num_points / pool_kernel`` region tokens of
the feature width. A learned projector (in :class:`~x2sam_lightning.models.x2sam.X2SAM`) maps them to
the LLM width. The authors use 256 points and kernel 4 (64 tokens per region).

The points come from a ``torch.Generator``: training passes none (the global generator, seeded by
Lightning), evaluation one with a fixed seed, so evaluation prompts give the same tokens every run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RegionSampler(nn.Module):
    """Point-sample and pool mask-encoder features inside region masks.

    Args:
        num_points: points drawn per region.
        pool_kernel: points averaged into one token (must divide ``num_points``).
        feature: which mask-encoder map to read: ``"fpn"`` (FPN outputs) or ``"backbone"`` (Hiera stages).
        level: index into that list, fine to coarse (``0`` = stride 4).
    """

    def __init__(
        self, num_points: int = 256, pool_kernel: int = 4, feature: str = "fpn", level: int = 0
    ) -> None:
        super().__init__()
        if num_points % pool_kernel:
            raise ValueError(f"pool_kernel {pool_kernel} must divide num_points {num_points}")
        if feature not in ("fpn", "backbone"):
            raise ValueError(f"feature must be 'fpn' or 'backbone', not {feature!r}")
        self.num_points, self.pool_kernel, self.feature, self.level = num_points, pool_kernel, feature, level

    @property
    def tokens_per_region(self) -> int:
        return self.num_points // self.pool_kernel

    def sample_points(self, masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[R, H, W]`` bool masks -> ``[R, num_points, 2]`` normalised ``(x, y)`` pixel centres inside them.

        Raises:
            ValueError: a mask is empty (a prompt must cover at least one pixel).
        """
        r, h, w = masks.shape
        weights = masks.flatten(1).float()
        empty = weights.sum(1) == 0
        if bool(empty.any()):
            raise ValueError(f"region prompts {empty.nonzero().flatten().tolist()} are empty masks")
        device = masks.device
        # multinomial with a CPU generator: deterministic regardless of the device of the features.
        index = torch.multinomial(weights.cpu(), self.num_points, replacement=True, generator=generator).to(
            device
        )
        ys, xs = index // w, index % w
        return torch.stack([(xs.float() + 0.5) / w, (ys.float() + 0.5) / h], -1)

    def forward(
        self, features: Tensor, masks: Tensor, frame_index: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Region tokens.

        Args:
            features: ``[N, C, h, w]`` feature maps of the ``N`` frames of the batch.
            masks: ``[R, H, W]`` bool region prompts at the model input size.
            frame_index: ``[R]`` long, the frame (row of ``features``) each prompt is drawn on.
            generator: drives the point draw (None: torch's global generator).

        Returns:
            ``[R, num_points / pool_kernel, C]``.
        """
        if masks.shape[0] == 0:
            return features.new_zeros(0, self.tokens_per_region, features.shape[1])
        points = self.sample_points(masks, generator).to(features.dtype)  # [R, P, 2] in [0, 1]
        grid = (2.0 * points - 1.0)[:, :, None, :]  # [R, P, 1, 2] in [-1, 1], x first
        sampled = F.grid_sample(
            features.index_select(0, frame_index), grid, mode="bilinear", align_corners=False
        )  # [R, C, P, 1]
        tokens = sampled[..., 0].transpose(1, 2)  # [R, P, C]
        return tokens.unflatten(1, (self.tokens_per_region, self.pool_kernel)).mean(2)
