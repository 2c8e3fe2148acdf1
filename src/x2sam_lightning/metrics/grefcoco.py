"""gRefCOCO metrics (gIoU, cIoU, N-acc, T-acc, Pr@X) with no-target expressions, as ReLA scores them."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.referring import PR_THRESHOLDS, _grefcoco_compute, _grefcoco_update

_SCALARS = ("intersection", "union", "iou", "count", "target_count", "nt_tp", "nt_fn", "nt_tn", "nt_fp")


class GRefCOCOIoU(Metric):
    """Generalised referring segmentation metrics with ReLA's no-target rules.

    A no-target expression predicted as "no target" counts as IoU 1 (N-acc's true positive); see
    :mod:`x2sam_lightning.metrics.functional.referring` for every rule. Values are fractions in [0, 1]
    (ReLA prints gIoU, cIoU and Pr@X in percent).

    Args:
        thresholds: IoU thresholds of the reported Pr@X (ReLA: 0.7, 0.8, 0.9).

    Example:
        >>> metric = GRefCOCOIoU()
        >>> preds = torch.zeros(2, 4, 4, dtype=torch.bool); preds[0, :2] = True
        >>> target = torch.zeros(2, 4, 4, dtype=torch.bool); target[0, :2] = True
        >>> metric.update(preds, target)  # sample 1: no target, predicted empty
        >>> {k: v.item() for k, v in metric.compute().items()}["n_acc"]
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, thresholds: tuple[float, ...] = PR_THRESHOLDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = tuple(thresholds)
        for name in _SCALARS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "precision_count",
            default=torch.zeros(len(self.thresholds), dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        pred_no_target: Tensor | None = None,
        target_no_target: Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            preds: ``(N, H, W)`` (or ``(N, T, H, W)``) predicted masks (bool, integer or float logits > 0).
            target: same shape, ground-truth masks (empty for no-target expressions).
            pred_no_target: ``(N,)`` bool "no target" decisions; default: the predicted mask is empty.
            target_no_target: ``(N,)`` bool no-target flags; default: the ground-truth mask is empty.
        """
        stats = _grefcoco_update(preds, target, pred_no_target, target_no_target, self.thresholds)
        for name in (*_SCALARS, "precision_count"):
            setattr(self, name, getattr(self, name) + stats[name])

    def compute(self) -> dict[str, Tensor]:
        """``{"giou", "ciou", "n_acc", "t_acc", "pr@0.7", ...}`` as float64 scalars."""
        stats = {name: getattr(self, name) for name in (*_SCALARS, "precision_count")}
        return _grefcoco_compute(stats, self.thresholds)
