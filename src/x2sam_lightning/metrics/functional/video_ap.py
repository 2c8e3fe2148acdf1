"""Mask AP with the COCO matching rules, for videos (YouTube-VIS) and for images (COCO segm).

Video protocol, as ``youtubevos/cocoapi`` ``PythonAPI/pycocotools/ytvoseval.py::YTVOSeval``: the IoU of two
tracks is the sum over frames of their intersections over the sum over frames of their unions; the area
of a track is its mean area over the frames where it is non-empty; area ranges are 0-128², 128²-256²,
above 256²; at most 100 detections per video and category. Image protocol, as ``pycocotools``
``cocoeval.py::COCOeval`` (``iouType="segm"``): one frame, crowd regions matched by intersection over the
detection's area, area ranges 0-32², 32²-96², above 96².

Matching (``evaluateVid`` / ``evaluateImg``) only looks at one video and category, so it runs in
``_update``: each call returns one row per (detection, area range) with its score, rank and, for the ten
IoU thresholds, whether it matched and whether it is ignored, plus the number of non-ignored ground
truths per (category, area range). ``_compute`` is ``accumulate`` + ``summarize`` on those rows,
vectorised over thresholds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.region_boundary import _count

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
YTVIS_AREA_RANGES = ((0.0, 1e5**2), (0.0, 128.0**2), (128.0**2, 256.0**2), (256.0**2, 1e5**2))
#: Keys of ``_ap_compute``'s result, in COCO ``summarize`` order.
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_T = len(IOU_THRESHOLDS)
#: Columns of a detection row: category, area index, video key, rank, score, matched x T, ignored x T.
DET_ROW_WIDTH = 5 + 2 * _T


def _frame_areas(masks: Tensor) -> Tensor:
    """Per-frame areas ``(N, T)`` int64 of ``(N, T, ...)`` bool tracks."""
    n, t_len = masks.shape[:2]
    if n * t_len == 0:
        return torch.zeros(n, t_len, dtype=torch.int64)
    return _count(masks.reshape(n * t_len, -1)).view(n, t_len)


def _mean_areas(frame_areas: Tensor) -> Tensor:
    """Mean area over the frames where each track is non-empty (0 if always empty), float64 ``(N,)``."""
    present = (frame_areas > 0).sum(1)
    return torch.where(present > 0, frame_areas.sum(1).double() / present.clamp(min=1), 0.0)


def track_iou(
    pred: Tensor,
    target: Tensor,
    pred_areas: Tensor | None = None,
    target_areas: Tensor | None = None,
    pred_index: Tensor | None = None,
) -> Tensor:
    """IoU of every predicted track with every ground-truth track, summed over frames.

    Args:
        pred: ``(D, T, H, W)`` bool.
        target: ``(G, T, H, W)`` bool.
        pred_areas: optional ``(D,)`` total areas over frames (computed if not given).
        target_areas: optional ``(G,)`` total areas.
        pred_index: optional ``(D',)`` rows of ``pred`` to use (avoids copying whole tracks); the areas
            are then those of the selected rows.

    Returns:
        ``(D, G)`` float64; 0 where the union is empty.
    """
    d = pred.shape[0] if pred_index is None else len(pred_index)
    g = target.shape[0]
    if d == 0 or g == 0:
        return torch.zeros(d, g, dtype=torch.float64)
    if pred_index is None:
        pred_index = torch.arange(d)
    pred, target = pred.contiguous(), target.contiguous()
    if pred_areas is None:
        pred_areas = _frame_areas(pred[pred_index]).sum(1)
    area_p = pred_areas.double()
    area_g = (_frame_areas(target).sum(1) if target_areas is None else target_areas).double()
    inter = torch.zeros(d, g, dtype=torch.float64)
    for j in range(g):
        # the intersection lies inside the ground truth's bounding box over all frames
        occupied = target[j].view(torch.uint8).amax(dim=0)
        rows = occupied.amax(dim=1).nonzero()
        if rows.numel() == 0:
            continue
        cols = occupied.amax(dim=0).nonzero()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        both = pred[:, :, y0:y1, x0:x1][pred_index] & target[j, None, :, y0:y1, x0:x1]
        inter[:, j] = _count(both).double()
    union = area_p[:, None] + area_g[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def _match(ious: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching of score-sorted detections against ignore-last sorted ground truths.

    Returns ``(matched, ignored)``, two ``(T, D)`` bool arrays (ignored = matched to an ignored gt).
    """
    n_det, n_gt = ious.shape
    matched = np.zeros((_T, n_det), bool)
    ignored = np.zeros((_T, n_det), bool)
    if n_det == 0 or n_gt == 0:
        return matched, ignored
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    gt_taken = np.zeros((_T, n_gt), bool)
    regular = ~gt_ignore
    rows = np.arange(_T)
    for d in range(n_det):
        ok = (ious[d][None, :] >= thr) & (~gt_taken | crowd[None, :])
        vals = np.where(ok, ious[d][None, :], -1.0)
        # the official loop keeps the last gt with the best IoU, and prefers regular over ignored gts
        best_reg = np.where(regular[None, :], vals, -1.0)
        best_ign = np.where(regular[None, :], -1.0, vals)
        m_reg = n_gt - 1 - np.argmax(best_reg[:, ::-1], axis=1)
        m_ign = n_gt - 1 - np.argmax(best_ign[:, ::-1], axis=1)
        has_reg = best_reg[rows, m_reg] >= 0
        has_ign = best_ign[rows, m_ign] >= 0
        m = np.where(has_reg, m_reg, m_ign)
        hit = has_reg | has_ign
        gt_taken[rows[hit], m[hit]] = True
        matched[hit, d] = True
        ignored[hit, d] = gt_ignore[m[hit]]
    return matched, ignored


def _ap_update(
    pred_masks: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    gt_masks: Tensor,
    gt_labels: Tensor,
    gt_iscrowd: Tensor | None = None,
    video_key: int = 0,
    area_ranges: tuple[tuple[float, float], ...] = YTVIS_AREA_RANGES,
) -> tuple[Tensor, Tensor]:
    """Match one video's (or image's) detections and return the rows ``_ap_compute`` accumulates.

    Args:
        pred_masks: ``(D, T, H, W)`` bool predicted tracks (``(D, H, W)`` for an image).
        pred_scores: ``(D,)`` confidences.
        pred_labels: ``(D,)`` int category ids.
        gt_masks: ``(G, T, H, W)`` bool ground-truth tracks (all-zero frames = object absent).
        gt_labels: ``(G,)`` int category ids.
        gt_iscrowd: ``(G,)`` bool crowd flags (ignored ground truths), default none.
        video_key: orders detections of equal score across videos (the official concatenation order).
        area_ranges: area ranges, ``all`` first.

    Returns:
        ``(det_rows, gt_rows)``: float64 ``(R, 5 + 2T)`` rows ``[category, area index, video key, rank,
        score, matched x T, ignored x T]`` and ``(C, 3)`` rows ``[category, area index, non-ignored gts]``.
    """
    if pred_masks.dim() == 3:
        pred_masks, gt_masks = pred_masks[:, None], gt_masks[:, None]
    pred_masks, gt_masks = pred_masks.cpu().bool(), gt_masks.cpu().bool()
    pred_scores, pred_labels, gt_labels = (
        pred_scores.cpu().double(),
        pred_labels.cpu().long(),
        gt_labels.cpu().long(),
    )
    crowd_all = (
        torch.zeros(len(gt_labels), dtype=torch.bool) if gt_iscrowd is None else gt_iscrowd.cpu().bool()
    )
    pred_masks, gt_masks = pred_masks.contiguous(), gt_masks.contiguous()
    pred_frames, gt_frames = _frame_areas(pred_masks), _frame_areas(gt_masks)
    det_area, gt_area = _mean_areas(pred_frames).numpy(), _mean_areas(gt_frames).numpy()
    pred_total, gt_total = pred_frames.sum(1), gt_frames.sum(1)
    det_rows, gt_rows = [], []
    for cat in torch.unique(torch.cat([pred_labels, gt_labels])).tolist():
        d_idx = torch.nonzero(pred_labels == cat).flatten()
        g_idx = torch.nonzero(gt_labels == cat).flatten().numpy()
        order = np.argsort(-pred_scores[d_idx].numpy(), kind="mergesort")[: MAX_DETS[-1]]
        d_idx = d_idx[torch.from_numpy(order)]
        crowd = crowd_all[g_idx].numpy()
        g_sel = torch.from_numpy(g_idx)
        ious = track_iou(
            pred_masks,
            gt_masks[g_sel],
            pred_areas=pred_total[d_idx],
            target_areas=gt_total[g_sel],
            pred_index=d_idx,
        ).numpy()
        scores = pred_scores[d_idx].numpy()
        d_area = det_area[d_idx.numpy()]
        for a, (lo, hi) in enumerate(area_ranges):
            g_ignore = crowd | (gt_area[g_idx] < lo) | (gt_area[g_idx] > hi)
            g_order = np.argsort(g_ignore, kind="mergesort")
            gt_rows.append([cat, a, float((~g_ignore).sum())])
            if len(d_idx) == 0:
                continue
            matched, ignored = _match(ious[:, g_order], g_ignore[g_order], crowd[g_order])
            out_of_range = (d_area < lo) | (d_area > hi)
            ignored |= ~matched & out_of_range[None, :]
            rows = np.empty((len(d_idx), 5 + 2 * _T))
            rows[:, 0], rows[:, 1], rows[:, 2] = cat, a, video_key
            rows[:, 3], rows[:, 4] = np.arange(len(d_idx)), scores
            rows[:, 5 : 5 + _T], rows[:, 5 + _T :] = matched.T, ignored.T
            det_rows.append(rows)
    det = (
        torch.from_numpy(np.concatenate(det_rows))
        if det_rows
        else torch.zeros(0, 5 + 2 * _T, dtype=torch.float64)
    )
    gts = torch.tensor(gt_rows, dtype=torch.float64).reshape(-1, 3)
    return det, gts


def _ap_compute(det_rows: Tensor, gt_rows: Tensor, num_area_ranges: int = 4) -> dict[str, Tensor]:
    """COCO ``accumulate`` + ``summarize`` over the rows of all videos.

    Returns:
        ``AP_KEYS`` -> float64 scalars in 0-1 (-1 where nothing was evaluated, as COCO prints).
    """
    det = det_rows.cpu().numpy()
    gts = gt_rows.cpu().numpy()
    # non-ignored gts per (category, area)
    npig: dict[tuple[int, int], float] = {}
    for cat, a, n in gts:
        npig[(int(cat), int(a))] = npig.get((int(cat), int(a)), 0.0) + n
    cats = sorted({c for c, _ in npig})
    n_m = len(MAX_DETS)
    precision = -np.ones((_T, len(RECALL_THRESHOLDS), len(cats), num_area_ranges, n_m))
    recall = -np.ones((_T, len(cats), num_area_ranges, n_m))
    # official order: videos in id order, detections by descending score within a video; a stable sort on
    # score over that concatenation breaks ties the same way
    det = det[np.lexsort((det[:, 3], det[:, 2]))]
    keys = det[:, 0] * num_area_ranges + det[:, 1]
    for k, cat in enumerate(cats):
        for a in range(num_area_ranges):
            n_pos = npig.get((cat, a), 0.0)
            if n_pos == 0:
                continue
            group = det[keys == cat * num_area_ranges + a]
            for m, max_det in enumerate(MAX_DETS):
                sel = group[group[:, 3] < max_det]
                order = np.argsort(-sel[:, 4], kind="mergesort")
                sel = sel[order]
                matched = sel[:, 5 : 5 + _T].T.astype(bool)
                ignored = sel[:, 5 + _T :].T.astype(bool)
                tp = np.cumsum(matched & ~ignored, axis=1, dtype=float)
                fp = np.cumsum(~matched & ~ignored, axis=1, dtype=float)
                n_det = tp.shape[1]
                rc = tp / n_pos
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if n_det else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                q = np.zeros((_T, len(RECALL_THRESHOLDS)))
                for t in range(_T):
                    inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    valid = inds < n_det
                    q[t, valid] = pr[t, inds[valid]]
                precision[:, :, k, a, m] = q

    def summarize(ap: bool, iou: float | None = None, area: int = 0, max_det: int = 100) -> float:
        m = MAX_DETS.index(max_det)
        s = precision[..., area, m] if ap else recall[..., area, m]
        if iou is not None:
            s = s[np.where(np.isclose(IOU_THRESHOLDS, iou))[0]]
        valid = s[s > -1]
        return -1.0 if valid.size == 0 else float(np.mean(valid))

    values = [
        summarize(True),
        summarize(True, 0.5),
        summarize(True, 0.75),
        summarize(True, area=1),
        summarize(True, area=2),
        summarize(True, area=3),
        summarize(False, max_det=1),
        summarize(False, max_det=10),
        summarize(False),
        summarize(False, area=1),
        summarize(False, area=2),
        summarize(False, area=3),
    ]
    return {key: torch.tensor(v, dtype=torch.float64) for key, v in zip(AP_KEYS, values)}
