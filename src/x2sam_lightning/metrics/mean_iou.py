"""Dataset-level semantic mIoU as a torchmetrics ``Metric`` (see :mod:`.functional.mean_iou`)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.mean_iou import _mean_iou_compute, _mean_iou_update


class MeanIoU(Metric):
    """mIoU averaged over the classes present in the ground truth (VSPW / detectron2 convention).

    The state is one summed ``[C, C]`` int64 confusion matrix (rows = ground truth).

    Args:
        num_classes: number of classes ``C``.
        ignore_index: ground-truth label to ignore (e.g. 255); labels outside ``[0, C)`` are ignored too.

    Inputs of :meth:`update`: ``preds`` and ``target`` integer class maps of one shape (e.g. ``[B, H, W]`` or
    ``[T, H, W]`` for a video).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` and ``target`` ``[...]`` integer class maps."""
        self.confmat += _mean_iou_update(preds, target, self.num_classes, self.ignore_index).to(
            self.confmat.device
        )

    def compute(self) -> dict[str, Tensor]:
        """``miou, iou_per_class [C], macc, pacc, fwiou`` in ``[0, 1]``."""
        return _mean_iou_compute(self.confmat)
