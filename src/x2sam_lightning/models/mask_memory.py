"""X2SAM's mask memory: each frame's features attend to the guided features of up to ``K`` earlier frames.

Per frame ``t`` of a clip (``Segmentor`` runs the loop, see docs/video.md)::

    pixel-decoder maps of frame t ──read──> memory-refined maps ──> mask decoder ──> masks, class logits
                  │                 ▲                                                    │
                  │         MemoryBank (FIFO, K)                                         │
                  └──────────write: memory encoder(maps, mask guidance) <────────────────┘

- **read** (:class:`MemoryAttention`, one per level the mask decoder reads, coarse to fine): the level's
  tokens (+ sine position) cross-attend to the bank's tokens of that level (+ sine position + an encoding
  of the frame gap), then an FFN. Pre-norm blocks with zero-initialised output layers: a new memory is
  the identity, so a stage-1 decoder loads unchanged. An empty bank (the first frame, and images) adds a
  learned no-memory embedding instead (zero-initialised as well). The mask features (stride 4) receive
  the finest level's read-out through a zero-initialised 1x1 projection, so the memory reaches the mask
  logits directly and not only through the queries.
- **write** (:class:`MemoryEncoder`): the guidance map ``sum_q softmax_q(mask_q + log score_q) *
  sigmoid(mask_q)`` (the pixel's owning query, weighted by how sure its class is: mask and class
  guidance), scaled ``* 20 - 10`` as SAM2 does, pooled to the memory size and added to the projected
  (pooled) features of the frame; a ConvNeXt fuser and a 1x1 projection give the guided feature. The raw
  (not memory-refined) maps are encoded, as in SAM2.

Cost per frame is constant in the clip length: ``K`` entries of fixed size at most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerSinePositionEmbedding

from x2sam_lightning.models.mask_decoder import AttentionBlock, FFNBlock
from x2sam_lightning.models.memory_bank import MemoryBank
from x2sam_lightning.models.postprocess import class_probabilities


def mask_guidance(
    pred_masks: Tensor, pred_logits: Tensor, class_loss: Literal["ce", "focal"] = "ce"
) -> Tensor:
    """Where the frame's confident objects are (the authors' mask + class guidance).

    Args:
        pred_masks: ``[N, Q, h, w]`` mask logits.
        pred_logits: ``[N, Q, C+1]`` class logits (last = no-object).
        class_loss: how the logits were trained (``"ce"`` softmax, ``"focal"`` sigmoid).

    Returns:
        ``[N, 1, h, w]`` in ``[0, 1]``: per pixel, the mask probability of the query that owns it, the
        owner chosen by ``softmax`` over queries of ``mask logit + log(best class probability)``.
    """
    scores = class_probabilities(pred_logits, class_loss).max(-1).values.clamp_min(1e-6)  # [N, Q]
    masks = pred_masks.float()
    owner = (masks + scores.log()[:, :, None, None]).softmax(1)
    return (owner * masks.sigmoid()).sum(1, keepdim=True).to(pred_masks.dtype)


def frame_gap_encoding(gaps: Sequence[int], dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Sinusoidal encoding ``[len(gaps), dim]`` of temporal distances (any gap, not only ``<= K``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.tensor(gaps, device=device, dtype=torch.float32)[:, None] * freqs[None]
    encoding = torch.cat([angles.sin(), angles.cos()], -1)
    if dim % 2:
        encoding = F.pad(encoding, (0, 1))
    return encoding.to(dtype)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, pointwise MLP, layer scale, residual (SAM2's memory fuser block)."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, h, w]`` -> ``[N, C, h, w]``."""
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.pwconv2(F.gelu(self.pwconv1(h))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class MemoryEncoder(nn.Module):
    """One level's guided feature: pooled frame features + pooled mask guidance, fused.

    Args:
        dim: channels of the level's features and of the guided feature.
        num_fuser_layers: ConvNeXt blocks of the fuser.
        guidance_scale, guidance_bias: the guidance in ``[0, 1]`` becomes ``g * scale + bias`` (SAM2's
            ``sigmoid_scale_for_mem_enc`` 20 and ``sigmoid_bias_for_mem_enc`` -10).
    """

    def __init__(
        self, dim: int, num_fuser_layers: int = 2, guidance_scale: float = 20.0, guidance_bias: float = -10.0
    ) -> None:
        super().__init__()
        self.feature_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.guidance_proj = nn.Conv2d(1, dim, kernel_size=1)
        self.fuser = nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(num_fuser_layers)))
        self.out_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.guidance_scale, self.guidance_bias = guidance_scale, guidance_bias

    def forward(self, features: Tensor, guidance: Tensor, size: tuple[int, int]) -> Tensor:
        """``features [N, C, h, w]``, ``guidance [N, 1, H, W]`` -> guided feature ``[N, C, *size]``."""
        features = _pool(features, size)
        guidance = _pool(guidance, size) * self.guidance_scale + self.guidance_bias
        return self.out_proj(self.fuser(self.feature_proj(features) + self.guidance_proj(guidance)))


class MemoryAttention(nn.Module):
    """One level's read: ``num_layers`` x (cross-attention to the memory tokens, FFN), pre-norm.

    Both output layers are zero-initialised, so a new memory attention is the identity. No self-attention
    over the frame's tokens: the pixel decoder already mixed them, and at the finest level it would cost
    ``(h w)^2`` per frame.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.ModuleList(
            AttentionBlock(dim, num_heads, dropout, pre_norm=True, zero_init_output=True, fused=True)
            for _ in range(num_layers)
        )
        self.ffn = nn.ModuleList(FFNBlock(dim, ffn_dim, dropout, pre_norm=True) for _ in range(num_layers))
        for block in self.ffn:
            nn.init.zeros_(block.net[-2].weight)
            nn.init.zeros_(block.net[-2].bias)

    def forward(self, x: Tensor, x_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        """``x [N, S, D]``, ``x_pos [1, S, D]``, ``memory [N, M, D]``, ``memory_pos [1, M, D]`` -> ``[N, S, D]``."""
        for attn, ffn in zip(self.attn, self.ffn):
            x = ffn(attn(x, x_pos, memory, memory_pos))
        return x


class MaskMemory(nn.Module):
    """Memory attention, memory encoder and the rules of the bank, over the levels the decoder reads.

    Built by the :class:`~x2sam_lightning.models.segmentor.Segmentor` from a partial: ``dim``, ``mask_dim``
    and ``num_levels`` follow the pixel and mask decoders.

    Args:
        dim: channels of the pixel decoder's multi-scale maps.
        mask_dim: channels of its mask features.
        num_levels: maps the mask decoder reads (the first ``num_levels`` of ``multi_scale_features``,
            coarse to fine); each gets its own encoder and attention.
        capacity: frames kept in the bank (``K``; the paper's final model: 6).
        num_layers: attention layers per level (the authors: 4).
        num_heads: attention heads.
        ffn_dim: FFN width of the attention layers.
        dropout: attention and FFN dropout.
        num_fuser_layers: ConvNeXt blocks in each memory encoder.
        memory_level: every level's guided feature is stored at the size of this level (0: the coarsest,
            keys per frame and level ``h_0 w_0``: what bounds the cost at 1024x1024 input); ``None``
            stores each at its own size (the finest memory, ``(h w)^2`` attention at the finest level).
        class_loss: how the class logits were trained (the guidance reads class probabilities as the
            loss defines them).
        read_levels: only the coarsest ``read_levels`` of the decoder's levels read the memory (``None``:
            all, the paper's multi-scale design). The finest level holds most tokens: leaving it out about
            halves the memory's cost on the CPU preset; the mask features then get the finest reading
            level's read-out, upsampled.
    """

    def __init__(
        self,
        dim: int,
        mask_dim: int,
        num_levels: int = 3,
        capacity: int = 6,
        num_layers: int = 4,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        num_fuser_layers: int = 2,
        memory_level: int | None = 0,
        class_loss: Literal["ce", "focal"] = "ce",
        read_levels: int | None = None,
    ) -> None:
        super().__init__()
        if read_levels is not None:
            if not 1 <= read_levels <= num_levels:
                raise ValueError(f"read_levels must be in [1, {num_levels}] or None, not {read_levels}")
            num_levels = read_levels
        if memory_level is not None and not 0 <= memory_level < num_levels:
            raise ValueError(f"memory_level must be a level in [0, {num_levels}) or None, not {memory_level}")
        if capacity < 1:
            raise ValueError(f"the mask memory keeps at least one frame, not capacity={capacity}")
        self.dim, self.num_levels, self.capacity = dim, num_levels, capacity
        self.memory_level, self.class_loss = memory_level, class_loss
        self.position_embedding = Mask2FormerSinePositionEmbedding(dim // 2, normalize=True)
        self.attention = nn.ModuleList(
            MemoryAttention(dim, num_layers, num_heads, ffn_dim, dropout) for _ in range(num_levels)
        )
        self.encoders = nn.ModuleList(MemoryEncoder(dim, num_fuser_layers) for _ in range(num_levels))
        self.gap_proj = nn.Linear(dim, dim)
        # Zero-initialised: a first frame (and an image) starts out exactly as without memory.
        self.no_memory = nn.Parameter(torch.zeros(num_levels, dim))
        self.mask_feature_proj = nn.Conv2d(dim, mask_dim, kernel_size=1)
        nn.init.zeros_(self.mask_feature_proj.weight)
        nn.init.zeros_(self.mask_feature_proj.bias)

    def empty(self, detach: bool = False) -> MemoryBank:
        """A bank for a new clip or video (``detach``: for streaming inference)."""
        return MemoryBank(self.capacity, detach=detach)

    def read(
        self, multi_scale_features: Sequence[Tensor], mask_features: Tensor, bank: MemoryBank
    ) -> tuple[list[Tensor], Tensor]:
        """Memory-refined maps of one frame.

        Args:
            multi_scale_features: the frame's maps ``[N, dim, h_l, w_l]``, coarse to fine.
            mask_features: ``[N, mask_dim, h, w]``.
            bank: the earlier frames' guided features (empty for the first frame).

        Returns:
            The refined maps (levels past ``num_levels`` unchanged) and mask features.
        """
        self._check_levels(multi_scale_features)
        levels = list(multi_scale_features)
        n = mask_features.shape[0]
        if bank.num_instances not in (None, n):
            raise ValueError(
                f"the memory bank holds {bank.num_instances} decoding instances, this frame has {n} "
                "(carry a bank only between chunks of the same instances)"
            )
        if bank.is_empty:
            for level in range(self.num_levels):
                levels[level] = (
                    levels[level] + self.no_memory[level].to(levels[level].dtype)[None, :, None, None]
                )
            finest = self.no_memory[-1].to(mask_features.dtype)[None, :, None, None]  # broadcast below
        else:
            encoding = frame_gap_encoding(bank.gaps(), self.dim, mask_features.device, mask_features.dtype)
            gaps = self.gap_proj(encoding)  # [K, D], one per entry
            for level in range(self.num_levels):
                x = levels[level]
                memory = torch.cat([e.features[level].flatten(2).transpose(1, 2) for e in bank.entries], 1)
                # Positions: the same sine map for every entry (normalised coordinates, so a memory pooled
                # to a coarser size lines up with the frame), plus the entry's frame-gap encoding.
                memory_pos = self._position(tuple(bank.entries[0].features[level].shape[-2:]), x)
                memory_pos = (memory_pos[:, None] + gaps[None, :, None]).flatten(1, 2)  # [1, K*m, D]
                tokens = x.flatten(2).transpose(1, 2)
                refined = self.attention[level](
                    tokens, self._position(tuple(x.shape[-2:]), x), memory, memory_pos
                )
                levels[level] = refined.transpose(1, 2).reshape(x.shape)
            finest = levels[self.num_levels - 1] - multi_scale_features[self.num_levels - 1]
            if finest.shape[-2:] != mask_features.shape[-2:]:
                finest = F.interpolate(
                    finest, size=mask_features.shape[-2:], mode="bilinear", align_corners=False
                )
        return levels, mask_features + self.mask_feature_proj(finest)

    def write(
        self,
        multi_scale_features: Sequence[Tensor],
        pred_masks: Tensor,
        pred_logits: Tensor,
        bank: MemoryBank,
    ) -> MemoryBank:
        """Encode the decoded frame and push it (FIFO).

        Args:
            multi_scale_features: the frame's raw (not memory-refined) maps, coarse to fine.
            pred_masks: ``[N, Q, h, w]`` the decoder's final mask logits for the frame.
            pred_logits: ``[N, Q, C+1]`` its class logits.
            bank: the bank before this frame.

        Returns:
            The bank with this frame's guided features (one map per level) appended.
        """
        self._check_levels(multi_scale_features)
        guidance = mask_guidance(pred_masks, pred_logits, self.class_loss)
        level = self.memory_level
        shared = None if level is None else tuple(multi_scale_features[level].shape[-2:])
        guided = [
            encoder(x, guidance, shared or tuple(x.shape[-2:]))
            for encoder, x in zip(self.encoders, multi_scale_features)
        ]
        return bank.push(guided)

    def _position(self, size: tuple[int, int], like: Tensor) -> Tensor:
        """Sine position ``[1, h*w, dim]`` of a map of ``size`` (normalised: comparable across sizes)."""
        pos = self.position_embedding((1, self.dim, *size), like.device, like.dtype)
        return pos.flatten(2).transpose(1, 2)

    def _check_levels(self, multi_scale_features: Sequence[Tensor]) -> None:
        if len(multi_scale_features) < self.num_levels:
            raise ValueError(
                f"the mask memory reads {self.num_levels} levels; got {len(multi_scale_features)} maps"
            )


def _pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool ``x`` to ``size`` (a no-op at that size already)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)
