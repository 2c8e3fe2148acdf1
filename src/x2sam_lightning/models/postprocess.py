"""Instance (and class-agnostic) post-processing of segmentor outputs, Mask2Former style.

Per sample: score of a query = its best foreground class probability (softmax over classes + no-object,
no-object excluded; with the focal loss a per-class sigmoid, the no-object column unused) times its mask
quality (mean sigmoid probability inside its binary mask); the ``top_k`` queries are kept; their
mask logits are upsampled to the padded input size, cropped to the un-padded ``image_size``, resized to the
``original_size`` and binarised at logit 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def class_probabilities(logits: Tensor, class_loss: Literal["ce", "focal"] = "ce") -> Tensor:
    """``[..., C+1]`` logits -> ``[..., C]`` foreground class probabilities, as the loss trained them."""
    if class_loss == "focal":
        return logits[..., :-1].float().sigmoid()
    if class_loss != "ce":
        raise ValueError(f"class_loss must be 'ce' or 'focal', not {class_loss!r}")
    return logits.float().softmax(-1)[..., :-1]


def instance_postprocess(
    pred_logits: Tensor,
    pred_masks: Tensor,
    image_sizes: Tensor,
    original_sizes: Tensor,
    padded_size: tuple[int, int],
    top_k: int = 100,
    class_loss: Literal["ce", "focal"] = "ce",
) -> list[dict[str, Tensor]]:
    """Turn raw predictions into scored binary track masks.

    Args:
        pred_logits: ``[B, Q, C+1]`` class logits (last = no-object).
        pred_masks: ``[B, Q, T, h, w]`` mask logits.
        image_sizes: ``[B, 2]`` un-padded ``(h, w)`` inside the padded input.
        original_sizes: ``[B, 2]`` source ``(height, width)``.
        padded_size: ``(H, W)`` of the model input.
        top_k: Queries kept per sample (at most ``Q``).
        class_loss: How the logits were trained: ``"ce"`` (softmax) or ``"focal"`` (sigmoid).

    Returns:
        Per sample ``scores [K]`` float, ``labels [K]`` long, ``masks [K, T, H0, W0]`` bool, sorted by score.
    """
    results = []
    for b in range(pred_logits.shape[0]):
        probs = class_probabilities(pred_logits[b], class_loss)  # [Q, C]
        class_scores, labels = probs.max(-1)
        k = min(top_k, class_scores.shape[0])
        # Rank by class score first so only K masks are resized (Mask2Former also takes top-k before
        # weighting by mask quality).
        order = class_scores.topk(k).indices
        masks = pred_masks[b, order].float()  # [K, T, h, w]
        masks = F.interpolate(masks, size=padded_size, mode="bilinear", align_corners=False)
        h, w = (int(v) for v in image_sizes[b])
        height, width = (int(v) for v in original_sizes[b])
        masks = F.interpolate(masks[..., :h, :w], size=(height, width), mode="bilinear", align_corners=False)
        binary = masks > 0
        quality = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores = class_scores[order] * quality
        rank = scores.argsort(descending=True)
        results.append({"scores": scores[rank], "labels": labels[order][rank], "masks": binary[rank]})
    return results


class InstancePostprocess:
    """Callable wrapper of :func:`instance_postprocess` for Hydra (``top_k``, ``class_loss`` from config)."""

    def __init__(self, top_k: int = 100, class_loss: Literal["ce", "focal"] = "ce") -> None:
        self.top_k, self.class_loss = top_k, class_loss

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        image_sizes: Tensor,
        original_sizes: Tensor,
        padded_size: tuple[int, int],
    ) -> list[dict[str, Tensor]]:
        """See :func:`instance_postprocess`."""
        return instance_postprocess(
            pred_logits, pred_masks, image_sizes, original_sizes, padded_size, self.top_k, self.class_loss
        )
