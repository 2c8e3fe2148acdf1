"""COCO mask AP / AR as a torchmetrics ``Metric`` (see :mod:`.functional.mask_ap`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from x2sam_lightning.metrics.functional.mask_ap import _mask_ap_compute, _mask_ap_update

_STATES = {
    "det_counts": torch.long,
    "det_scores": torch.float64,
    "det_labels": torch.long,
    "det_areas": torch.long,
    "gt_counts": torch.long,
    "gt_labels": torch.long,
    "gt_areas": torch.float64,
    "gt_mask_areas": torch.long,
    "gt_crowd": torch.long,
    "intersections": torch.long,
}


class MaskAP(Metric):
    """COCO ``segm`` mask mAP / mAR, equal to pycocotools' ``COCOeval``.

    Masks are reduced at update time to their pairwise intersections and areas (list states concatenated
    across processes, image after image), so no mask is kept.

    Args:
        max_detection_thresholds: detection limits per image (COCO ``maxDets``); AP uses the largest and
            ``mar_{k}`` is reported for each (e.g. ``(1, 10, 100)`` gives AR@10 for proposals).
        class_agnostic: match regardless of category (pycocotools ``useCats = 0``); labels may then be omitted.

    Inputs follow torchmetrics' ``MeanAveragePrecision``: per image, ``preds`` dicts with ``masks``
    ``[N, H, W]`` bool, ``scores`` ``[N]``, ``labels`` ``[N]`` int; ``target`` dicts with ``masks``
    ``[M, H, W]`` bool, ``labels`` ``[M]`` int, optional ``iscrowd`` ``[M]`` and ``area`` ``[M]`` (COCO's
    annotation area for the small / medium / large ranges; default the mask area).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, max_detection_thresholds: Sequence[int] = (1, 10, 100), class_agnostic: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.max_detection_thresholds = tuple(sorted(int(k) for k in max_detection_thresholds))
        self.class_agnostic = class_agnostic
        for name in _STATES:
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]) -> None:
        """Add a batch of images (one dict per image in ``preds`` and in ``target``)."""
        if len(preds) != len(target):
            raise ValueError("preds and target must hold one dict per image")
        for pred, gt in zip(preds, target):
            n, m = len(pred["masks"]), len(gt["masks"])
            zeros_n, zeros_m = torch.zeros(n, dtype=torch.long), torch.zeros(m, dtype=torch.long)
            det_labels = zeros_n if self.class_agnostic and "labels" not in pred else pred["labels"]
            gt_labels = zeros_m if self.class_agnostic and "labels" not in gt else gt["labels"]
            # only pairs of one category are ever matched: the others need no intersection
            pairs = None
            if not self.class_agnostic:
                pairs = det_labels.reshape(-1, 1).cpu() == gt_labels.reshape(1, -1).cpu()
            inter, det_areas, gt_mask_areas = _mask_ap_update(pred["masks"], gt["masks"], pairs)
            values = {
                "det_counts": torch.tensor([n]),
                "det_scores": pred["scores"],
                "det_labels": det_labels,
                "det_areas": det_areas,
                "gt_counts": torch.tensor([m]),
                "gt_labels": gt_labels,
                "gt_areas": gt.get("area", gt_mask_areas),
                "gt_mask_areas": gt_mask_areas,
                "gt_crowd": gt.get("iscrowd", zeros_m),
                "intersections": inter.reshape(-1),
            }
            for name, dtype in _STATES.items():
                getattr(self, name).append(torch.as_tensor(values[name]).reshape(-1).to(self.device, dtype))

    def compute(self) -> dict[str, Tensor]:
        """``map, map_50, map_75, map_{small,medium,large}, mar_{k}, mar_{small,medium,large}`` (-1 if undefined)."""
        states = {}
        for name, dtype in _STATES.items():
            value = getattr(self, name)  # a list, or one tensor once synced across processes
            if isinstance(value, list):
                value = dim_zero_cat(value) if value else torch.zeros(0, dtype=dtype)
            states[name] = value
        out = _mask_ap_compute(
            **states,
            max_detection_thresholds=self.max_detection_thresholds,
            class_agnostic=self.class_agnostic,
        )
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
