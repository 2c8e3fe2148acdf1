"""J, F and J&F with the referring-VOS protocol (Ref-YouTube-VOS / Ref-DAVIS17 / MeViS / ReVOS)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.region_boundary import _referring_jf_compute, _referring_jf_update


class ReferringVOSJandF(Metric):
    """J, F and J&F of referring video segmentation, as MeViS ``tools/eval_mevis.py`` computes them.

    Per expression, J (IoU, 1 when both masks are empty) and the DAVIS boundary F are averaged over all
    frames of the video; J and F are then averaged over expressions and J&F is their mean. ReVOS and
    Ref-DAVIS17 scorers use the same per-frame functions (``davis2017/metrics.py``). For ReVOS's
    referring / reasoning / all rows keep one instance per subset.

    Args:
        bound_th: boundary tolerance, fraction of the image diagonal (0.008) or pixels if >= 1.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, bound_th: float = 0.008, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bound_th = bound_th
        self.add_state("stats", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add expressions of one video.

        Args:
            preds: ``(E, T, H, W)`` (or ``(T, H, W)``) predicted binary masks, one track per expression.
            target: same shape, the ground truth (union of the objects each expression refers to).
        """
        self.stats += _referring_jf_update(preds, target, self.bound_th).to(self.stats.device)

    def compute(self) -> dict[str, Tensor]:
        """``J&F``, ``J``, ``F`` in 0-1."""
        return _referring_jf_compute(self.stats)
