"""Interactive segmentation mIoU / cIoU (COCO-Interactive), as X-SAM scores it.

Reference: ``wanghao9610/X-SAM``, ``xsam/evaluation/evaluators/img_intseg_evaluator.py::
ImgIntSegEvaluator._eval_predictions`` with ``xsam/dataset/utils/mask.py::calculate_iou`` (two classes,
foreground = 1, target pixels equal to the ignore value dropped from both masks) and
``xsam/evaluation/utils/iou.py::IouStat``: per prompt the foreground intersection and union;
mIoU (IouStat's "gIoU") = mean over prompts of I / U with an empty union counting as 1; cIoU = sum I /
sum U (1 when the summed union is empty). X-SAM prints both in percent; these are in 0-1. PSALM
(``psalm/eval/region_segmentation.py::compute_metric``) differs only by dividing by ``U + 1e-5`` and by
keeping the best of several candidate masks; this follows X-SAM, which X2SAM's evaluation descends from.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _interactive_iou_update(preds: Tensor, target: Tensor, ignore_index: int | None = 255) -> Tensor:
    """Sufficient statistics for a batch of prompts.

    Args:
        preds: ``(N, H, W)`` predicted masks (bool or 0/1).
        target: ``(N, H, W)`` ground truth (0/1, ``ignore_index`` for pixels left out).
        ignore_index: target value excluded from both masks (None: no ignore value).

    Returns:
        ``(4,)`` float64: sum of intersections, sum of unions, sum of per-prompt IoU, number of prompts.
    """
    if preds.shape != target.shape or preds.dim() < 2:
        raise ValueError(
            f"expected (N, H, W) preds and target, got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    pred = preds.reshape(preds.shape[0], -1) != 0
    gt = target.reshape(target.shape[0], -1)
    valid = gt != ignore_index if ignore_index is not None else torch.ones_like(gt, dtype=torch.bool)
    gt = (gt == 1) & valid
    pred = pred & valid
    inter = (pred & gt).sum(1, dtype=torch.int64).double()
    union = (pred | gt).sum(1, dtype=torch.int64).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)
    return torch.stack(
        [inter.sum(), union.sum(), iou.sum(), torch.tensor(float(len(iou)), dtype=torch.float64)]
    )


def _interactive_iou_compute(stats: Tensor) -> dict[str, Tensor]:
    """``mIoU`` (mean per-prompt IoU) and ``cIoU`` (sum I / sum U) in 0-1."""
    ciou = torch.where(stats[1] > 0, stats[0] / stats[1].clamp(min=1), 1.0)
    miou = torch.where(stats[3] > 0, stats[2] / stats[3].clamp(min=1), 0.0)
    return {"mIoU": miou, "cIoU": ciou}


def interactive_iou(preds: Tensor, target: Tensor, ignore_index: int | None = 255) -> dict[str, Tensor]:
    """Functional mIoU / cIoU of one batch (see ``InteractiveIoU``)."""
    return _interactive_iou_compute(_interactive_iou_update(preds, target, ignore_index))
