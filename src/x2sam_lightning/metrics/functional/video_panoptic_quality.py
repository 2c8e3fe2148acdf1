"""Video panoptic quality (VPQ) of VIPSeg: PQ over k-frame windows of id-consistent tubes.

Reproduces ``ClipPanoFCN/eval_vpq_vspw.py`` of github.com/VIPSeg-Dataset/VIPSeg-Dataset (derived from the
Cityscapes-VPS ``eval_vpq``): for each window size ``k`` (1, 2, 4, 6, 8) and each window of ``k`` consecutive
frames (stride 1; a video shorter than ``k`` gives none), the ``k`` frames are concatenated into one panoptic
image whose segments are the tubes (same id across frames), and COCO-panoptic statistics are taken with
panopticapi's rules (match: same category and IoU > 0.5 with the prediction's VOID pixels left out of the
union; crowd and VOID handling). Statistics are summed over all windows of all videos; ``VPQ_k`` is PQ over
categories with ``tp + fp + fn > 0`` and VPQ is the mean of ``VPQ_k`` over the window sizes.

Here the per-frame (gt, pred) intersections are counted once per video with one ``bincount``, and each
window's statistics are differences of their cumulative sums, so the cost no longer grows with ``k``.

Segments are given per video, with one category per id (the reference takes a tube's category from its first
frame in the window; a tracker keeps it constant). A window includes the segments with pixels in it (the
reference: those listed in the per-frame ``segments_info``, which lists the segments present). For the
crowd rule the per-frame segment order is the order of the video's segment list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.panoptic_quality import (
    Segments,
    _category_lut,
    _compact_ids,
    _pair_counts,
    _panoptic_quality_compute,
    _segment_table,
    _window_stats,
)

VIPSEG_WINDOWS = (1, 2, 4, 6, 8)


def _video_panoptic_quality_update(
    preds: Tensor,
    target: Tensor,
    pred_segments: Segments,
    target_segments: Segments,
    categories: Sequence[int],
    window_sizes: Sequence[int] = VIPSEG_WINDOWS,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sufficient statistics of one video for each window size.

    Args:
        preds: ``[T, H, W]`` integer predicted tube ids (0 = VOID), consistent over time.
        target: ``[T, H, W]`` integer ground-truth tube ids (0 = VOID).
        pred_segments: the video's predicted segments: dicts with ``id`` and ``category_id``.
        target_segments: the video's gt segments: dicts with ``id``, ``category_id``, ``iscrowd`` (default 0).
        categories: category ids; statistics are indexed in this order.
        window_sizes: the ``K`` window lengths in frames.

    Returns:
        ``iou_sum`` ``[K, C]`` float64, ``tp``, ``fp``, ``fn`` ``[K, C]`` int64.
    """
    if preds.shape != target.shape or preds.ndim != 3:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [T, H, W]"
        )
    keys = _category_lut(categories)
    g_ids, g_pos, gt_cat, gt_crowd = _segment_table(target_segments, keys, with_crowd=True)
    p_ids, p_pos, pred_cat, _ = _segment_table(pred_segments, keys, with_crowd=False)
    num_frames, num_g, num_p = preds.shape[0], gt_cat.numel(), pred_cat.numel()
    gt_idx = _compact_ids(target.cpu(), g_ids, g_pos, scale=num_p)
    pred_idx = _compact_ids(preds.cpu(), p_ids, p_pos)
    counts, pair_g, pair_p = _pair_counts(gt_idx, pred_idx, num_g, num_p, num_win=num_frames)
    if (pair_p == num_p - 1).any():
        raise ValueError("the prediction map holds segment ids missing from pred_segments")
    zero = torch.zeros(1, counts.shape[1], dtype=torch.long)
    cum = torch.cat([zero, counts.cumsum(0)])
    gt_frame = torch.zeros(num_frames, num_g, dtype=torch.long).index_add_(1, pair_g, counts) > 0
    cum_gt = torch.cat([torch.zeros(1, num_g, dtype=torch.long), gt_frame.long().cumsum(0)])
    # reference order of a window's segments: first frame of appearance in the window, then list order
    frame = torch.where(gt_frame, torch.arange(num_frames)[:, None], num_frames)
    first = frame.flip(0).cummin(0).values.flip(0)
    order = first * num_g + torch.arange(num_g)

    num_k, num_c = len(window_sizes), len(categories)
    iou_sum = torch.zeros(num_k, num_c, dtype=torch.float64)
    tp, fp, fn = (torch.zeros(num_k, num_c, dtype=torch.long) for _ in range(3))
    for i, k in enumerate(window_sizes):
        if num_frames < k:
            continue
        win = cum[k:] - cum[:-k]
        present = (cum_gt[k:] - cum_gt[:-k]) > 0
        stats = _window_stats(
            win,
            pair_g,
            pair_p,
            gt_cat,
            gt_crowd,
            pred_cat,
            present,
            num_c,
            gt_order=order[: num_frames - k + 1],
        )
        iou_sum[i], tp[i], fp[i], fn[i] = stats
    return iou_sum, tp, fp, fn


def _video_panoptic_quality_compute(
    iou_sum: Tensor, tp: Tensor, fp: Tensor, fn: Tensor, is_thing: Tensor, window_sizes: Sequence[int]
) -> dict[str, Tensor]:
    """VPQ from ``[K, C]`` statistics.

    Returns:
        ``vpq, vpq_th, vpq_st`` (means over the window sizes) and ``vpq_k{k}, vpq_th_k{k}, vpq_st_k{k}``,
        ``sq_k{k}``, ``rq_k{k}`` per window size, in ``[0, 1]`` (the reference prints them x100); NaN where
        no category of a group occurs.
    """
    out: dict[str, Tensor] = {}
    per_k = [
        _panoptic_quality_compute(iou_sum[i], tp[i], fp[i], fn[i], is_thing) for i in range(len(window_sizes))
    ]
    for suffix in ("", "_th", "_st"):
        values = torch.stack([res["pq" + suffix] for res in per_k])
        out["vpq" + suffix] = values.mean()
        for k, value in zip(window_sizes, values):
            out[f"vpq{suffix}_k{k}"] = value
    for k, res in zip(window_sizes, per_k):
        out[f"sq_k{k}"], out[f"rq_k{k}"] = res["sq"], res["rq"]
    return out


def video_panoptic_quality(
    videos: Sequence[tuple[Tensor, Tensor, Segments, Segments]],
    things: Iterable[int],
    stuffs: Iterable[int],
    window_sizes: Sequence[int] = VIPSEG_WINDOWS,
) -> dict[str, Tensor]:
    """VPQ of a set of videos.

    Args:
        videos: per video ``(preds [T, H, W], target [T, H, W], pred_segments, target_segments)``.
        things: thing category ids.
        stuffs: stuff category ids.
        window_sizes: window lengths in frames.

    Returns:
        The dict of :func:`_video_panoptic_quality_compute`.
    """
    things, stuffs = list(things), list(stuffs)
    categories = things + stuffs
    totals = None
    for video in videos:
        stats = _video_panoptic_quality_update(*video, categories, window_sizes)
        totals = stats if totals is None else tuple(a + b for a, b in zip(totals, stats))
    if totals is None:
        shape = (len(window_sizes), len(categories))
        totals = (
            torch.zeros(shape, dtype=torch.float64),
            *(torch.zeros(shape, dtype=torch.long) for _ in range(3)),
        )
    is_thing = torch.tensor([i < len(things) for i in range(len(categories))])
    return _video_panoptic_quality_compute(*totals, is_thing, window_sizes)
