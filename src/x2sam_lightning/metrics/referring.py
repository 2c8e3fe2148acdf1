"""cIoU / gIoU of referring and reasoning segmentation (RefCOCO/+/g, ReasonSeg), as LISA scores them."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.referring import _referring_iou_compute, _referring_iou_update


class ReferringIoU(Metric):
    """cIoU (sum of intersections over sum of unions) and gIoU (mean per-sample IoU, empty vs empty = 1).

    Reproduces LISA's ``train_ds.py::validate`` including its epsilons (``exact=False``); see
    :mod:`x2sam_lightning.metrics.functional.referring`. Values are fractions in [0, 1].

    Args:
        ignore_index: target value whose pixels are not scored (LISA: 255); None for none.
        exact: drop LISA's smoothing epsilons (plain ratios).

    Example:
        >>> metric = ReferringIoU()
        >>> metric.update(torch.ones(2, 4, 4, dtype=torch.bool), torch.ones(2, 4, 4, dtype=torch.long))
        >>> {k: round(v.item(), 4) for k, v in metric.compute().items()}
        {'ciou': 1.0, 'giou': 1.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    intersection_sum: Tensor
    union_sum: Tensor
    iou_sum: Tensor
    count: Tensor

    def __init__(self, ignore_index: int | None = 255, exact: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.exact = exact
        for name in ("intersection_sum", "union_sum", "iou_sum", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: ``(N, H, W)`` (or ``(N, T, H, W)``) masks: bool, integer (non-zero = foreground) or float
                logits (foreground where ``> 0``).
            target: same shape; 1 = foreground, 0 = background, ``ignore_index`` = not scored.
        """
        inter, union, iou, count = _referring_iou_update(preds, target, self.ignore_index, self.exact)
        self.intersection_sum += inter
        self.union_sum += union
        self.iou_sum += iou
        self.count += count

    def compute(self) -> dict[str, Tensor]:
        """``{"ciou", "giou"}`` as float64 scalars."""
        return _referring_iou_compute(
            self.intersection_sum, self.union_sum, self.iou_sum, self.count, exact=self.exact
        )
