"""COCO mask AP / AR (``segm`` protocol) on top of pycocotools' ``COCOeval``.

torchmetrics' ``MeanAveragePrecision(iou_type="segm")`` needs torchvision, which this project does not
depend on, so matching and accumulation run in pycocotools itself (``pycocotools/cocoeval.py::COCOeval``),
the reference, and only the mask IoUs are computed differently: at update time, as exact integer
intersections of the flattened masks (bit-packed ``bitwise_count`` on CPU, a matrix product on an
accelerator), instead of RLE-encoding every mask and calling ``maskUtils.iou`` at the end; no mask is kept. ``COCOeval.computeIoU`` is replaced by a look-up into those intersections,
using the same detection order (score, mergesort, top ``maxDets[-1]``) and the same crowd rule
(``IoU = intersection / detection area`` for crowd ground truth), so the numbers are pycocotools' own.

The summary reproduces ``COCOeval.summarize`` (mean of the defined entries of ``eval["precision"]`` /
``eval["recall"]``, -1 when none) but reads any ``max_detection_thresholds``, e.g. AR@10 for class-agnostic
proposals.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.imports import require

_EXACT_FLOAT32 = 2**24  # float32 sums of 0/1 products stay exact below this many pixels


def _mask_ap_update(pred_masks: Tensor, gt_masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel intersections and areas of one image's masks.

    On CPU the masks are bit-packed and intersected with ``bitwise_count`` (64 pixels per word); on an
    accelerator as one matrix product of 0/1 floats (exact: sums of 0/1 products below 2**24 pixels).

    Args:
        pred_masks: ``[N, H, W]`` bool predicted masks.
        gt_masks: ``[M, H, W]`` bool ground-truth masks.

    Returns:
        ``intersections`` ``[N, M]`` int64, ``pred_areas`` ``[N]`` int64, ``gt_areas`` ``[M]`` int64.
    """
    if pred_masks.shape[1:] != gt_masks.shape[1:] and pred_masks.numel() and gt_masks.numel():
        raise ValueError(f"mask sizes differ: {tuple(pred_masks.shape)} vs {tuple(gt_masks.shape)}")
    p, g = pred_masks.flatten(1).bool(), gt_masks.flatten(1).bool()
    if p.device.type == "cpu" and hasattr(np, "bitwise_count"):
        pp, gp = _pack_bits(p.numpy()), _pack_bits(g.numpy())
        inter = np.zeros((pp.shape[0], gp.shape[0]), dtype=np.int64)
        for j in range(gp.shape[0]):
            inter[:, j] = np.bitwise_count(pp & gp[j]).sum(axis=1, dtype=np.int64)
        areas = (torch.from_numpy(np.bitwise_count(x).sum(axis=1, dtype=np.int64)) for x in (pp, gp))
        return torch.from_numpy(inter), *areas
    dtype = torch.float32 if p.shape[1] < _EXACT_FLOAT32 else torch.float64
    pf, gf = p.to(dtype), g.to(dtype)
    if p.shape[0] and g.shape[0]:
        inter = (pf @ gf.T).round().long()
    else:
        inter = torch.zeros(p.shape[0], g.shape[0], dtype=torch.long, device=p.device)
    return inter, pf.sum(1).round().long(), gf.sum(1).round().long()


def _pack_bits(masks: np.ndarray) -> np.ndarray:
    """``[N, P]`` bool -> ``[N, ceil(P / 64)]`` uint64 words (zero padded)."""
    packed = np.packbits(masks, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _make_cocoeval():
    """A ``COCOeval`` whose ``computeIoU`` reads IoUs from precomputed intersections."""
    COCOeval = require("pycocotools.cocoeval").COCOeval

    class _PrecomputedIoUEval(COCOeval):
        def __init__(self, coco_gt, coco_dt, inter: dict[int, np.ndarray], use_cats: bool) -> None:
            # "bbox" params equal "segm" ones; it keeps _prepare from converting absent polygons to masks
            super().__init__(coco_gt, coco_dt, iouType="bbox")
            self.params.useCats = int(use_cats)
            self._inter = inter

        def computeIoU(self, imgId, catId):
            p = self.params
            if p.useCats:
                gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
            else:
                gt = [g for c in p.catIds for g in self._gts[imgId, c]]
                dt = [d for c in p.catIds for d in self._dts[imgId, c]]
            if len(gt) == 0 or len(dt) == 0:
                return []
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order][: p.maxDets[-1]]
            inter = self._inter[imgId][np.ix_([d["idx"] for d in dt], [g["idx"] for g in gt])].astype(
                np.float64
            )
            d_area = np.array([d["mask_area"] for d in dt], dtype=np.float64)[:, None]
            g_area = np.array([g["mask_area"] for g in gt], dtype=np.float64)[None, :]
            crowd = np.array([bool(g["iscrowd"]) for g in gt])[None, :]
            union = np.where(crowd, d_area, d_area + g_area - inter)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(union > 0, inter / union, 0.0)

    return _PrecomputedIoUEval


def _summarize(coco_eval, max_dets: Sequence[int]) -> dict[str, float]:
    """``COCOeval.summarize`` for any detection limits; keys follow torchmetrics' MeanAveragePrecision."""
    p, precision, recall = coco_eval.params, coco_eval.eval["precision"], coco_eval.eval["recall"]

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    def ap(iou: float | None = None, area: str = "all", dets: int = max_dets[-1]) -> float:
        a, m = p.areaRngLbl.index(area), list(p.maxDets).index(dets)
        s = precision[:, :, :, a, m]
        if iou is not None:
            s = s[np.where(np.isclose(p.iouThrs, iou))[0]]
        return mean(s)

    def ar(area: str = "all", dets: int = max_dets[-1]) -> float:
        return mean(recall[:, :, p.areaRngLbl.index(area), list(p.maxDets).index(dets)])

    out = {"map": ap(), "map_50": ap(0.5), "map_75": ap(0.75)}
    for area in ("small", "medium", "large"):
        out[f"map_{area}"] = ap(area=area)
    for k in max_dets:
        out[f"mar_{k}"] = ar(dets=k)
    for area in ("small", "medium", "large"):
        out[f"mar_{area}"] = ar(area=area)
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
    """Run COCOeval on the collected statistics of all images.

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
    COCO = require("pycocotools.coco").COCO

    dc, gc = det_counts.cpu().tolist(), gt_counts.cpu().tolist()
    d_off, g_off = np.cumsum([0, *dc]), np.cumsum([0, *gc])
    inter_sizes = [d * g for d, g in zip(dc, gc)]
    i_off = np.cumsum([0, *inter_sizes])
    inter_all = intersections.cpu().numpy()
    scores, labels, d_areas = (t.cpu().double().numpy() for t in (det_scores, det_labels, det_areas))
    g_labels, g_areas, g_mask, g_crowd = (
        t.cpu().double().numpy() for t in (gt_labels, gt_areas, gt_mask_areas, gt_crowd)
    )

    images, gts, dts, inter = [], [], [], {}
    for i in range(len(dc)):
        images.append({"id": i})
        inter[i] = inter_all[i_off[i] : i_off[i + 1]].reshape(dc[i], gc[i])
        for j in range(gc[i]):
            k = g_off[i] + j
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": i,
                    "category_id": int(g_labels[k]),
                    "area": float(g_areas[k]),
                    "mask_area": float(g_mask[k]),
                    "iscrowd": int(g_crowd[k]),
                    "idx": j,
                }
            )
        for j in range(dc[i]):
            k = d_off[i] + j
            dts.append(
                {
                    "id": len(dts) + 1,
                    "image_id": i,
                    "category_id": int(labels[k]),
                    "score": float(scores[k]),
                    "area": float(d_areas[k]),
                    "mask_area": float(d_areas[k]),
                    "iscrowd": 0,
                    "idx": j,
                }
            )
    categories = [
        {"id": int(c)} for c in sorted(set(g_labels.astype(int).tolist()) | set(labels.astype(int).tolist()))
    ]
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {"images": images, "annotations": gts, "categories": categories}
    coco_dt.dataset = {"images": images, "annotations": dts, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt.createIndex()
        coco_eval = _make_cocoeval()(coco_gt, coco_dt, inter, use_cats=not class_agnostic)
        coco_eval.params.maxDets = sorted(max_detection_thresholds)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return _summarize(coco_eval, sorted(max_detection_thresholds))
