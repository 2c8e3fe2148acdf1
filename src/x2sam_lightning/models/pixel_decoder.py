"""Mask2Former's multi-scale deformable-attention pixel decoder, in pure PyTorch.

The coarsest ``num_transformer_levels`` input levels go through a deformable-attention transformer
encoder; each finer level is fused top-down by Mask2Former's FPN path (lateral 1x1 conv + upsampled
coarser output + 3x3 conv). The X2SAM authors feed all three SAM2 FPN levels (strides 4, 8, 16) to the
transformer (the default here); the CPU preset keeps the stride-4 level out of it, as the original
Mask2Former does with its stride-4 level, because deformable attention over every stride-4 token
dominates a CPU step. ``mask_features`` is a 1x1 projection of the finest output.

The sampling kernel is transformers' pure-PyTorch ``multi_scale_deformable_attention`` (``grid_sample``),
so no compiled op is needed. The attention module itself is written here because transformers'
``Mask2FormerPixelDecoder`` fixes 4 sampling points, 3 transformer levels and 32 GroupNorm groups, and
leaves its level embedding uninitialised outside ``Mask2FormerPreTrainedModel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerSinePositionEmbedding,
    multi_scale_deformable_attention,
)


@dataclass
class PixelDecoderOutput:
    """Output of :class:`PixelDecoder`.

    Attributes:
        mask_features: ``[N, mask_dim, h, w]`` per-pixel embeddings at the finest level (stride 4).
        multi_scale_features: ``L`` maps ``[N, hidden_dim, h_l, w_l]``, coarse to fine, for the mask
            decoder's round-robin cross-attention.
    """

    mask_features: Tensor
    multi_scale_features: list[Tensor]


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention (Deformable DETR) over ``num_levels`` flattened feature maps.

    Args:
        embed_dim: Channels of queries and values.
        num_heads: Attention heads.
        num_levels: Feature levels sampled by every query.
        num_points: Sampling points per head and level.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Deformable DETR's init: head h starts sampling along direction 2*pi*h/heads, point k at distance k.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, query: Tensor, value: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Attend.

        Args:
            query: ``[N, S_q, D]`` (position embedding already added).
            value: ``[N, S, D]`` flattened levels, ``S = sum(h_l * w_l)``.
            reference_points: ``[N, S_q, 2]`` normalised ``(x, y)`` in ``[0, 1]``.
            spatial_shapes: ``(h_l, w_l)`` of each level, in the order they are flattened in ``value``.

        Returns:
            ``[N, S_q, D]``.
        """
        n, num_queries, dim = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(n, value.shape[1], heads, dim // heads)
        offsets = self.sampling_offsets(query).view(n, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(n, num_queries, heads, levels, points)
        # Offsets are in pixels of each level: normalise by that level's (w, h).
        normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = (
            reference_points[:, :, None, None, None, :] + offsets / normaliser[None, None, None, :, None]
        )
        output = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return self.output_proj(output)


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN (Mask2Former's pixel-decoder layer)."""

    def __init__(
        self, dim: int, num_heads: int, num_levels: int, num_points: int, ffn_dim: int, dropout: float
    ) -> None:
        super().__init__()
        self.attn = MultiScaleDeformableAttention(dim, num_heads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim),
            nn.Dropout(dropout),
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """``x``, ``pos``: ``[N, S, D]``; returns ``[N, S, D]``."""
        x = self.norm1(x + self.dropout(self.attn(x + pos, x, reference_points, spatial_shapes)))
        return self.norm2(x + self.ffn(x))


class PixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder.

    Args:
        in_channels: Channels of each input level (fine to coarse), or one int for all levels.
        num_levels: Number of input levels, all returned in ``multi_scale_features``.
        num_transformer_levels: The coarsest levels that enter the deformable transformer (default: all);
            finer levels are fused by the FPN path.
        hidden_dim: Transformer width (channels of ``multi_scale_features``).
        mask_dim: Channels of ``mask_features``.
        num_layers: Deformable encoder layers (Mask2Former: 6).
        num_heads: Attention heads.
        num_points: Sampling points per head and level.
        ffn_dim: FFN hidden width (Mask2Former: 1024).
        dropout: Dropout in the encoder layers.
        num_groups: GroupNorm groups of the input projections (Mask2Former: 32).
    """

    def __init__(
        self,
        in_channels: int | list[int] = 256,
        num_levels: int = 3,
        num_transformer_levels: int | None = None,
        hidden_dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, int):
            in_channels = [in_channels] * num_levels
        if len(in_channels) != num_levels:
            raise ValueError(f"{len(in_channels)} in_channels for {num_levels} levels")
        self.num_levels, self.hidden_dim, self.mask_dim = num_levels, hidden_dim, mask_dim
        self.num_transformer_levels = num_levels if num_transformer_levels is None else num_transformer_levels
        if not 1 <= self.num_transformer_levels <= num_levels:
            raise ValueError(f"num_transformer_levels must be in [1, {num_levels}]")
        coarse_to_fine = in_channels[::-1]
        # Index 0 is the coarsest level: Mask2Former orders the transformer levels coarse to fine.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(num_groups, hidden_dim))
            for c in coarse_to_fine[: self.num_transformer_levels]
        )
        fpn_channels = coarse_to_fine[self.num_transformer_levels :]
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False), nn.GroupNorm(num_groups, hidden_dim))
            for c in fpn_channels
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
                nn.GroupNorm(num_groups, hidden_dim),
                nn.ReLU(),
            )
            for _ in fpn_channels
        )
        for conv in [*self.lateral_convs, *self.output_convs]:
            nn.init.kaiming_uniform_(conv[0].weight, a=1)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.level_embed = nn.Parameter(torch.randn(self.num_transformer_levels, hidden_dim))
        self.position_embedding = Mask2FormerSinePositionEmbedding(hidden_dim // 2, normalize=True)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                hidden_dim, num_heads, self.num_transformer_levels, num_points, ffn_dim, dropout
            )
            for _ in range(num_layers)
        )
        self.mask_projection = nn.Conv2d(hidden_dim, mask_dim, kernel_size=1)
        nn.init.kaiming_uniform_(self.mask_projection.weight, a=1)
        nn.init.zeros_(self.mask_projection.bias)

    @staticmethod
    def reference_points(
        spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """Pixel centres of every level, normalised to ``[0, 1]``: ``[S, 2]`` as ``(x, y)``."""
        points = []
        for h, w in spatial_shapes:
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([grid_x.flatten(), grid_y.flatten()], -1))
        return torch.cat(points)

    def forward(self, features: list[Tensor]) -> PixelDecoderOutput:
        """Fuse the levels.

        Args:
            features: ``num_levels`` maps ``[N, C_l, h_l, w_l]``, fine to coarse (as the mask encoder
                returns them).

        Returns:
            :class:`PixelDecoderOutput`.
        """
        coarse_to_fine = features[::-1][: self.num_levels]
        embeds, positions = [], []
        for level, x in enumerate(coarse_to_fine[: self.num_transformer_levels]):
            embeds.append(self.input_proj[level](x))
            # Built for one sample and broadcast: it depends on the map size only.
            pos = self.position_embedding((1, *x.shape[1:]), x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level].to(x.dtype))
        shapes = [(e.shape[2], e.shape[3]) for e in embeds]
        hidden = torch.cat([e.flatten(2).transpose(1, 2) for e in embeds], 1)
        pos = torch.cat(positions, 1)
        n = hidden.shape[0]
        reference = self.reference_points(shapes, hidden.device, hidden.dtype)[None].expand(n, -1, -1)
        for layer in self.layers:
            hidden = layer(hidden, pos, reference, shapes)
        outputs = [
            level.transpose(1, 2).reshape(n, -1, h, w)
            for level, (h, w) in zip(hidden.split([h * w for h, w in shapes], 1), shapes)
        ]
        for lateral, output, x in zip(
            self.lateral_convs, self.output_convs, coarse_to_fine[self.num_transformer_levels :]
        ):
            # Mask2Former's FPN path: upsample the previous (coarser) output bilinearly onto the lateral.
            up = F.interpolate(outputs[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(output(lateral(x) + up))
        return PixelDecoderOutput(
            mask_features=self.mask_projection(outputs[-1]), multi_scale_features=outputs
        )
