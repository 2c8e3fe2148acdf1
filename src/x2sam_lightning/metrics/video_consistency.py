"""VSPW video consistency (mVC8 / mVC16) as a torchmetrics ``Metric`` (see :mod:`.functional.video_consistency`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.video_consistency import (
    VSPW_WINDOWS,
    _video_consistency_compute,
    _video_consistency_update,
)


class VideoConsistency(Metric):
    """Mean video consistency ``mVC_k`` over all k-frame windows, equal to VSPW's ``VC_perclip.py``.

    States: per window size, the sum of window scores (float64) and the number of windows.

    Args:
        window_sizes: window lengths (VSPW: 8 and 16).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, window_sizes: Sequence[int] = VSPW_WINDOWS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window_sizes = tuple(int(k) for k in window_sizes)
        self.add_state(
            "score_sum", torch.zeros(len(self.window_sizes), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "num_windows", torch.zeros(len(self.window_sizes), dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add one video: ``preds`` and ``target`` ``[T, H, W]`` integer class maps."""
        score_sum, num_windows = _video_consistency_update(preds, target, self.window_sizes)
        self.score_sum += score_sum.to(self.score_sum.device)
        self.num_windows += num_windows.to(self.num_windows.device)

    def compute(self) -> dict[str, Tensor]:
        """``mvc{k}`` in ``[0, 1]`` for each window size."""
        return _video_consistency_compute(self.score_sum, self.num_windows, self.window_sizes)
