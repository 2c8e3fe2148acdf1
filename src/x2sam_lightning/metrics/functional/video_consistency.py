"""VSPW video consistency mVC_k (k = 8, 16).

Reproduces VSPW's ``VC_perclip.py`` (github.com/VSPW-dataset/VSPW_code; ``get_common`` in ``utils.py``):
for each video with more than ``k`` frames and each window start ``i in range(T - k)`` (so the last possible
window is not used, as in the reference), the pixels whose ground-truth label is the same in all ``k`` frames
``i .. i+k-1`` are taken, and the window's score is the fraction of them whose *prediction* is also the same
in all ``k`` frames (the prediction need not equal the ground truth). ``mVC_k`` is the mean of the window
scores over all windows of all videos, windows without a consistent ground-truth pixel skipped (NaN in the
reference's ``nanmean``). Ignore labels (255) are ordinary labels here, as in the reference.

Instead of ``k - 1`` frame comparisons per window, one backward pass keeps for every pixel the length of the
run of equal labels starting at each frame (capped at the largest ``k``); a window is consistent at a pixel
when that run reaches ``k``. The cost no longer grows with ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

VSPW_WINDOWS = (8, 16)


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
    num_frames, device = preds.shape[0], preds.device
    ks = [int(k) for k in window_sizes]
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
