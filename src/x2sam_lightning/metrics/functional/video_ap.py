"""Mask AP of videos: YouTube-VIS track AP, and the per-frame COCO AP some code bases report for videos.

Track protocol (the YouTube-VIS benchmark's), as ``youtubevos/cocoapi``
``PythonAPI/pycocotools/ytvoseval.py::YTVOSeval``: the IoU of two tracks is the sum over frames of their
intersections over the sum over frames of their unions; the area of a track is its mean area over the
frames where it is non-empty; area ranges are 0-128², 128²-256², above 256²; at most 100 detections per
video and category.

Frame protocol (X2SAM's V-VGD evaluator, ``x2sam/evaluation/evaluators/vid_vgdseg_evaluator.py``): every
frame is an image of ``pycocotools`` ``COCOeval`` (``segm``): the detections of a frame are all predicted
tracks' masks on it (empty ones included, as that evaluator keeps every instance), the ground truths the
tracks present on it; COCO area ranges (32², 96²), crowd IoU = intersection over the detection's area.

``_ap_update`` reduces one video to IoUs and areas (no mask is kept): per-frame intersections of every
predicted track with every ground-truth track of its category (:mod:`.mask_counts`). ``_ap_compute`` runs
COCOeval's matching, accumulation and summary on all videos at once (:mod:`.coco_ap`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.coco_ap import (
    COCO_AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    YTVIS_AREA_RANGES,
    coco_evaluate,
    coco_summarize,
)
from x2sam_lightning.metrics.functional.mask_counts import overlap_counts

__all__ = [
    "AP_KEYS",
    "COCO_AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "YTVIS_AREA_RANGES",
    "track_iou",
]

#: Keys of ``_ap_compute``'s result, in COCO ``summarize`` order.
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: The per-image (per-frame, per-video) statistics ``_ap_update`` returns, in order.
STATE_NAMES = (
    "det_counts",
    "det_scores",
    "det_labels",
    "det_areas",
    "gt_counts",
    "gt_labels",
    "gt_areas",
    "gt_crowd",
    "ious",
    "keys",
)
#: Frames per video key in the frame protocol: image key = video key * FRAME_KEY_BASE + frame.
FRAME_KEY_BASE = 2**20


def track_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of every predicted track with every ground-truth track, summed over frames (YouTube-VIS).

    Args:
        pred: ``(D, T, H, W)`` bool.
        target: ``(G, T, H, W)`` bool.

    Returns:
        ``(D, G)`` float64; 0 where the union is empty.
    """
    inter, area_p, area_g = overlap_counts(pred.cpu().bool(), target.cpu().bool())
    inter, area_p, area_g = inter.sum(2).double(), area_p.sum(1).double(), area_g.sum(1).double()
    union = area_p[:, None] + area_g[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def _ap_update(
    pred_masks: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    gt_masks: Tensor,
    gt_labels: Tensor,
    gt_iscrowd: Tensor | None = None,
    video_key: int = 0,
    protocol: str = "track",
) -> tuple[Tensor, ...]:
    """Reduce one video to the statistics ``_ap_compute`` scores.

    Args:
        pred_masks: ``(D, T, H, W)`` bool predicted tracks.
        pred_scores: ``(D,)`` confidences.
        pred_labels: ``(D,)`` int category ids.
        gt_masks: ``(G, T, H, W)`` bool ground-truth tracks (all-zero frames = object absent).
        gt_labels: ``(G,)`` int category ids.
        gt_iscrowd: ``(G,)`` bool crowd flags (ignored ground truths), default none.
        video_key: the video's id: orders detections of equal score across videos, as the official
            scorers order images by id.
        protocol: ``"track"`` (one image per video, whole-track IoU) or ``"frame"`` (one image per frame).

    Returns:
        The ``STATE_NAMES`` tensors of the video's images (one for ``track``, ``T`` for ``frame``):
        ``det_counts [I]``, ``det_scores [D']``, ``det_labels [D']``, ``det_areas [D']`` (float64),
        ``gt_counts [I]``, ``gt_labels [G']``, ``gt_areas [G']`` (float64), ``gt_crowd [G']``, ``ious``
        (float64, flattened per-image ``[D_i, G_i]``; pairs of different categories hold -1) and ``keys [I]``.
    """
    if protocol not in ("track", "frame"):
        raise ValueError(f"protocol must be 'track' or 'frame', got {protocol!r}")
    if pred_masks.dim() == 3:
        pred_masks, gt_masks = pred_masks[:, None], gt_masks[:, None]
    pred_masks, gt_masks = pred_masks.cpu().bool().contiguous(), gt_masks.cpu().bool().contiguous()
    if pred_masks.shape[1:] != gt_masks.shape[1:] and pred_masks.numel() and gt_masks.numel():
        raise ValueError(f"track shapes differ: {tuple(pred_masks.shape)} vs {tuple(gt_masks.shape)}")
    scores, labels = pred_scores.cpu().double().reshape(-1), pred_labels.cpu().long().reshape(-1)
    g_labels = gt_labels.cpu().long().reshape(-1)
    crowd = torch.zeros(len(g_labels), dtype=torch.bool) if gt_iscrowd is None else gt_iscrowd.cpu().bool()
    d = len(labels)
    same = labels[:, None] == g_labels[None, :]
    inter, p_frames, g_frames = overlap_counts(pred_masks, gt_masks, same)  # (D, G, T), (D, T), (G, T)
    if protocol == "track":
        return _track_statistics(
            inter.sum(2),
            p_frames.sum(1),
            (p_frames > 0).sum(1),
            g_frames.sum(1),
            (g_frames > 0).sum(1),
            scores,
            labels,
            g_labels,
            crowd,
            video_key,
        )
    # frame protocol: frame t is an image with all D detections and the G_t tracks present on it
    t_len = pred_masks.shape[1] if d else gt_masks.shape[1]
    present = g_frames > 0  # (G, T)
    a_p = p_frames.double().T  # (T, D)
    a_g = g_frames.double().T  # (T, G)
    inter_t = inter.permute(2, 0, 1).double()  # (T, D, G)
    union = torch.where(crowd[None, None, :], a_p[:, :, None], a_p[:, :, None] + a_g[:, None, :] - inter_t)
    ious = torch.where(union > 0, inter_t / union.clamp(min=1), 0.0)
    ious = torch.where(same[None], ious, -1.0)
    keep = present.T  # (T, G)
    flat_ious = [ious[t][:, keep[t]].reshape(-1) for t in range(t_len)]
    gt_t = keep.nonzero()[:, 1]  # ground truths frame after frame
    return (
        torch.full((t_len,), d, dtype=torch.long),
        scores.repeat(t_len),
        labels.repeat(t_len),
        a_p.reshape(-1),
        keep.sum(1),
        g_labels[gt_t],
        a_g[keep],
        crowd[gt_t].long(),
        torch.cat(flat_ious) if flat_ious else torch.zeros(0, dtype=torch.float64),
        int(video_key) * FRAME_KEY_BASE + torch.arange(t_len),
    )


def _track_statistics(
    intersections: Tensor,
    pred_areas: Tensor,
    pred_frames: Tensor,
    gt_areas: Tensor,
    gt_frames: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    gt_labels: Tensor,
    gt_iscrowd: Tensor,
    video_key: int,
) -> tuple[Tensor, ...]:
    """The track protocol's statistics of one video from its sums over frames (what a video streamed
    chunk by chunk accumulates, :class:`~x2sam_lightning.metrics.streaming_tracks.TrackOverlaps`).

    Args:
        intersections: ``(D, G)`` pixels in common summed over the frames.
        pred_areas, pred_frames: ``(D,)`` area summed over the frames, frames where the track is non-empty.
        gt_areas, gt_frames: ``(G,)`` the same for the ground truth.
        pred_scores, pred_labels: ``(D,)``.
        gt_labels, gt_iscrowd: ``(G,)``.
        video_key: the video's id.

    Returns:
        The ``STATE_NAMES`` tensors of the video (one image), as :func:`_ap_update` returns them.
    """
    scores, labels = pred_scores.cpu().double().reshape(-1), pred_labels.cpu().long().reshape(-1)
    g_labels = gt_labels.cpu().long().reshape(-1)
    same = labels[:, None] == g_labels[None, :]
    i_sum = intersections.cpu().double()
    union = pred_areas.cpu().double()[:, None] + gt_areas.cpu().double()[None, :] - i_sum
    ious = torch.where(union > 0, i_sum / union.clamp(min=1), 0.0)
    ious = torch.where(same, ious, -1.0)
    one = torch.ones(1, dtype=torch.long)

    def mean_area(areas: Tensor, frames: Tensor) -> Tensor:
        return torch.where(frames > 0, areas.cpu().double() / frames.cpu().clamp(min=1), 0.0)

    return (
        one * len(labels),
        scores,
        labels,
        mean_area(pred_areas, pred_frames),
        one * len(g_labels),
        g_labels,
        mean_area(gt_areas, gt_frames),
        gt_iscrowd.cpu().long().reshape(-1),
        ious.reshape(-1),
        one * int(video_key),
    )


def _ap_compute(
    states: dict[str, Tensor], protocol: str = "track", max_dets: tuple[int, ...] = MAX_DETS
) -> dict[str, Tensor]:
    """COCO ``evaluate`` + ``accumulate`` + ``summarize`` over the statistics of all videos.

    Args:
        states: the ``STATE_NAMES`` tensors of all images, concatenated.
        protocol: ``"track"`` (YouTube-VIS area ranges) or ``"frame"`` (COCO area ranges).
        max_dets: detection limits.

    Returns:
        ``AP_KEYS`` -> float64 scalars in 0-1 (-1 where nothing was evaluated, as COCO prints).
    """
    s = {name: states[name].cpu().numpy() for name in STATE_NAMES}
    result = coco_evaluate(
        s["det_counts"],
        s["det_scores"],
        s["det_labels"],
        s["det_areas"],
        s["gt_counts"],
        s["gt_labels"],
        s["gt_areas"],
        s["gt_crowd"],
        s["ious"],
        image_keys=s["keys"],
        area_ranges=YTVIS_AREA_RANGES if protocol == "track" else COCO_AREA_RANGES,
        max_dets=max_dets,
    )
    summary = coco_summarize(result)
    values = [summary[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    values += [summary["AR"][k] for k in result.max_dets] + [summary[k] for k in ("ARs", "ARm", "ARl")]
    return {key: torch.tensor(v, dtype=torch.float64) for key, v in zip(AP_KEYS, values)}
