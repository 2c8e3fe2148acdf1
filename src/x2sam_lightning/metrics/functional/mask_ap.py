"""COCO mask AP / AR (``segm`` protocol), equal to ``pycocotools/cocoeval.py::COCOeval``.

torchmetrics' ``MeanAveragePrecision(iou_type="segm")`` needs torchvision, which this project does not
depend on. Here the masks are reduced at update time to exact integer intersections of the flattened masks
(population counts of bit-packed masks on CPU, :mod:`.mask_counts`; a matrix product of 0/1 floats on
an accelerator) instead of RLE-encoding every mask and calling ``maskUtils.iou`` at the end;
no mask is kept. ``compute`` turns them into COCOeval's IoUs (crowd ground truth: intersection over the
detection's area) and runs COCOeval's matching, accumulation and summary, vectorised over images,
categories, area ranges and thresholds (:mod:`.coco_ap`), with COCOeval's rules and tie-breaks.

The summary reproduces ``COCOeval.summarize`` (mean of the defined entries of ``eval["precision"]`` /
``eval["recall"]``, -1 when none) but reads any ``max_detection_thresholds``, e.g. AR@10 for class-agnostic
proposals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.coco_ap import COCO_AREA_RANGES, coco_evaluate, coco_summarize
from x2sam_lightning.metrics.functional.mask_counts import overlap_counts

_EXACT_FLOAT32 = 2**24  # float32 sums of 0/1 products stay exact below this many pixels


def _mask_ap_update(
    pred_masks: Tensor, gt_masks: Tensor, pairs: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel intersections and areas of one image's masks.

    On CPU as population counts of bit-packed masks (:mod:`.mask_counts`); on an accelerator as one matrix
    product of 0/1 floats (exact: sums of 0/1 products below 2**24 pixels).

    Args:
        pred_masks: ``[N, H, W]`` bool predicted masks.
        gt_masks: ``[M, H, W]`` bool ground-truth masks.
        pairs: optional ``[N, M]`` bool: the pairs whose intersection is needed (same category); the others
            may be left 0.

    Returns:
        ``intersections`` ``[N, M]`` int64, ``pred_areas`` ``[N]`` int64, ``gt_areas`` ``[M]`` int64.
    """
    if pred_masks.shape[1:] != gt_masks.shape[1:] and pred_masks.numel() and gt_masks.numel():
        raise ValueError(f"mask sizes differ: {tuple(pred_masks.shape)} vs {tuple(gt_masks.shape)}")
    if pred_masks.device.type == "cpu":
        inter, pred_areas, gt_areas = overlap_counts(
            pred_masks.bool()[:, None], gt_masks.bool()[:, None], pairs
        )
        return inter[:, :, 0], pred_areas[:, 0], gt_areas[:, 0]
    return _matmul_counts(pred_masks, gt_masks)


def _matmul_counts(pred_masks: Tensor, gt_masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``_mask_ap_update`` on an accelerator: intersections as one matrix product of 0/1 floats."""
    p, g = pred_masks.flatten(1).bool(), gt_masks.flatten(1).bool()
    dtype = torch.float32 if p.shape[1] < _EXACT_FLOAT32 else torch.float64
    pf, gf = p.to(dtype), g.to(dtype)
    if p.shape[0] and g.shape[0]:
        inter = (pf @ gf.T).round().long()
    else:
        inter = torch.zeros(p.shape[0], g.shape[0], dtype=torch.long, device=p.device)
    return inter, pf.sum(1).round().long(), gf.sum(1).round().long()


def _summarize(result, max_dets: Sequence[int]) -> dict[str, float]:
    """``COCOeval.summarize`` for any detection limits; keys follow torchmetrics' MeanAveragePrecision."""
    summary = coco_summarize(result)
    out = {"map": summary["AP"], "map_50": summary["AP50"], "map_75": summary["AP75"]}
    out.update(map_small=summary["APs"], map_medium=summary["APm"], map_large=summary["APl"])
    out.update({f"mar_{k}": summary["AR"][k] for k in max_dets})
    out.update(mar_small=summary["ARs"], mar_medium=summary["ARm"], mar_large=summary["ARl"])
    return out


def _mask_ap_compute(
    det_counts: Tensor,
    det_scores: Tensor,
    det_labels: Tensor,
    det_areas: Tensor,
    gt_counts: Tensor,
    gt_labels: Tensor,
    gt_areas: Tensor,
    gt_mask_areas: Tensor,
    gt_crowd: Tensor,
    intersections: Tensor,
    max_detection_thresholds: Sequence[int] = (1, 10, 100),
    class_agnostic: bool = False,
) -> dict[str, float]:
    """COCOeval's evaluate / accumulate / summarize on the collected statistics of all images.

    Args:
        det_counts: ``[I]`` detections per image (images in order).
        det_scores: ``[D]`` detection scores, image after image.
        det_labels: ``[D]`` detection categories.
        det_areas: ``[D]`` detection mask areas (pixels).
        gt_counts: ``[I]`` ground-truth masks per image.
        gt_labels: ``[G]`` ground-truth categories.
        gt_areas: ``[G]`` areas used for the small / medium / large ranges (COCO's annotation ``area``).
        gt_mask_areas: ``[G]`` ground-truth mask areas (pixels), used for IoU.
        gt_crowd: ``[G]`` crowd flags.
        intersections: ``[sum_i D_i * G_i]`` flattened per-image ``[D_i, G_i]`` intersection matrices.
        max_detection_thresholds: detection limits (``maxDets``); AP uses the last one.
        class_agnostic: ignore categories (``params.useCats = 0``).

    Returns:
        ``map, map_50, map_75, map_{small,medium,large}, mar_{k} for each limit, mar_{small,medium,large}``
        as floats (-1 where undefined, as pycocotools).
    """
    dc, gc = det_counts.cpu().numpy().astype(np.int64), gt_counts.cpu().numpy().astype(np.int64)
    d_areas, g_mask = det_areas.cpu().double().numpy(), gt_mask_areas.cpu().double().numpy()
    crowd = gt_crowd.cpu().numpy().astype(bool)
    inter = intersections.cpu().double().numpy()
    # entry e of the flattened matrices: image i, detection a, ground truth b
    sizes = dc * gc
    img = np.repeat(np.arange(len(dc)), sizes)
    k = np.arange(len(inter)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    det = np.repeat(np.cumsum(dc) - dc, sizes) + k // np.maximum(gc[img], 1)
    gt = np.repeat(np.cumsum(gc) - gc, sizes) + k % np.maximum(gc[img], 1)
    union = np.where(crowd[gt], d_areas[det], d_areas[det] + g_mask[gt] - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        ious = np.where(union > 0, inter / union, 0.0)
    max_dets = sorted(int(m) for m in max_detection_thresholds)
    result = coco_evaluate(
        dc,
        det_scores.cpu().double().numpy(),
        det_labels.cpu().numpy(),
        d_areas,
        gc,
        gt_labels.cpu().numpy(),
        gt_areas.cpu().double().numpy(),
        crowd,
        ious,
        area_ranges=COCO_AREA_RANGES,
        max_dets=max_dets,
        class_agnostic=class_agnostic,
    )
    return _summarize(result, max_dets)
