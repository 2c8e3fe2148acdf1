"""Mask and classification losses on sampled points, with per-point weights for invalid frames.

Point tensors are ``[M, P]`` (a track's frames and points flattened into ``P``); ``weights`` (0/1) drop
the points of frames where a target is not annotated. Matched losses are summed over tracks and divided
by ``num_masks`` (the DETR normalisation); pair-wise forms give the matcher's ``[Q, N]`` cost matrices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _ones_like(x: Tensor, weights: Tensor | None) -> Tensor:
    return torch.ones_like(x) if weights is None else weights.to(x.dtype)


def sigmoid_ce_loss(
    inputs: Tensor, targets: Tensor, num_masks: float, weights: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy averaged over each track's weighted points, summed over tracks / ``num_masks``.

    Args:
        inputs: ``[M, P]`` logits.
        targets: ``[M, P]`` in ``[0, 1]``.
        num_masks: Normaliser (number of target tracks, all-reduced).
        weights: Optional ``[M, P]`` 0/1 point weights.

    Returns:
        Scalar.
    """
    w = _ones_like(inputs, weights)
    loss = F.binary_cross_entropy_with_logits(inputs, targets.to(inputs.dtype), reduction="none")
    per_track = (loss * w).sum(1) / w.sum(1).clamp(min=1)
    return per_track.sum() / num_masks


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float, weights: Tensor | None = None) -> Tensor:
    """``1 - (2 |X n Y| + 1) / (|X| + |Y| + 1)`` per track on sigmoid probabilities, summed / ``num_masks``.

    Args: as :func:`sigmoid_ce_loss`.

    Returns:
        Scalar.
    """
    w = _ones_like(inputs, weights)
    probs = inputs.sigmoid() * w
    targets = targets.to(inputs.dtype) * w
    numerator = 2 * (probs * targets).sum(1)
    denominator = probs.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Focal loss (RetinaNet) on independent sigmoid logits, summed over queries and classes and divided by
    ``num_masks`` (Deformable DETR's normalisation).

    Args:
        inputs: ``[B, Q, C]`` logits.
        targets: ``[B, Q, C]`` one-hot (all zeros for unmatched queries).
        num_masks: Normaliser.
        alpha: Positive-class weight (negative if < 0 disables it).
        gamma: Focusing exponent.

    Returns:
        Scalar.
    """
    targets = targets.to(inputs.dtype)
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum() / num_masks


def pairwise_sigmoid_ce_loss(inputs: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cost of every (prediction, target) pair: mean BCE over the target's weighted points.

    Args:
        inputs: ``[Q, P]`` logits.
        targets: ``[N, P]`` in ``[0, 1]``.
        weights: Optional ``[N, P]`` 0/1 point weights of each target.

    Returns:
        ``[Q, N]``.
    """
    targets = targets.to(inputs.dtype)
    w = torch.ones_like(targets) if weights is None else weights.to(inputs.dtype)
    pos = F.softplus(-inputs)  # BCE against 1
    neg = F.softplus(inputs)  # BCE against 0
    loss = pos @ (targets * w).T + neg @ ((1 - targets) * w).T
    return loss / w.sum(1).clamp(min=1)[None]


def pairwise_dice_loss(inputs: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Dice cost of every (prediction, target) pair over the target's weighted points.

    Args: as :func:`pairwise_sigmoid_ce_loss`.

    Returns:
        ``[Q, N]``.
    """
    targets = targets.to(inputs.dtype)
    w = torch.ones_like(targets) if weights is None else weights.to(inputs.dtype)
    probs = inputs.sigmoid()
    numerator = 2 * probs @ (targets * w).T
    denominator = probs @ w.T + (targets * w).sum(-1)[None]
    return 1 - (numerator + 1) / (denominator + 1)
