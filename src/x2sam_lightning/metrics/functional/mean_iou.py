"""Semantic-segmentation mIoU over a dataset-level confusion matrix.

Convention (the one the VSPW, ADE20K and COCO-stuff benchmarks score with): one ``[C, C]`` confusion matrix
summed over the whole dataset, ground-truth pixels outside ``[0, C)`` or equal to ``ignore_index`` left out
(with their predictions), and per-class IoU averaged over the classes **present in the ground truth**
(at least one gt pixel). References, which agree on this:

- VSPW: ``VSPW-dataset/VSPW_code``, ``utils.py::Evaluator.Mean_Intersection_over_Union`` (run by
  ``evaluator_test.py``);
- detectron2 / Mask2Former (ADE20K, COCO; used by X-SAM):
  ``detectron2/evaluation/sem_seg_evaluation.py::SemSegEvaluator.evaluate``.

A class that is predicted but absent from the ground truth does not enter the mean (unlike a plain
``nanmean`` over classes with a non-empty union).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _mean_iou_update(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> Tensor:
    """Confusion matrix of a batch.

    Args:
        preds: ``[...]`` integer predicted class map (e.g. ``[B, H, W]``), values in ``[0, C)``.
        target: same shape, integer ground-truth class map; values outside ``[0, C)`` or equal to
            ``ignore_index`` are ignored.
        num_classes: ``C``.
        ignore_index: label to ignore (e.g. 255), or None.

    Returns:
        ``[C, C]`` int64 confusion matrix, rows = ground truth, columns = prediction.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    preds, target = preds.reshape(-1), target.reshape(-1)
    if target.numel() == 0:
        return torch.zeros(num_classes, num_classes, dtype=torch.long, device=target.device)
    sentinel = num_classes * num_classes
    low, high = (int(v) for v in torch.aminmax(target))
    # one table maps every gt value to its confusion row offset, or to a sentinel past the matrix if ignored
    values = torch.arange(low, high + 1, device=target.device)
    valid = (values >= 0) & (values < num_classes)
    if ignore_index is not None:
        valid &= values != ignore_index
    table = torch.where(valid, values * num_classes, sentinel).int()
    p_low, p_high = (int(v) for v in torch.aminmax(preds))
    if p_low < 0 or p_high >= num_classes:
        scored = table.index_select(0, (target - low).int()) < sentinel
        if (((preds < 0) | (preds >= num_classes)) & scored).any():  # only scored pixels must be in range
            raise ValueError(f"predicted classes must lie in [0, {num_classes})")
        preds = preds.clamp(0, num_classes - 1)
    index = target.int() if low == 0 else (target - low).int()
    code = table.index_select(0, index) + preds.int()
    counts = torch.bincount(code, minlength=sentinel + num_classes)
    return counts[:sentinel].view(num_classes, num_classes).long()


def _mean_iou_compute(confmat: Tensor) -> dict[str, Tensor]:
    """mIoU and companions from a ``[C, C]`` confusion matrix (rows = ground truth).

    Returns:
        ``miou`` (mean IoU over classes with gt pixels), ``iou_per_class`` ``[C]`` (NaN for classes absent from
        the gt), ``macc`` (mean class accuracy over the same classes), ``pacc`` (pixel accuracy), ``fwiou``
        (frequency-weighted IoU); NaN when the matrix is empty.
    """
    confmat = confmat.double()
    tp = confmat.diagonal()
    pos_gt, pos_pred = confmat.sum(1), confmat.sum(0)
    valid = pos_gt > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=confmat.device)
    iou = torch.where(valid, tp / (pos_gt + pos_pred - tp).clamp(min=1), nan)
    acc = torch.where(valid, tp / pos_gt.clamp(min=1), nan)
    total = pos_gt.sum()
    n = valid.sum()
    return {
        "miou": iou[valid].sum() / n if n else nan,
        "iou_per_class": iou,
        "macc": acc[valid].sum() / n if n else nan,
        "pacc": tp.sum() / total if total else nan,
        "fwiou": (iou[valid] * pos_gt[valid]).sum() / total if total else nan,
    }


def mean_iou(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> dict[str, Tensor]:
    """mIoU of one batch treated as the whole dataset (see :func:`_mean_iou_compute` for the outputs)."""
    return _mean_iou_compute(_mean_iou_update(preds, target, num_classes, ignore_index))
