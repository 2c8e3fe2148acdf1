"""Semantic-segmentation mIoU over a dataset-level confusion matrix.

Convention (the one the VSPW, ADE20K and COCO-stuff benchmarks score with): one ``[C, C]`` confusion matrix
summed over the whole dataset, ground-truth pixels outside ``[0, C)`` or equal to ``ignore_index`` left out
(with their predictions), and per-class IoU averaged over the classes **present in the ground truth**
(at least one gt pixel). References, which agree on this:

- VSPW: ``VSPW-dataset/VSPW_code``, ``utils.py::Evaluator.Mean_Intersection_over_Union`` (run by
  ``evaluator_test.py``);
- detectron2 / Mask2Former (ADE20K, COCO; used by X-SAM):
  ``detectron2/evaluation/sem_seg_evaluation.py::SemSegEvaluator.evaluate``.

A class that is predicted but absent from the ground truth does not enter the mean (unlike a plain
``nanmean`` over classes with a non-empty union).

Counting: label maps are piecewise constant, so on CPU the pixels (in raster order, frames one after the
other) are grouped into runs of equal (ground truth, prediction) pairs and each run is counted once with
its length (exact integer sums). Finding the runs takes a few byte-wise passes over the maps; the histogram
then touches one entry per run instead of one per pixel, which is what bounds the one-``bincount``-per-pixel
reference. Maps with many short runs (noise) fall back to the per-pixel histogram, as do accelerators.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

# per-pixel histogram instead of runs when runs are this short on average
_MIN_MEAN_RUN = 8
# pixels compared per step: the work arrays stay in the CPU cache, so the maps are read from memory once
_CHUNK = 2**17
# scratch buffers reused across calls (a fresh array costs a page fault per 4 KiB)
_SCRATCH = threading.local()


def _scratch() -> tuple[np.ndarray, np.ndarray]:
    """Two ``_CHUNK``-byte uint8 work arrays of this thread."""
    if not hasattr(_SCRATCH, "arrays"):
        _SCRATCH.arrays = (np.empty(_CHUNK, np.uint8), np.empty(_CHUNK, np.uint8))
    return _SCRATCH.arrays


def _mean_iou_update(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> Tensor:
    """Confusion matrix of a batch.

    Args:
        preds: ``[...]`` integer predicted class map (e.g. ``[B, H, W]``), values in ``[0, C)``.
        target: same shape, integer ground-truth class map; values outside ``[0, C)`` or equal to
            ``ignore_index`` are ignored.
        num_classes: ``C``.
        ignore_index: label to ignore (e.g. 255), or None.

    Returns:
        ``[C, C]`` int64 confusion matrix, rows = ground truth, columns = prediction.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
    preds, target = preds.reshape(-1), target.reshape(-1)
    if target.numel() == 0:
        return torch.zeros(num_classes, num_classes, dtype=torch.long, device=target.device)
    sentinel = num_classes * num_classes  # ignored pixels land in bins sentinel + pred
    if target.device.type == "cpu" and preds.device.type == "cpu" and target.numel() > 1:
        p, t = preds.numpy(), target.numpy()
        runs = _runs(p, t)
        if runs is not None:
            starts, lengths = runs
            g_s, p_s = t[starts].astype(np.int64), p[starts].astype(np.int64)
            scored = (g_s >= 0) & (g_s < num_classes)
            if ignore_index is not None:
                scored &= g_s != ignore_index
            if ((p_s < 0) | (p_s >= num_classes))[scored].any():  # only scored pixels must be in range
                raise ValueError(f"predicted classes must lie in [0, {num_classes})")
            codes = (g_s * num_classes + p_s)[scored]
            counts = np.bincount(codes, weights=lengths[scored], minlength=sentinel)  # exact: sums < 2**53
            return torch.from_numpy(counts.round().astype(np.int64)).view(num_classes, num_classes)
        if p.dtype == t.dtype == np.uint8 and int(p.max()) < num_classes:
            # short runs (noise): one histogram of gt * C + pred; gt values >= C (ignored) land past C * C
            codes = t.astype(np.int32)
            codes *= num_classes
            codes += p
            if ignore_index is not None and 0 <= ignore_index < num_classes:
                codes[t == ignore_index] = sentinel
            counts = torch.bincount(torch.from_numpy(codes), minlength=sentinel)[:sentinel]
            return counts.view(num_classes, num_classes).long()
    counts = torch.bincount(_codes(preds, target, num_classes, ignore_index), minlength=sentinel)[:sentinel]
    return counts.view(num_classes, num_classes).long()


def _runs(preds: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Starts and lengths of the runs of equal (target, preds) pairs of two flat maps, or None when the runs
    are too short on average to be worth it."""
    n = target.size
    same_bytes = target.dtype == preds.dtype == np.uint8
    changed, other = _scratch()
    found = [np.zeros(1, np.int64)]
    for start in range(0, n - 1, _CHUNK):
        stop = min(start + _CHUNK, n - 1)
        size = stop - start
        # changed[i] != 0 where pixel start + i + 1 differs from pixel start + i
        c, o = changed[:size], other[:size]
        if same_bytes:
            np.bitwise_xor(target[start + 1 : stop + 1], target[start:stop], out=c)
            np.bitwise_xor(preds[start + 1 : stop + 1], preds[start:stop], out=o)
        else:
            np.not_equal(target[start + 1 : stop + 1], target[start:stop], out=c.view(bool))
            np.not_equal(preds[start + 1 : stop + 1], preds[start:stop], out=o.view(bool))
        np.bitwise_or(c, o, out=c)
        changed[size : -(-size // 8) * 8] = 0
        # numpy's nonzero is fast on bool only: the int64 words holding a change, then the bytes in them
        words = changed[: -(-size // 8) * 8].view(np.uint64)
        hot = np.flatnonzero(words != 0)
        inside = np.flatnonzero(words[hot].view(np.uint8) != 0)
        found.append(start + hot[inside >> 3] * 8 + (inside & 7) + 1)
        if sum(len(f) for f in found) * _MIN_MEAN_RUN > n:
            return None
    starts = np.concatenate(found)
    lengths = np.diff(np.append(starts, n)).astype(np.float64)
    return starts, lengths


def _codes(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Confusion-matrix bin of each pixel: ``gt * C + pred``, or ``C * C + pred`` for ignored pixels."""
    sentinel = num_classes * num_classes
    low, high = (int(v) for v in torch.aminmax(target))
    # one table maps every gt value to its confusion row offset, or to a sentinel past the matrix if ignored
    values = torch.arange(low, high + 1, device=target.device)
    valid = (values >= 0) & (values < num_classes)
    if ignore_index is not None:
        valid &= values != ignore_index
    table = torch.where(valid, values * num_classes, sentinel).int()
    p_low, p_high = (int(v) for v in torch.aminmax(preds))
    if p_low < 0 or p_high >= num_classes:
        scored = table.index_select(0, (target - low).int()) < sentinel
        if (((preds < 0) | (preds >= num_classes)) & scored).any():  # only scored pixels must be in range
            raise ValueError(f"predicted classes must lie in [0, {num_classes})")
        preds = preds.clamp(0, num_classes - 1)
    index = target.int() if low == 0 else (target - low).int()
    return table.index_select(0, index) + preds.int()


def _mean_iou_compute(confmat: Tensor) -> dict[str, Tensor]:
    """mIoU and companions from a ``[C, C]`` confusion matrix (rows = ground truth).

    Returns:
        ``miou`` (mean IoU over classes with gt pixels), ``iou_per_class`` ``[C]`` (NaN for classes absent from
        the gt), ``macc`` (mean class accuracy over the same classes), ``pacc`` (pixel accuracy), ``fwiou``
        (frequency-weighted IoU); NaN when the matrix is empty.
    """
    confmat = confmat.double()
    tp = confmat.diagonal()
    pos_gt, pos_pred = confmat.sum(1), confmat.sum(0)
    valid = pos_gt > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=confmat.device)
    iou = torch.where(valid, tp / (pos_gt + pos_pred - tp).clamp(min=1), nan)
    acc = torch.where(valid, tp / pos_gt.clamp(min=1), nan)
    total = pos_gt.sum()
    n = valid.sum()
    return {
        "miou": iou[valid].sum() / n if n else nan,
        "iou_per_class": iou,
        "macc": acc[valid].sum() / n if n else nan,
        "pacc": tp.sum() / total if total else nan,
        "fwiou": (iou[valid] * pos_gt[valid]).sum() / total if total else nan,
    }


def mean_iou(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> dict[str, Tensor]:
    """mIoU of one batch treated as the whole dataset (see :func:`_mean_iou_compute` for the outputs)."""
    return _mean_iou_compute(_mean_iou_update(preds, target, num_classes, ignore_index))
