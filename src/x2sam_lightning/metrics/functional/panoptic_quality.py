"""Panoptic quality (PQ / SQ / RQ) with the COCO-panoptic rules, vectorised.

Reproduces ``panopticapi/evaluation.py::pq_compute_single_core`` (github.com/cocodataset/panopticapi):

- a ground-truth segment and a predicted segment match when they have the same category and
  ``IoU > 0.5``, where the union leaves out the predicted pixels that fall on VOID (id 0) ground truth;
- crowd ground-truth segments are never matched and never false negatives;
- an unmatched prediction is not a false positive when more than half of it lies on VOID or on the crowd
  region of its own category (the last crowd segment of that category in ``segments_info`` order, as the
  reference's ``crowd_labels_dict`` keeps the last one);
- PQ / SQ / RQ are averaged over the categories with ``tp + fp + fn > 0``.

Instead of the reference's ``np.unique`` over 64-bit pair codes and Python loops over pairs, segment ids are
mapped to compact indices with a look-up table and the intersections come from one ``bincount``; matching,
false positives and false negatives are tensor operations on the (few) occurring pairs. The computation runs
on CPU (id maps on an accelerator are copied over; the cost is a few milliseconds per COCO-size image). The same core serves video PQ
(:mod:`.video_panoptic_quality`), where it runs on many frame windows at once.

Inputs follow COCO panoptic: an integer id map per image (``0`` = VOID / unlabelled) and a ``segments_info``
list of dicts with ``id``, ``category_id`` and, for the ground truth, ``iscrowd`` (default 0). Detectron2 /
Mask2Former panoptic outputs (``panoptic_seg, segments_info``) plug in directly.

Ground-truth areas are pixel counts of the id map (panopticapi reads them from the json, where they are the
pixel counts). A listed ground-truth segment without pixels still counts as a false negative, as in the
reference; a listed prediction without pixels is ignored (the reference rejects such input).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

Segments = Sequence[Mapping[str, int]]


def _category_lut(categories: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Sorted category ids and their position in ``categories`` (for ``searchsorted`` look-ups)."""
    cats = torch.as_tensor(list(categories), dtype=torch.long)
    sorted_cats, order = torch.sort(cats)
    return sorted_cats, order


def _lookup(values: Tensor, sorted_keys: Tensor, key_pos: Tensor, missing: int) -> Tensor:
    """Position of each value among the keys (``missing`` where absent)."""
    if sorted_keys.numel() == 0:
        return torch.full_like(values, missing)
    idx = torch.searchsorted(sorted_keys, values).clamp_(max=sorted_keys.numel() - 1)
    found = sorted_keys[idx] == values
    return torch.where(found, key_pos[idx], torch.full_like(idx, missing))


def _segment_table(
    segments: Segments, category_keys: tuple[Tensor, Tensor], with_crowd: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sorted segment ids, their order in the list, category index per compact id and crowd flag.

    Compact index 0 is VOID, ``1..S`` the listed segments in list order, ``S + 1`` ids present in the map but
    not listed (neither VOID nor a segment, as in the reference).
    """
    ids = torch.tensor([int(s["id"]) for s in segments], dtype=torch.long)
    cats = torch.tensor([int(s["category_id"]) for s in segments], dtype=torch.long)
    if len(set(ids.tolist())) != ids.numel():
        raise ValueError("segment ids must be unique within an image / video")
    cat_idx = _lookup(cats, *category_keys, missing=-1)
    if (cat_idx < 0).any():
        raise ValueError(f"unknown category_id in {cats[cat_idx < 0].tolist()}")
    sorted_ids, order = torch.sort(ids)
    crowd = torch.zeros(ids.numel() + 2, dtype=torch.bool)
    if with_crowd:
        crowd[1:-1] = torch.tensor([bool(s.get("iscrowd", 0)) for s in segments], dtype=torch.bool)
    seg_cat = torch.cat([torch.tensor([-1]), cat_idx, torch.tensor([-1])])
    return sorted_ids, order + 1, seg_cat, crowd


_DIRECT_LUT_MAX = 1 << 22  # ids below this are mapped with a dense look-up table (at most 32 MB)


def _compact_ids(id_map: Tensor, sorted_ids: Tensor, pos: Tensor, scale: int = 1) -> Tensor:
    """Map raw segment ids to compact indices (0 = VOID, ``S + 1`` = unlisted), times ``scale``.

    Small ids (model outputs, VIPSeg) go through a dense table; large ones (COCO's RGB-encoded ids) through
    a collision-free modular hash of the listed ids, checked against the stored key. Both are two gathers,
    several times faster than ``searchsorted`` or ``unique``.
    """
    flat = id_map.reshape(-1)
    if flat.numel() == 0:
        return torch.zeros(0, dtype=torch.int32)
    low, top = (int(v) for v in torch.aminmax(flat))
    if low < 0 or top >= 2**31:
        raise ValueError("segment ids must lie in [0, 2**31)")
    flat = flat.int()  # int32 halves memory traffic; index_select is far faster than advanced indexing
    missing = (sorted_ids.numel() + 1) * scale
    sorted_ids, pos = sorted_ids.int(), pos.int() * scale
    if top < _DIRECT_LUT_MAX:
        lut = torch.full((top + 1,), missing, dtype=torch.int32)
        keep = sorted_ids <= top
        lut[sorted_ids[keep].long()] = pos[keep]
        lut[0] = 0
        return lut.index_select(0, flat)
    size = max(2 * sorted_ids.numel() + 1, 64)
    listed = sorted_ids.tolist()
    while len({i % size for i in listed}) != len(listed):
        size += 1
    keys = torch.full((size,), -1, dtype=torch.int32)
    values = torch.full((size,), missing, dtype=torch.int32)
    keys[(sorted_ids % size).long()], values[(sorted_ids % size).long()] = sorted_ids, pos
    slot = flat % size
    out = torch.where(keys.index_select(0, slot) == flat, values.index_select(0, slot), missing)
    return out.masked_fill_(flat == 0, 0)


def _window_stats(
    counts: Tensor,
    pair_g: Tensor,
    pair_p: Tensor,
    gt_cat: Tensor,
    gt_crowd: Tensor,
    pred_cat: Tensor,
    gt_present: Tensor,
    num_classes: int,
    gt_order: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PQ statistics summed over windows from their (gt, pred) intersection counts.

    Args:
        counts: ``[W, N]`` int64 pixel counts of the ``N`` (gt, pred) pairs in each of ``W`` windows
            (an image is one window).
        pair_g: ``[N]`` compact gt index of each pair (0 = VOID).
        pair_p: ``[N]`` compact pred index of each pair (0 = VOID).
        gt_cat: ``[G]`` category index of each compact gt index (-1 for VOID / unlisted).
        gt_crowd: ``[G]`` bool, crowd segments.
        pred_cat: ``[P]`` category index of each compact pred index (-1 for VOID / unlisted).
        gt_present: ``[W, G]`` bool, gt segments that take part in each window.
        num_classes: number of categories ``C``.
        gt_order: ``[W, G]`` rank of each gt segment in the reference's segment order (its dict insertion
            order); the unmatched-prediction rule uses the last present crowd segment of a category.
            Default: the compact index (``segments_info`` order).

    Returns:
        ``iou_sum`` ``[C]`` float64, ``tp``, ``fp``, ``fn`` ``[C]`` int64.
    """
    num_win = counts.shape[0]
    num_g, num_p = gt_cat.numel(), pred_cat.numel()
    gt_area = torch.zeros(num_win, num_g, dtype=torch.long).index_add_(1, pair_g, counts)
    pred_area = torch.zeros(num_win, num_p, dtype=torch.long).index_add_(1, pair_p, counts)
    on_void = pair_g == 0
    void_inter = torch.zeros(num_win, num_p, dtype=torch.long).index_add_(
        1, pair_p[on_void], counts[:, on_void]
    )

    cg, cp = gt_cat[pair_g], pred_cat[pair_p]
    cand = (cg >= 0) & (cg == cp) & ~gt_crowd[pair_g]
    inter = counts[:, cand]
    g, p, cat = pair_g[cand], pair_p[cand], cg[cand]
    union = pred_area[:, p] + gt_area[:, g] - inter - void_inter[:, p]
    iou = inter.double() / union.clamp(min=1).double()
    match = (inter > 0) & (iou > 0.5)

    iou_sum = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, cat, (iou * match).sum(0))
    tp = torch.zeros(num_classes, dtype=torch.long).index_add_(0, cat, match.sum(0))

    gt_matched = torch.zeros(num_win, num_g, dtype=torch.long).index_add_(1, g, match.long()) > 0
    pred_matched = torch.zeros(num_win, num_p, dtype=torch.long).index_add_(1, p, match.long()) > 0

    gt_real = gt_cat >= 0
    missed = gt_present & ~gt_matched & (gt_real & ~gt_crowd)
    fn = torch.zeros(num_classes, dtype=torch.long).index_add_(
        0, gt_cat.clamp(min=0), missed.sum(0) * gt_real
    )

    # the crowd region each unmatched prediction may fall on: the last present crowd segment of its category
    crowd_inter = torch.zeros(num_win, num_p, dtype=torch.long)
    crowd_idx = torch.nonzero(gt_crowd & gt_real).flatten()
    if crowd_idx.numel():
        order = gt_order if gt_order is not None else torch.arange(num_g).expand(num_win, -1)
        key = torch.where(gt_present & gt_crowd & gt_real, order, torch.full_like(order, -1))
        chosen = torch.full((num_win, num_classes), -1, dtype=torch.long).scatter_reduce_(
            1, gt_cat[crowd_idx].expand(num_win, -1), key[:, crowd_idx], reduce="amax"
        )
        on_crowd = gt_crowd[pair_g] & (cg >= 0) & (cg == cp)
        pair_key = key[:, pair_g[on_crowd]]
        sel = (chosen[:, cg[on_crowd]] == pair_key) & (pair_key >= 0)
        crowd_inter.index_add_(1, pair_p[on_crowd], counts[:, on_crowd] * sel)

    pred_real = pred_cat >= 0
    unmatched = (pred_area > 0) & ~pred_matched & pred_real
    ignored = 2 * (void_inter + crowd_inter) > pred_area
    false_pos = unmatched & ~ignored
    fp = torch.zeros(num_classes, dtype=torch.long).index_add_(
        0, pred_cat.clamp(min=0), false_pos.sum(0) * pred_real
    )
    return iou_sum, tp, fp, fn


def _pair_counts(gt_idx: Tensor, pred_idx: Tensor, num_g: int, num_p: int, num_win: int = 1) -> tuple:
    """Intersection counts of the (gt, pred) pairs that occur.

    Args:
        gt_idx: ``[W, n]`` (or ``[n]`` for one window) compact gt index per pixel, times ``num_p``.
        pred_idx: same shape, compact pred index per pixel.
        num_g: number of compact gt indices ``G``.
        num_p: number of compact pred indices ``P``.
        num_win: ``W``.

    Returns:
        ``counts`` ``[W, N]`` int64, ``pair_g`` ``[N]``, ``pair_p`` ``[N]`` for the ``N`` occurring pairs.
    """
    code = gt_idx.reshape(-1) + pred_idx.reshape(-1)
    total = torch.bincount(code, minlength=num_g * num_p)
    occurring = torch.nonzero(total).flatten()
    if num_win == 1:
        counts = total[occurring][None]
    else:
        lut = torch.zeros(num_g * num_p, dtype=torch.int32)
        lut[occurring] = torch.arange(occurring.numel(), dtype=torch.int32)
        offsets = torch.arange(num_win, dtype=torch.int32)[:, None] * occurring.numel()
        flat = (lut.index_select(0, code).view(num_win, -1) + offsets).reshape(-1)
        counts = torch.bincount(flat, minlength=num_win * occurring.numel()).view(num_win, -1)
    return counts, occurring // num_p, occurring % num_p


def _panoptic_quality_update(
    preds: Tensor,
    target: Tensor,
    pred_segments: Segments,
    target_segments: Segments,
    categories: Sequence[int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sufficient statistics of one image.

    Args:
        preds: ``[H, W]`` integer predicted segment ids (0 = VOID).
        target: ``[H, W]`` integer ground-truth segment ids (0 = VOID).
        pred_segments: ``segments_info`` of the prediction: dicts with ``id`` and ``category_id``.
        target_segments: ``segments_info`` of the ground truth: ``id``, ``category_id``, ``iscrowd``.
        categories: category ids; statistics are indexed in this order.

    Returns:
        ``iou_sum`` ``[C]`` float64, ``tp``, ``fp``, ``fn`` ``[C]`` int64.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    keys = _category_lut(categories)
    g_ids, g_pos, gt_cat, gt_crowd = _segment_table(target_segments, keys, with_crowd=True)
    p_ids, p_pos, pred_cat, _ = _segment_table(pred_segments, keys, with_crowd=False)
    gt_idx = _compact_ids(target.cpu(), g_ids, g_pos, scale=pred_cat.numel())
    pred_idx = _compact_ids(preds.cpu(), p_ids, p_pos)
    counts, pair_g, pair_p = _pair_counts(gt_idx, pred_idx, gt_cat.numel(), pred_cat.numel())
    if (pair_p == pred_cat.numel() - 1).any():
        raise ValueError("the prediction map holds segment ids missing from pred_segments")
    gt_present = torch.ones(1, gt_cat.numel(), dtype=torch.bool)  # listed segments count even if empty
    return _window_stats(counts, pair_g, pair_p, gt_cat, gt_crowd, pred_cat, gt_present, len(categories))


def _panoptic_quality_compute(
    iou_sum: Tensor, tp: Tensor, fp: Tensor, fn: Tensor, is_thing: Tensor
) -> dict[str, Tensor]:
    """PQ / SQ / RQ for all, thing and stuff categories and per category, as ``PQStat.pq_average``.

    Args:
        iou_sum: ``[C]`` float64 sum of matched IoUs.
        tp: ``[C]`` true positives.
        fp: ``[C]`` false positives.
        fn: ``[C]`` false negatives.
        is_thing: ``[C]`` bool.

    Returns:
        ``pq, sq, rq`` (all categories), ``pq_th, sq_th, rq_th``, ``pq_st, sq_st, rq_st`` as scalars in
        ``[0, 1]`` (NaN when no category of the group occurs; the reference divides by zero there), and
        ``pq_per_class, sq_per_class, rq_per_class`` ``[C]`` (0 for categories that never occur, as the
        reference reports them).
    """
    tp_d, fp_d, fn_d = tp.double(), fp.double(), fn.double()
    valid = (tp + fp + fn) > 0
    denom = (tp_d + 0.5 * fp_d + 0.5 * fn_d).clamp(min=1e-12)
    pq_c = torch.where(valid, iou_sum / denom, 0.0)
    sq_c = torch.where(tp > 0, iou_sum / tp_d.clamp(min=1), 0.0)
    rq_c = torch.where(valid, tp_d / denom, 0.0)
    out: dict[str, Tensor] = {}
    for suffix, group in (("", torch.ones_like(valid)), ("_th", is_thing), ("_st", ~is_thing)):
        sel = valid & group
        n = sel.sum()
        for name, per_class in (("pq", pq_c), ("sq", sq_c), ("rq", rq_c)):
            out[name + suffix] = per_class[sel].sum() / n if n > 0 else torch.tensor(float("nan"))
    out.update(pq_per_class=pq_c, sq_per_class=sq_c, rq_per_class=rq_c)
    return out


def panoptic_quality(
    preds: Tensor,
    target: Tensor,
    pred_segments: Sequence[Segments],
    target_segments: Sequence[Segments],
    things: Iterable[int],
    stuffs: Iterable[int],
) -> dict[str, Tensor]:
    """COCO-panoptic PQ / SQ / RQ of a batch of images.

    Args:
        preds: ``[B, H, W]`` integer predicted segment ids (0 = VOID).
        target: ``[B, H, W]`` integer ground-truth segment ids (0 = VOID).
        pred_segments: per image, ``segments_info`` dicts with ``id`` and ``category_id``.
        target_segments: per image, ``segments_info`` dicts with ``id``, ``category_id``, ``iscrowd``.
        things: thing category ids.
        stuffs: stuff category ids.

    Returns:
        The dict of :func:`_panoptic_quality_compute`.
    """
    things, stuffs = list(things), list(stuffs)
    categories = things + stuffs
    stats = [
        torch.zeros(len(categories), dtype=d) for d in (torch.float64, torch.long, torch.long, torch.long)
    ]
    for b in range(preds.shape[0]):
        for acc, new in zip(
            stats,
            _panoptic_quality_update(preds[b], target[b], pred_segments[b], target_segments[b], categories),
        ):
            acc += new
    is_thing = torch.tensor([i < len(things) for i in range(len(categories))])
    return _panoptic_quality_compute(*stats, is_thing)
