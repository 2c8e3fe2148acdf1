"""COCO-style matching, accumulation and summary of mask AP, vectorised over images, categories, area
ranges and IoU thresholds.

Reproduces ``pycocotools/cocoeval.py::COCOeval`` ``evaluateImg`` / ``accumulate`` / ``summarize`` and their
video versions in ``youtubevos/cocoapi`` ``ytvoseval.py::YTVOSeval`` (``evaluateVid``), which differ only in
what an IoU and an area are (callers pass both in). The official code loops in Python over images,
categories, area ranges, thresholds, detections and ground truths; here one greedy step handles one
detection rank of every (image, category, area range, threshold) at once, so the Python loop runs over
ranks only (at most ``max_dets[-1]``). The rules are the official ones, tie-breaks included:

- per image and category, detections sorted by score (stable, so equal scores keep input order), the
  first ``max_dets[-1]`` kept; ground truths that are crowd or outside the area range are "ignored" and
  sorted after the others (stable);
- a detection takes, among the ground truths not yet taken (crowd ones can be taken again) with
  ``IoU >= min(threshold, 1 - 1e-10)``, the last one with the highest IoU, preferring non-ignored ones;
- an unmatched detection outside the area range is ignored; matched to an ignored gt, it is ignored;
- ``accumulate``: per category and area range, detections of all images sorted by score (stable over
  the image order, then the per-image rank), precision made monotone from the right and read at 101
  recall thresholds; ``summarize``: mean of the defined entries (-1 where none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: pycocotools ``Params``: ``np.linspace(.5, 0.95, 10)`` and ``np.linspace(.0, 1.00, 101)``.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
#: Area ranges (``all`` first, then small, medium, large) of COCO images and of YouTube-VIS tracks.
COCO_AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
YTVIS_AREA_RANGES = ((0.0, 1e5**2), (0.0, 128.0**2), (128.0**2, 256.0**2), (256.0**2, 1e5**2))
MAX_DETS = (1, 10, 100)
_T = len(IOU_THRESHOLDS)
# pairs matched together in one block: bounds the [pairs, areas, thresholds, gts] work arrays
_BLOCK_PAIRS = 4096


@dataclass
class COCOEvalResult:
    """``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]`` as ``COCOeval.eval`` (-1 where a
    category has no non-ignored ground truth), for ``max_dets`` ``M`` and categories ``K`` in id order."""

    precision: np.ndarray
    recall: np.ndarray
    max_dets: tuple[int, ...]


def _segment_starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean start flags of the runs of equal ``keys`` rows in already-sorted arrays."""
    n = len(keys[0])
    start = np.zeros(n, dtype=bool)
    if n:
        start[0] = True
        for key in keys:
            start[1:] |= key[1:] != key[:-1]
    return start


def _rank_in_segment(start: np.ndarray) -> np.ndarray:
    """Position of each element inside its run (runs given by their start flags)."""
    idx = np.arange(len(start))
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def coco_evaluate(
    det_counts: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    det_areas: np.ndarray,
    gt_counts: np.ndarray,
    gt_labels: np.ndarray,
    gt_areas: np.ndarray,
    gt_crowd: np.ndarray,
    ious: np.ndarray,
    image_keys: np.ndarray | None = None,
    area_ranges: Sequence[tuple[float, float]] = COCO_AREA_RANGES,
    max_dets: Sequence[int] = MAX_DETS,
    class_agnostic: bool = False,
) -> COCOEvalResult:
    """``evaluate`` + ``accumulate`` over all images (or videos).

    Args:
        det_counts: ``[I]`` detections per image; the arrays below list them image after image, each
            image's in input order (ties of equal score keep it).
        det_scores: ``[D]`` scores.
        det_labels: ``[D]`` category ids.
        det_areas: ``[D]`` areas compared with the area ranges.
        gt_counts: ``[I]`` ground truths per image.
        gt_labels: ``[G]`` category ids.
        gt_areas: ``[G]`` areas compared with the area ranges.
        gt_crowd: ``[G]`` crowd flags (ignored ground truths that may match several detections).
        ious: flattened per-image ``[D_i, G_i]`` IoU matrices, image after image (only entries of the same
            category are read unless ``class_agnostic``).
        image_keys: ``[I]`` the images' ids: the official order of images (ties of equal score across
            images); default the input order.
        area_ranges: ``(lo, hi)`` ranges, ``all`` first.
        max_dets: detection limits per image (sorted ascending).
        class_agnostic: one category for everything (``params.useCats = 0``).
    """
    max_dets = tuple(sorted(int(m) for m in max_dets))
    dc, gc = np.asarray(det_counts, np.int64), np.asarray(gt_counts, np.int64)
    n_img = len(dc)
    img_order = np.zeros(n_img, np.int64)
    if image_keys is not None:
        img_order[np.argsort(np.asarray(image_keys), kind="stable")] = np.arange(n_img)
    else:
        img_order = np.arange(n_img)
    d_off, g_off = np.concatenate([[0], np.cumsum(dc)]), np.concatenate([[0], np.cumsum(gc)])
    i_off = np.concatenate([[0], np.cumsum(dc * gc)])
    det_img, gt_img = np.repeat(np.arange(n_img), dc), np.repeat(np.arange(n_img), gc)
    det_local, gt_local = np.arange(len(det_img)) - d_off[det_img], np.arange(len(gt_img)) - g_off[gt_img]
    det_labels, gt_labels = np.asarray(det_labels, np.int64), np.asarray(gt_labels, np.int64)
    det_scores = np.asarray(det_scores, np.float64)
    cats = np.unique(np.concatenate([det_labels, gt_labels]))
    det_cat = np.zeros_like(det_labels) if class_agnostic else det_labels
    gt_cat = np.zeros_like(gt_labels) if class_agnostic else gt_labels

    # detections per (image, category) by score; class-agnostic ties fall back to category then input
    # order, as COCOeval concatenates the per-category lists before its stable sort
    d_sort = np.lexsort((det_local, det_labels, -det_scores, det_cat, img_order[det_img]))
    d_start = _segment_starts(det_img[d_sort], det_cat[d_sort])
    d_rank = _rank_in_segment(d_start)
    keep = d_rank < max_dets[-1]
    d_sort, d_start, d_rank = d_sort[keep], d_start[keep], d_rank[keep]
    g_sort = np.lexsort((gt_local, gt_labels, gt_cat, img_order[gt_img]))

    # (image, category) pairs holding detections or ground truths
    base = min(det_cat.min(initial=0), gt_cat.min(initial=0))
    span = max(det_cat.max(initial=0), gt_cat.max(initial=0)) - base + 1
    d_code = img_order[det_img[d_sort]] * span + (det_cat[d_sort] - base)
    g_code = img_order[gt_img[g_sort]] * span + (gt_cat[g_sort] - base)
    codes = np.unique(np.concatenate([d_code, g_code]))
    d_pair, g_pair = np.searchsorted(codes, d_code), np.searchsorted(codes, g_code)
    n_pairs = len(codes)
    n_det = np.bincount(d_pair, minlength=n_pairs)
    n_gt = np.bincount(g_pair, minlength=n_pairs)
    det_first = np.concatenate([[0], np.cumsum(n_det)[:-1]])
    gt_first = np.concatenate([[0], np.cumsum(n_gt)[:-1]])

    n_area = len(area_ranges)
    lo = np.array([r[0] for r in area_ranges])[:, None]
    hi = np.array([r[1] for r in area_ranges])[:, None]
    g_area = np.asarray(gt_areas, np.float64)[g_sort]
    g_crowd = np.asarray(gt_crowd).astype(bool)[g_sort]
    g_ignore = g_crowd[None, :] | (g_area[None, :] < lo) | (g_area[None, :] > hi)  # [A, G]
    d_area = np.asarray(det_areas, np.float64)[d_sort]
    d_out = (d_area[None, :] < lo) | (d_area[None, :] > hi)  # [A, D]

    layout = _PairLayout(
        n_det, n_gt, det_first, gt_first, d_sort, g_sort, det_img, det_local, gt_local, gc, i_off,
        np.asarray(ious, np.float64),
    )  # fmt: skip
    gt = (g_ignore, g_crowd)
    # matched / ignored flags per (area, threshold, detection in d_sort order)
    matched = np.zeros((n_area, _T, len(d_sort)), dtype=bool)
    ignored = np.zeros_like(matched)
    both = np.flatnonzero((n_det > 0) & (n_gt > 0))
    # group pairs of similar ground-truth counts (padding costs work), then by detection count
    width = np.left_shift(1, np.ceil(np.log2(np.maximum(n_gt[both], 1))).astype(np.int64))
    both = both[np.lexsort((-n_det[both], width))]
    width = np.left_shift(1, np.ceil(np.log2(np.maximum(n_gt[both], 1))).astype(np.int64))
    bounds = np.flatnonzero(np.diff(width)) + 1
    for block in np.split(both, bounds):
        for start in range(0, len(block), _BLOCK_PAIRS):
            pairs = block[start : start + _BLOCK_PAIRS]
            pairs = pairs[np.argsort(-n_det[pairs], kind="stable")]
            iou = _pair_ious(pairs, layout)
            _match_block(
                iou, n_det[pairs], n_gt[pairs], det_first[pairs], gt_first[pairs], gt, matched, ignored
            )
    ignored |= ~matched & d_out[:, None, :]

    # npig per (category, area): non-ignored ground truths
    if class_agnostic:
        cats = np.zeros(1, np.int64)
    cat_index_d, cat_index_g = np.searchsorted(cats, det_cat[d_sort]), np.searchsorted(cats, gt_cat[g_sort])
    n_k = len(cats)
    npig = np.zeros((n_k, n_area))
    for a in range(n_area):
        npig[:, a] = np.bincount(cat_index_g[~g_ignore[a]], minlength=n_k)[:n_k]
    precision, recall = _accumulate(
        cat_index_d, det_scores[d_sort], img_order[det_img[d_sort]], d_rank, matched, ignored, npig, max_dets
    )
    return COCOEvalResult(precision, recall, max_dets)


@dataclass
class _PairLayout:
    """Where the detections and ground truths of each (image, category) pair sit: pair ``p`` owns sorted
    detections ``det_first[p] : det_first[p] + n_det[p]`` of ``d_sort`` (and likewise ground truths); their
    IoU is entry ``(det_local, gt_local)`` of the image's ``[D_i, G_i]`` block of ``ious``."""

    n_det: np.ndarray
    n_gt: np.ndarray
    det_first: np.ndarray
    gt_first: np.ndarray
    d_sort: np.ndarray
    g_sort: np.ndarray
    det_img: np.ndarray
    det_local: np.ndarray
    gt_local: np.ndarray
    gt_counts: np.ndarray
    iou_offsets: np.ndarray
    ious: np.ndarray


def _pair_ious(pairs: np.ndarray, lay: _PairLayout) -> np.ndarray:
    """``[n, D_max, G_max]`` IoUs of the pairs' (detection rank, gt position), padded with -1 (no match)."""
    nd, ng = lay.n_det[pairs], lay.n_gt[pairs]
    combos = nd * ng
    pair_of = np.repeat(np.arange(len(pairs)), combos)
    k = np.arange(int(combos.sum())) - np.repeat(np.cumsum(combos) - combos, combos)
    r, j = k // ng[pair_of], k % ng[pair_of]
    d_idx = lay.d_sort[lay.det_first[pairs][pair_of] + r]
    g_idx = lay.g_sort[lay.gt_first[pairs][pair_of] + j]
    img = lay.det_img[d_idx]
    iou = np.full((len(pairs), int(nd.max()), int(ng.max())), -1.0)
    flat = lay.iou_offsets[img] + lay.det_local[d_idx] * lay.gt_counts[img] + lay.gt_local[g_idx]
    iou[pair_of, r, j] = lay.ious[flat]
    return iou


def _match_block(
    iou: np.ndarray,
    nd: np.ndarray,
    ng: np.ndarray,
    det_first: np.ndarray,
    gt_first: np.ndarray,
    gt: tuple[np.ndarray, np.ndarray],
    matched: np.ndarray,
    ignored: np.ndarray,
) -> None:
    """Greedy matching of a block of pairs for every area range and threshold.

    Args:
        iou: ``[n, D_max, G_max]`` IoUs of the pairs (see :func:`_pair_ious`).
        nd, ng: ``[n]`` detections and ground truths per pair, ``nd`` descending.
        det_first, gt_first: ``[n]`` first sorted detection / ground truth of each pair.
        gt: ``(ignore [A, G], crowd [G])`` of the sorted ground truths.
        matched, ignored: ``[A, T, D]`` flags of the sorted detections, written for the block's ones.
    """
    g_ignore, g_crowd = gt
    n_area = g_ignore.shape[0]
    n, d_max, g_max = iou.shape
    # per area range: gts of the pair, ignored ones last (stable), padding after them
    gt_pos = gt_first[:, None] + np.arange(g_max)[None, :]
    pad = np.arange(g_max)[None, :] >= ng[:, None]
    gt_pos = np.where(pad, 0, gt_pos)
    ign = np.where(pad[:, None, :], True, g_ignore[:, gt_pos].transpose(1, 0, 2))  # [n, A, G]
    crowd = np.where(pad, False, g_crowd[gt_pos])  # [n, G]
    order = np.argsort(ign.astype(np.int8) + pad[:, None, :], axis=2, kind="stable")  # [n, A, G]
    ign = np.take_along_axis(ign, order, axis=2)
    crowd = np.take_along_axis(np.broadcast_to(crowd[:, None, :], order.shape), order, axis=2)
    iou = np.take_along_axis(iou[:, None, :, :], order[:, :, None, :], axis=3)  # [n, A, D, G]
    regular = ~ign[:, :, None, :]  # [n, A, 1, G]
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, None, :, None]
    free = np.ones((n, n_area, _T, g_max), dtype=bool)
    reusable = np.broadcast_to(crowd[:, :, None, :], free.shape)
    active = np.searchsorted(-nd, -np.arange(d_max), side="left")  # pairs with more than r detections
    for rank in range(d_max):
        m_pairs = int(active[rank])
        cur = iou[:m_pairs, :, rank, None, :]  # [m, A, 1, G]
        vals = np.where((cur >= thr) & free[:m_pairs], cur, -1.0)  # eligible gts
        reg = np.where(regular[:m_pairs], vals, -1.0)
        vals = np.where(reg.max(axis=3, keepdims=True) >= 0, reg, vals)  # regular gts first
        pick = g_max - 1 - vals[..., ::-1].argmax(axis=3)  # the last of the best
        best = np.take_along_axis(vals, pick[..., None], axis=3)[..., 0]
        hit = best >= 0
        pos = det_first[:m_pairs] + rank
        matched[:, :, pos] = hit.transpose(1, 2, 0)
        pick_ign = np.take_along_axis(np.broadcast_to(~regular[:m_pairs], vals.shape), pick[..., None], 3)
        ignored[:, :, pos] = (hit & pick_ign[..., 0]).transpose(1, 2, 0)
        taken = hit & ~np.take_along_axis(reusable[:m_pairs], pick[..., None], axis=3)[..., 0]
        view = free[:m_pairs]
        np.put_along_axis(
            view, pick[..., None], np.take_along_axis(view, pick[..., None], 3) & ~taken[..., None], 3
        )


def _accumulate(
    cat_index: np.ndarray,
    scores: np.ndarray,
    img_order: np.ndarray,
    rank: np.ndarray,
    matched: np.ndarray,
    ignored: np.ndarray,
    npig: np.ndarray,
    max_dets: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """``COCOeval.accumulate`` from per-detection flags ``[A, T, D]`` (detections in any order)."""
    n_k, n_area = npig.shape
    n_rec = len(RECALL_THRESHOLDS)
    precision = -np.ones((_T, n_rec, n_k, n_area, len(max_dets)))
    recall = -np.ones((_T, n_k, n_area, len(max_dets)))
    # official order: per category, score descending, ties by image order then per-image rank
    order = np.lexsort((rank, img_order, -scores, cat_index))
    cat_sorted, rank_sorted = cat_index[order], rank[order]
    for m, max_det in enumerate(max_dets):
        sel = order[rank_sorted < max_det]
        cat_m = cat_sorted[rank_sorted < max_det]
        bounds = np.searchsorted(cat_m, np.arange(n_k + 1))
        for a in range(n_area):
            tps = matched[a][:, sel] & ~ignored[a][:, sel]  # [T, N]
            fps = ~matched[a][:, sel] & ~ignored[a][:, sel]
            tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)
            fp_sum = np.cumsum(fps, axis=1, dtype=np.float64)
            for k in range(n_k):
                if npig[k, a] == 0:
                    continue
                s, e = bounds[k], bounds[k + 1]
                if e == s:
                    recall[:, k, a, m] = 0
                    precision[:, :, k, a, m] = 0
                    continue
                tp = tp_sum[:, s:e] - (tp_sum[:, s - 1 : s] if s else 0)
                fp = fp_sum[:, s:e] - (fp_sum[:, s - 1 : s] if s else 0)
                rc = tp / npig[k, a]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1]
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                q = np.zeros((_T, n_rec))
                for t in range(_T):
                    inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    valid = inds < e - s
                    q[t, valid] = pr[t, inds[valid]]
                precision[:, :, k, a, m] = q
    return precision, recall


def coco_summarize(result: COCOEvalResult, max_det: int | None = None) -> dict[str, float | dict[int, float]]:
    """The twelve ``COCOeval.summarize`` numbers (AP and AR at ``max_det``, default the largest limit; AR at
    every limit), -1 where nothing is defined.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "ARs", "ARm", "ARl": float, "AR": {limit: float}}``.
    """
    dets = result.max_dets
    m_main = dets.index(dets[-1] if max_det is None else max_det)

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    def ap(iou: float | None = None, area: int = 0) -> float:
        s = result.precision[..., area, m_main]
        if iou is not None:
            s = s[np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou))]
        return mean(s)

    def ar(area: int = 0, m: int = m_main) -> float:
        return mean(result.recall[:, :, area, m])

    return {
        "AP": ap(),
        "AP50": ap(0.5),
        "AP75": ap(0.75),
        "APs": ap(area=1),
        "APm": ap(area=2),
        "APl": ap(area=3),
        "AR": {limit: ar(m=m) for m, limit in enumerate(dets)},
        "ARs": ar(1),
        "ARm": ar(2),
        "ARl": ar(3),
    }
