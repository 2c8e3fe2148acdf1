"""COCO-panoptic PQ / SQ / RQ as a torchmetrics ``Metric`` (see :mod:`.functional.panoptic_quality`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.panoptic_quality import (
    Segments,
    _panoptic_quality_compute,
    _panoptic_quality_update,
)


class PanopticQuality(Metric):
    """PQ / SQ / RQ (all, things, stuff, per category) with panopticapi's rules.

    States are per-category sums (``iou_sum`` float64, ``tp``, ``fp``, ``fn``), so processes reduce by summing.

    Args:
        things: thing category ids.
        stuffs: stuff category ids. Per-category outputs follow the order ``things + stuffs``
            (``self.categories``).

    Example:
        >>> metric = PanopticQuality(things=[1], stuffs=[2])
        >>> ids = torch.tensor([[[1, 1, 2, 2]]])
        >>> segs = [[{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]]
        >>> metric.update(ids, ids, segs, segs)
        >>> float(metric.compute()["pq"])
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, things: Iterable[int], stuffs: Iterable[int], **kwargs) -> None:
        super().__init__(**kwargs)
        things, stuffs = list(things), list(stuffs)
        if set(things) & set(stuffs):
            raise ValueError("a category cannot be both thing and stuff")
        self.categories = things + stuffs
        self.register_buffer(
            "is_thing", torch.tensor([i < len(things) for i in range(len(self.categories))]), persistent=False
        )
        num = len(self.categories)
        self.add_state("iou_sum", torch.zeros(num, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(num, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        pred_segments: Sequence[Segments],
        target_segments: Sequence[Segments],
    ) -> None:
        """Add a batch of images.

        Args:
            preds: ``[B, H, W]`` (or ``[H, W]``) integer predicted segment ids, 0 = VOID.
            target: same shape, integer ground-truth segment ids, 0 = VOID.
            pred_segments: per image, COCO ``segments_info`` dicts with ``id`` and ``category_id``
                (a single list when ``preds`` is ``[H, W]``).
            target_segments: per image, dicts with ``id``, ``category_id`` and ``iscrowd`` (default 0).
        """
        if preds.ndim == 2:
            preds, target = preds[None], target[None]
            pred_segments, target_segments = [pred_segments], [target_segments]
        if len(pred_segments) != preds.shape[0] or len(target_segments) != target.shape[0]:
            raise ValueError("one segments_info list per image is needed")
        for b in range(preds.shape[0]):
            iou_sum, tp, fp, fn = _panoptic_quality_update(
                preds[b], target[b], pred_segments[b], target_segments[b], self.categories
            )
            self.iou_sum += iou_sum.to(self.iou_sum.device)
            self.tp += tp.to(self.tp.device)
            self.fp += fp.to(self.fp.device)
            self.fn += fn.to(self.fn.device)

    def compute(self) -> dict[str, Tensor]:
        """``pq, sq, rq, pq_th, sq_th, rq_th, pq_st, sq_st, rq_st`` in ``[0, 1]`` and ``*_per_class`` ``[C]``."""
        return _panoptic_quality_compute(self.iou_sum, self.tp, self.fp, self.fn, self.is_thing)
