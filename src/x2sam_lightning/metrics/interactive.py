"""Interactive segmentation mIoU / cIoU (img_intseg, COCO-Interactive)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.interactive import _interactive_iou_compute, _interactive_iou_update


class InteractiveIoU(Metric):
    """mIoU and cIoU of interactive (point / scribble / box / mask prompted) segmentation, as X-SAM's
    ``ImgIntSegEvaluator``: per prompt the IoU of the predicted mask with the prompted object's mask.

    Args:
        ignore_index: target value whose pixels are left out of both masks (X-SAM's ignore value, 255).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ignore_index: int | None = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("stats", torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of prompts.

        Args:
            preds: ``(N, H, W)`` predicted binary masks, one per prompt.
            target: ``(N, H, W)`` ground truth (0/1, ``ignore_index`` where not evaluated).
        """
        self.stats += _interactive_iou_update(preds, target, self.ignore_index).to(self.stats.device)

    def compute(self) -> dict[str, Tensor]:
        """``mIoU`` and ``cIoU`` in 0-1."""
        return _interactive_iou_compute(self.stats)
