"""VIPSeg video panoptic quality as a torchmetrics ``Metric`` (see :mod:`.functional.video_panoptic_quality`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.panoptic_quality import Segments
from x2sam_lightning.metrics.functional.video_panoptic_quality import (
    VIPSEG_WINDOWS,
    _video_panoptic_quality_compute,
    _video_panoptic_quality_update,
)


class VideoPanopticQuality(Metric):
    """VPQ (all, things, stuff; per window size) equal to VIPSeg's ``eval_vpq_vspw.py``.

    States are ``[K, C]`` sums (``iou_sum`` float64, ``tp``, ``fp``, ``fn``) over all windows of all videos.

    Args:
        things: thing category ids.
        stuffs: stuff category ids.
        window_sizes: window lengths in frames (VIPSeg: 1, 2, 4, 6, 8).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        things: Iterable[int],
        stuffs: Iterable[int],
        window_sizes: Sequence[int] = VIPSEG_WINDOWS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        things, stuffs = list(things), list(stuffs)
        if set(things) & set(stuffs):
            raise ValueError("a category cannot be both thing and stuff")
        self.categories = things + stuffs
        self.window_sizes = tuple(int(k) for k in window_sizes)
        self.register_buffer(
            "is_thing", torch.tensor([i < len(things) for i in range(len(self.categories))]), persistent=False
        )
        shape = (len(self.window_sizes), len(self.categories))
        self.add_state("iou_sum", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, preds: Tensor, target: Tensor, pred_segments: Segments, target_segments: Segments
    ) -> None:
        """Add one video.

        Args:
            preds: ``[T, H, W]`` integer predicted tube ids (0 = VOID), the same id for an object in every frame.
            target: ``[T, H, W]`` integer ground-truth tube ids (0 = VOID).
            pred_segments: the video's predicted tubes: dicts with ``id`` and ``category_id``.
            target_segments: the video's gt tubes: dicts with ``id``, ``category_id``, ``iscrowd`` (default 0).
        """
        stats = _video_panoptic_quality_update(
            preds, target, pred_segments, target_segments, self.categories, self.window_sizes
        )
        for state, value in zip((self.iou_sum, self.tp, self.fp, self.fn), stats):
            state += value.to(state.device)

    def compute(self) -> dict[str, Tensor]:
        """``vpq, vpq_th, vpq_st`` and per window ``vpq_k{k}, vpq_th_k{k}, vpq_st_k{k}, sq_k{k}, rq_k{k}``."""
        return _video_panoptic_quality_compute(
            self.iou_sum, self.tp, self.fp, self.fn, self.is_thing, self.window_sizes
        )
