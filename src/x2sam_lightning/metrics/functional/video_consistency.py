"""VSPW video consistency mVC_k (k = 8, 16).

Reproduces VSPW's ``VC_perclip.py`` (github.com/VSPW-dataset/VSPW_code; ``get_common`` in ``utils.py``):
for each video with more than ``k`` frames and each window start ``i in range(T - k)`` (so the last possible
window is not used, as in the reference), the pixels whose ground-truth label is the same in all ``k`` frames
``i .. i+k-1`` are taken, and the window's score is the fraction of them whose *prediction* is also the same
in all ``k`` frames (the prediction need not equal the ground truth). ``mVC_k`` is the mean of the window
scores over all windows of all videos, windows without a consistent ground-truth pixel skipped (NaN in the
reference's ``nanmean``). Ignore labels (255) are ordinary labels here, as in the reference.

Instead of ``k - 1`` frame comparisons per window, each pair of consecutive frames is compared once. On CPU
the "label changed" maps are bit-packed (64 pixels per word) and a window of ``k`` frames is broken at a
pixel when any of its ``k - 1`` change maps is set: an OR over a sliding range of the packed maps (two
lookups in a table of ORs over power-of-two ranges), then a population count. On an accelerator, one
backward pass keeps for every pixel the length of the run of equal labels starting at each frame (capped at
the largest ``k``); a window is consistent at a pixel when that run reaches ``k``. Either way the cost no
longer grows with ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

VSPW_WINDOWS = (8, 16)
# label bytes compared and packed at once (bounds the unpacked work arrays)
_CHUNK_BYTES = 16 * 2**20


def _video_consistency_update(
    preds: Tensor, target: Tensor, window_sizes: Sequence[int] = VSPW_WINDOWS
) -> tuple[Tensor, Tensor]:
    """Window scores of one video.

    Args:
        preds: ``[T, H, W]`` integer predicted class maps.
        target: ``[T, H, W]`` integer ground-truth class maps.
        window_sizes: the ``K`` window lengths ``k``.

    Returns:
        ``score_sum`` ``[K]`` float64 (sum of window scores) and ``num_windows`` ``[K]`` int64 (windows with at
        least one consistent ground-truth pixel).
    """
    if preds.shape != target.shape or preds.ndim != 3:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [T, H, W]"
        )
    ks = [int(k) for k in window_sizes]
    if preds.device.type == "cpu" and hasattr(np, "bitwise_count"):
        return _packed_windows(preds.numpy(), target.numpy(), ks)
    return _run_length_windows(preds, target, ks)


def _packed_changes(labels: np.ndarray) -> np.ndarray:
    """``[T - 1, ceil(H * W / 64)]`` uint64: bit set where a pixel's label differs from the next frame's."""
    t_len = labels.shape[0]
    flat = labels.reshape(t_len, -1)
    words = -(-flat.shape[1] // 64)
    out = np.zeros((max(t_len - 1, 0), words * 8), dtype=np.uint8)
    integer = np.issubdtype(flat.dtype, np.integer) or flat.dtype == np.bool_
    chunk = max(1, _CHUNK_BYTES // max(flat[0].nbytes, 1))
    for start in range(0, t_len - 1, chunk):
        stop = min(start + chunk, t_len - 1)
        a, b = flat[start:stop], flat[start + 1 : stop + 1]
        changed = np.bitwise_xor(a, b) if integer else a != b  # packbits sets a bit for any non-zero
        out[start:stop, : -(-flat.shape[1] // 8)] = np.packbits(changed, axis=1)
    return out.view(np.uint64)


def _window_or(changes: np.ndarray, length: int) -> np.ndarray:
    """OR of ``length`` consecutive rows of ``changes`` for every start: ``[T - length + 1, words]``."""
    if length == 0:  # one-frame windows contain no change
        return np.zeros((len(changes) + 1, changes.shape[1]), dtype=changes.dtype)
    table, span = changes, 1  # table[i] = OR of rows i .. i + span - 1
    while 2 * span <= length:
        table = table[:-span] | table[span:]
        span *= 2
    return table[: len(table) - (length - span)] | table[length - span :]


def _packed_windows(preds: np.ndarray, target: np.ndarray, ks: list[int]) -> tuple[Tensor, Tensor]:
    """``_video_consistency_update`` on CPU through bit-packed change maps."""
    num_frames, pixels = target.shape[0], target[0].size
    score_sum = torch.zeros(len(ks), dtype=torch.float64)
    num_windows = torch.zeros(len(ks), dtype=torch.long)
    if num_frames <= min(ks):
        return score_sum, num_windows
    gt_changes = _packed_changes(target)
    any_changes = gt_changes | _packed_changes(preds)
    for i, k in enumerate(ks):
        starts = num_frames - k  # window starts in range(T - k), as the reference
        if starts <= 0:
            continue
        # a window of k frames spans k - 1 changes; windows starting at 0 .. starts - 1
        gt_broken = np.bitwise_count(_window_or(gt_changes, k - 1)[:starts]).sum(axis=1, dtype=np.int64)
        any_broken = np.bitwise_count(_window_or(any_changes, k - 1)[:starts]).sum(axis=1, dtype=np.int64)
        den, num = pixels - gt_broken, pixels - any_broken
        counted = den > 0
        score_sum[i] = float(np.sum(num[counted] / den[counted]))
        num_windows[i] = int(counted.sum())
    return score_sum, num_windows


def _run_length_windows(preds: Tensor, target: Tensor, ks: list[int]) -> tuple[Tensor, Tensor]:
    """``_video_consistency_update`` through per-pixel run lengths (any device)."""
    num_frames, device = preds.shape[0], preds.device
    score_sum = torch.zeros(len(ks), dtype=torch.float64)
    num_windows = torch.zeros(len(ks), dtype=torch.long)
    cap = max(ks)
    dtype = torch.uint8 if cap < 255 else torch.int32
    run_gt = torch.ones(preds.shape[1:], dtype=dtype, device=device)
    run_pred = torch.ones_like(run_gt)
    needs_cap = num_frames > cap  # runs never exceed T; cap only when they could overflow
    # comparing with a same-shape tensor takes the vectorised kernel, a scalar operand a slow path
    thresholds = [torch.full_like(run_gt, k) for k in ks]
    for t in range(num_frames - 2, -1, -1):
        # run length of equal labels from frame t on: run[t] = run[t + 1] + 1 if equal else 1
        run_gt = (run_gt * (target[t] == target[t + 1])).add_(1)
        run_pred = (run_pred * (preds[t] == preds[t + 1])).add_(1)
        if needs_cap:
            run_gt.clamp_(max=cap)
            run_pred.clamp_(max=cap)
        for i, k in enumerate(ks):
            if t >= num_frames - k:  # window starts i in range(T - k) only, as the reference
                continue
            gt_ok = run_gt >= thresholds[i]
            den = int(torch.count_nonzero(gt_ok))
            if den:
                both = int(torch.count_nonzero(gt_ok & (run_pred >= thresholds[i])))
                score_sum[i] += both / den
                num_windows[i] += 1
    return score_sum.to(device), num_windows.to(device)


def _video_consistency_compute(
    score_sum: Tensor, num_windows: Tensor, window_sizes: Sequence[int] = VSPW_WINDOWS
) -> dict[str, Tensor]:
    """``mvc{k}`` for each window size (NaN when no window counted)."""
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=score_sum.device)
    return {
        f"mvc{k}": score_sum[i] / num_windows[i] if num_windows[i] > 0 else nan
        for i, k in enumerate(window_sizes)
    }


def video_consistency(
    videos: Sequence[tuple[Tensor, Tensor]], window_sizes: Sequence[int] = VSPW_WINDOWS
) -> dict[str, Tensor]:
    """mVC of a set of videos, each ``(preds [T, H, W], target [T, H, W])``."""
    score_sum = torch.zeros(len(window_sizes), dtype=torch.float64)
    num_windows = torch.zeros(len(window_sizes), dtype=torch.long)
    for preds, target in videos:
        s, n = _video_consistency_update(preds, target, window_sizes)
        score_sum, num_windows = score_sum + s.cpu(), num_windows + n.cpu()
    return _video_consistency_compute(score_sum, num_windows, window_sizes)
