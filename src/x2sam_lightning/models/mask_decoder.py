"""Mask2Former-style masked-attention mask decoder, with X2SAM's language slots for stage 2.

Three optional inputs steer the decoder in stage 2 (the X2SAM / X-SAM design):

- ``prompt``: the projected ``<SEG>`` hidden state, added to every learnable query feature (the LLM's
  directive of what to segment);
- ``condition_tokens``: the projected hidden states of the tokens inside the ``<p>..</p>`` spans, which the
  queries attend to in each layer's token-to-image attention (output projection zero-initialised, so a
  stage-1 decoder starts out unchanged);
- ``conditions``: one pooled embedding per condition, which the cosine class scorer compares every query
  with (the classes of stage 2 are the conditions of the prompt).

Per layer (Mask2Former order): masked cross-attention of the queries to one image scale (round-robin over
the scales, coarse first; a query only sees pixels its previous mask covers, or everything if that mask is
empty), then -- only when condition tokens are given -- the token-to-image attention, self-attention
between queries, FFN. Prediction heads run on the initial queries and after every layer; all but the last
prediction become ``aux_outputs``.

Classification: stage 1 uses a linear head (``num_classes`` + no-object; 1 + 1 for class-agnostic
"object"). Stage 2 uses :class:`CosineClassScorer`: a query's logit for condition ``k`` is
``exp(logit_scale) * cos(query, condition_k)`` clamped to +-50, plus a learned no-object logit.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerSinePositionEmbedding


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box / mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class AttentionBlock(nn.Module):
    """Multi-head attention with residual, dropout and LayerNorm (post-norm, or pre-norm).

    Args:
        dim: Width.
        num_heads: Heads.
        dropout: Attention and residual dropout.
        pre_norm: Normalise before attention instead of after the residual.
        zero_init_output: Zero the output projection, so the block is the identity at initialisation.
        self_attention: Keys and values are the (normalised) queries themselves; ``memory`` is ignored.
        fused: Never form the ``[N, Q, S]`` attention-weight matrix (PyTorch's fused scaled-dot-product
            kernel): for many queries and keys, as in the mask memory's attention over earlier frames.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        pre_norm: bool = False,
        zero_init_output: bool = False,
        self_attention: bool = False,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.fused = fused
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        nn.init.xavier_uniform_(self.attn.in_proj_weight)
        nn.init.zeros_(self.attn.in_proj_bias)
        if zero_init_output:
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)

    def forward(
        self,
        x: Tensor,
        x_pos: Tensor | None,
        memory: Tensor | None = None,
        memory_pos: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``x`` ``[N, Q, D]`` to ``memory`` ``[N, S, D]``; masks are True where blocked."""
        h = self.norm(x) if self.pre_norm else x
        query = h if x_pos is None else h + x_pos
        if self.self_attention:
            key, memory = query, h
        else:
            key = memory if memory_pos is None else memory + memory_pos
        if key_padding_mask is not None:
            # A row whose keys are all padding would give NaN: let it attend, then drop its output.
            empty = key_padding_mask.all(-1)
            key_padding_mask = key_padding_mask & ~empty[:, None]
        out = self.attn(
            query,
            key,
            memory,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=not self.fused,
        )[0]
        if key_padding_mask is not None:
            out = out.masked_fill(empty[:, None, None], 0.0)
        x = x + self.dropout(out)
        return x if self.pre_norm else self.norm(x)


class FFNBlock(nn.Module):
    """Linear-ReLU-Linear with residual, dropout and LayerNorm."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim),
            nn.Dropout(dropout),
        )
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_norm:
            return x + self.net(self.norm(x))
        return self.norm(x + self.net(x))


class MaskDecoderLayer(nn.Module):
    """One decoder layer: masked query-to-image attention, [token-to-image attention], self-attention, FFN."""

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float, pre_norm: bool, with_conditions: bool
    ) -> None:
        super().__init__()
        self.cross_attn = AttentionBlock(dim, num_heads, dropout, pre_norm)
        # Always pre-norm: with its output projection zero-initialised the block is then exactly the
        # identity (a post-norm block would re-normalise its input and change a stage-1 decoder).
        self.condition_attn = (
            AttentionBlock(dim, num_heads, dropout, pre_norm=True, zero_init_output=True)
            if with_conditions
            else None
        )
        self.self_attn = AttentionBlock(dim, num_heads, dropout, pre_norm, self_attention=True)
        self.ffn = FFNBlock(dim, ffn_dim, dropout, pre_norm)

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        attn_mask: Tensor | None,
        condition_tokens: Tensor | None = None,
        condition_token_padding: Tensor | None = None,
    ) -> Tensor:
        """``queries``/``query_pos`` ``[N, Q, D]``, ``memory``/``memory_pos`` ``[N, S, D]``,
        ``attn_mask`` ``[N * heads, Q, S]``, ``condition_tokens`` ``[N, L, D]``; returns ``[N, Q, D]``."""
        queries = self.cross_attn(queries, query_pos, memory, memory_pos, attn_mask=attn_mask)
        if self.condition_attn is not None and condition_tokens is not None:
            queries = self.condition_attn(
                queries, query_pos, condition_tokens, None, key_padding_mask=condition_token_padding
            )
        queries = self.self_attn(queries, query_pos)
        return self.ffn(queries)


class CosineClassScorer(nn.Module):
    """Class logits as scaled cosine similarity between queries and condition embeddings (X2SAM).

    Args:
        dim: Width of queries and conditions.
        init_logit_scale: Initial ``logit_scale`` (CLIP's ``log(1 / 0.07)``).
        max_logit: Logits are clamped to ``[-max_logit, max_logit]``.
    """

    def __init__(
        self, dim: int, init_logit_scale: float = math.log(1 / 0.07), max_logit: float = 50.0
    ) -> None:
        super().__init__()
        self.query_proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        # The no-object logit depends on the query (a scalar would make "no object" a fixed threshold).
        self.no_object = nn.Linear(dim, 1)
        self.max_logit = max_logit

    def forward(
        self, queries: Tensor, conditions: Tensor, condition_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Score.

        Args:
            queries: ``[N, Q, D]`` normalised decoder queries.
            conditions: ``[N, K, D]`` condition embeddings.
            condition_padding_mask: ``[N, K]`` True for padded conditions (their logit becomes -1e4).

        Returns:
            ``[N, Q, K + 1]`` logits, the last column is no-object.
        """
        q = F.normalize(self.query_proj(queries), dim=-1)
        c = F.normalize(conditions, dim=-1)
        logits = (self.logit_scale.exp() * torch.einsum("nqd,nkd->nqk", q, c)).clamp(
            -self.max_logit, self.max_logit
        )
        if condition_padding_mask is not None:
            logits = logits.masked_fill(condition_padding_mask[:, None, :], -1e4)
        return torch.cat([logits, self.no_object(queries)], -1)


class SpatialPrior(nn.Module):
    """Per-query quadratic spatial term of the mask logits: ``a . [1, x, y, x^2, y^2, xy]`` over pixel
    centres in ``[-1, 1]`` (a log-Gaussian is quadratic, so one query can place a bump anywhere).

    Args:
        dim: query width; the six coefficients are a zero-initialised linear function of the query.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.coefficients = nn.Linear(dim, 6)
        nn.init.zeros_(self.coefficients.weight)
        nn.init.zeros_(self.coefficients.bias)

    def forward(self, queries: Tensor, size: tuple[int, int]) -> Tensor:
        """``queries [N, Q, D]`` -> ``[N, Q, h, w]`` logits to add to the masks."""
        h, w = size
        ys = (torch.arange(h, device=queries.device, dtype=queries.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=queries.device, dtype=queries.dtype) + 0.5) / w * 2 - 1
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        basis = torch.stack([torch.ones_like(x), x, y, x * x, y * y, x * y])  # [6, h, w]
        return torch.einsum("nqk,khw->nqhw", self.coefficients(queries), basis)


class MaskDecoder(nn.Module):
    """Masked-attention mask decoder.

    Args:
        in_channels: Channels of the pixel decoder's ``multi_scale_features``.
        hidden_dim: Query width.
        mask_dim: Channels of ``mask_features`` (the mask-embedding output width).
        num_queries: Learnable queries.
        num_classes: Classes of the linear head (1 = class-agnostic "object"); a no-object logit is
            appended. Unused by the cosine scorer (its classes are the conditions).
        num_layers: Decoder layers (Mask2Former: 9).
        num_heads: Attention heads.
        ffn_dim: FFN width (Mask2Former: 2048).
        num_feature_levels: Scales visited round-robin (coarse to fine).
        dropout: Dropout everywhere.
        pre_norm: Pre-norm layers (Mask2Former uses post-norm).
        mask_threshold: A pixel is visible to a query if its previous mask probability is >= this.
        condition_dim: Width of the stage-2 inputs (prompt, condition tokens, conditions); ``None``
            builds no token-to-image attention (stage 1). If it differs from ``hidden_dim`` a linear
            projection is added.
        class_head: ``"linear"`` (stage 1) or ``"cosine"`` (:class:`CosineClassScorer`; needs conditions).
        spatial_prior: Add to every query's mask logits a quadratic function of the pixel coordinates
            whose coefficients the query predicts (:class:`SpatialPrior`): a log-Gaussian bump or a ramp
            where "top left" or "the largest" says, cheap to learn from language. Zero-initialised, so
            it starts as a no-op and a stage-1 decoder loads unchanged.
    """

    def __init__(
        self,
        in_channels: int = 256,
        hidden_dim: int = 256,
        mask_dim: int = 256,
        num_queries: int = 100,
        num_classes: int = 1,
        num_layers: int = 9,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_feature_levels: int = 3,
        dropout: float = 0.0,
        pre_norm: bool = False,
        mask_threshold: float = 0.5,
        condition_dim: int | None = None,
        class_head: Literal["linear", "cosine"] = "linear",
        spatial_prior: bool = False,
    ) -> None:
        super().__init__()
        if class_head == "cosine" and condition_dim is None:
            raise ValueError("class_head='cosine' scores queries against conditions: set condition_dim")
        self.num_heads = num_heads
        self.num_feature_levels = num_feature_levels
        self.mask_threshold = mask_threshold
        self.position_embedding = Mask2FormerSinePositionEmbedding(hidden_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1) if in_channels != hidden_dim else nn.Identity()
            for _ in range(num_feature_levels)
        )
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        with_conditions = condition_dim is not None
        self.hidden_dim, self.condition_dim = hidden_dim, condition_dim
        self.condition_proj: nn.Module | None = None
        if with_conditions:
            self.condition_proj = (
                nn.Linear(condition_dim, hidden_dim) if condition_dim != hidden_dim else nn.Identity()
            )
        self.layers = nn.ModuleList(
            MaskDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, pre_norm, with_conditions)
            for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_head = class_head
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1) if class_head == "linear" else None
        self.class_scorer = CosineClassScorer(hidden_dim) if class_head == "cosine" else None
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.spatial_prior = SpatialPrior(hidden_dim) if spatial_prior else None

    def _predict(
        self,
        queries: Tensor,
        mask_features: Tensor,
        attn_size: tuple[int, int],
        conditions: Tensor | None,
        condition_padding_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Heads on ``queries`` ``[N, Q, D]``: logits ``[N, Q, C+1]``, masks ``[N, Q, h, w]`` and the
        next layer's attention mask ``[N * heads, Q, attn_h * attn_w]`` (True = blocked)."""
        normed = self.decoder_norm(queries)
        if self.class_scorer is not None:
            logits = self.class_scorer(normed, conditions, condition_padding_mask)
        else:
            logits = self.class_embed(normed)
        masks = torch.einsum("nqc,nchw->nqhw", self.mask_embed(normed), mask_features)
        if self.spatial_prior is not None:
            masks = masks + self.spatial_prior(normed, masks.shape[-2:])
        with torch.no_grad():
            small = F.interpolate(masks.detach(), size=attn_size, mode="bilinear", align_corners=False)
            blocked = (small.sigmoid() < self.mask_threshold).flatten(2)
            # Mask2Former: a query whose mask is empty would attend to nothing (NaN); let it see everything.
            blocked[blocked.all(-1)] = False
            blocked = blocked.repeat_interleave(self.num_heads, dim=0)
        return logits, masks, blocked

    def forward(
        self,
        multi_scale_features: list[Tensor],
        mask_features: Tensor,
        prompt: Tensor | None = None,
        condition_tokens: Tensor | None = None,
        condition_token_padding: Tensor | None = None,
        conditions: Tensor | None = None,
        condition_padding_mask: Tensor | None = None,
    ) -> dict[str, Any]:
        """Decode.

        Args:
            multi_scale_features: ``num_feature_levels`` maps ``[N, C, h_l, w_l]``, coarse to fine.
            mask_features: ``[N, mask_dim, h, w]``.
            prompt: Optional ``[N, condition_dim]`` ``<SEG>`` embedding, added to every query feature.
            condition_tokens: Optional ``[N, L, condition_dim]`` tokens of the ``<p>..</p>`` spans for the
                token-to-image attention.
            condition_token_padding: Optional ``[N, L]`` bool, True where a token is padding (a row that is
                all padding attends to nothing).
            conditions: Optional ``[N, K, condition_dim]`` pooled condition embeddings for the cosine
                class scorer.
            condition_padding_mask: Optional ``[N, K]`` bool, True where a condition is padding.

        Returns:
            ``pred_logits [N, Q, C+1]``, ``pred_masks [N, Q, h, w]`` (mask logits) and ``aux_outputs``,
            a list of ``num_layers`` dicts of the same keys (the query init and all layers but the last).
        """
        given = {"prompt": prompt, "condition_tokens": condition_tokens, "conditions": conditions}
        if self.condition_proj is None and any(v is not None for v in given.values()):
            raise ValueError("this decoder was built without condition_dim and takes no stage-2 inputs")
        if self.class_scorer is not None and conditions is None:
            raise ValueError("the cosine class scorer needs conditions")
        if conditions is not None:
            conditions = self.condition_proj(conditions)
        if condition_tokens is not None:
            condition_tokens = self.condition_proj(condition_tokens)
        memories, memory_pos, sizes = [], [], []
        for level in range(self.num_feature_levels):
            x = multi_scale_features[level]
            sizes.append((x.shape[-2], x.shape[-1]))
            # Built for one sample and broadcast: it depends on the map size only.
            pos = self.position_embedding((1, *x.shape[1:]), x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
            memory_pos.append(pos.flatten(2).transpose(1, 2))
            x = self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(x.transpose(1, 2))

        n = mask_features.shape[0]
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)
        queries = self.query_feat.weight[None].expand(n, -1, -1)
        if prompt is not None:
            queries = queries + self.condition_proj(prompt)[:, None, :]
        logits, masks, attn_mask = self._predict(
            queries, mask_features, sizes[0], conditions, condition_padding_mask
        )
        predictions = [(logits, masks)]
        for i, layer in enumerate(self.layers):
            level = i % self.num_feature_levels
            queries = layer(
                queries,
                query_pos,
                memories[level],
                memory_pos[level],
                attn_mask,
                condition_tokens,
                condition_token_padding,
            )
            next_size = sizes[(i + 1) % self.num_feature_levels]
            logits, masks, attn_mask = self._predict(
                queries, mask_features, next_size, conditions, condition_padding_mask
            )
            predictions.append((logits, masks))
        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": lg, "pred_masks": mk} for lg, mk in predictions[:-1]],
        }
