"""Exact pixel counts of boolean masks on CPU: areas and pairwise intersections, read at memory speed.

torch's bool reductions are slow on CPU, and RLE-encoding masks (what the COCO-style scorers need) reads
them about ten times slower than memory allows. Here the masks are read once: bit-packed (64 pixels per
word), after which areas are population counts and an intersection is an AND over the words a ground
truth occupies. Without numpy's ``bitwise_count`` (numpy < 2), 0/1 bytes are summed as int64 words and
intersections counted inside the ground truth's bounding box.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["box_intersections", "count_true", "frame_areas", "mask_box", "overlap_counts"]


def count_true(mask: Tensor) -> Tensor:
    """Number of true elements per leading index of ``(N, ...)`` bool, as int64 ``(N,)``.

    Contiguous rows of a multiple of 8 bytes are read as int64 words holding eight 0/1 bytes: summing 255
    words at a time cannot carry between bytes, so the sums' bytes are the counts per lane (the remainder
    goes through a multiply that adds the eight bytes into the top one). Other shapes use numpy's
    ``count_nonzero``.
    """
    if mask.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    flat = mask.reshape(mask.shape[0], -1)
    rows, length = flat.shape
    if length % 8 or not flat.is_contiguous():
        return torch.from_numpy(np.count_nonzero(flat.numpy(), axis=1).astype(np.int64).reshape(rows))
    words = flat.view(torch.uint8).view(torch.int64)
    full = words.shape[1] // 255 * 255
    lanes = words[:, :full].reshape(rows, -1, 255).sum(dim=2)
    counts = lanes.view(torch.uint8).reshape(rows, -1).sum(dim=1, dtype=torch.int64)
    rest = words[:, full:]
    return counts + ((rest * 0x0101010101010101) >> 56).sum(dim=1)


def frame_areas(masks: Tensor) -> Tensor:
    """Per-frame areas ``(N, T)`` int64 of ``(N, T, H, W)`` bool tracks."""
    n, t_len = masks.shape[:2]
    if n * t_len == 0:
        return torch.zeros(n, t_len, dtype=torch.int64)
    return count_true(masks.contiguous().reshape(n * t_len, -1)).view(n, t_len)


def mask_box(track: Tensor, multiple: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, y1, x0, x1)`` (end-exclusive) of a ``(T, H, W)`` bool track over all frames, or
    None if empty; widened to a multiple of ``multiple`` columns where the frame allows, so that crops count
    as int64 words."""
    occupied = track.view(torch.uint8).amax(dim=0) if track.dim() == 3 else track.view(torch.uint8)
    rows = occupied.amax(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    cols = occupied.amax(dim=0).nonzero()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    width = occupied.shape[-1]
    wide = min(x1 - x0 + (-(x1 - x0)) % multiple, width)
    x0 = min(x0, width - wide)
    return y0, y1, x0, x0 + wide


def box_intersections(pred: Tensor, target: Tensor, pairs: Tensor | None = None) -> Tensor:
    """Per-frame intersections of predicted and ground-truth tracks (or images: ``T = 1``).

    Args:
        pred: ``(D, T, H, W)`` bool, contiguous.
        target: ``(G, T, H, W)`` bool, contiguous.
        pairs: optional ``(D, G)`` bool: only these pairs are counted (the others stay 0), e.g. the pairs
            of one category.

    Returns:
        ``(D, G, T)`` int64.
    """
    d, g, t_len = pred.shape[0], target.shape[0], target.shape[1]
    inter = torch.zeros(d, g, t_len, dtype=torch.int64)
    if d == 0 or g == 0:
        return inter
    for j in range(g):
        rows = None if pairs is None or bool(pairs[:, j].all()) else pairs[:, j].nonzero().flatten()
        if rows is not None and rows.numel() == 0:
            continue
        box = mask_box(target[j])  # the intersection lies inside the ground truth's box
        if box is None:
            continue
        y0, y1, x0, x1 = box
        crop = pred[:, :, y0:y1, x0:x1]
        if rows is not None:
            crop = crop.index_select(0, rows)
        both = crop & target[j, None, :, y0:y1, x0:x1]
        counts = count_true(both.view(-1, (y1 - y0) * (x1 - x0))).view(-1, t_len)
        if rows is None:
            inter[:, j] = counts
        else:
            inter[rows, j] = counts
    return inter


def overlap_counts(
    pred: Tensor, target: Tensor, pairs: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame intersections and areas of predicted and ground-truth tracks (or images: ``T = 1``).

    Args:
        pred: ``(D, T, H, W)`` bool (CPU).
        target: ``(G, T, H, W)`` bool (CPU).
        pairs: optional ``(D, G)`` bool: only these pairs are intersected (the others stay 0), e.g. the pairs
            of one category.

    Returns:
        ``(intersections (D, G, T), pred_areas (D, T), target_areas (G, T))``, int64.
    """
    if not hasattr(np, "bitwise_count"):
        pred, target = pred.contiguous(), target.contiguous()
        return box_intersections(pred, target, pairs), frame_areas(pred), frame_areas(target)
    d, g, t_len = pred.shape[0], target.shape[0], target.shape[1]
    pp, gp = _pack(pred), _pack(target)  # (N, T, H, words per row)
    pred_areas = torch.from_numpy(np.bitwise_count(pp).sum(axis=(2, 3), dtype=np.int64))
    target_areas = torch.from_numpy(np.bitwise_count(gp).sum(axis=(2, 3), dtype=np.int64))
    inter = np.zeros((d, g, t_len), dtype=np.int64)
    for j in range(g):
        rows = np.arange(d) if pairs is None else np.flatnonzero(pairs[:, j].numpy())
        # the intersection lies in the ground truth's box over all frames (rows, and words of the rows)
        ys = np.flatnonzero(np.bitwise_or.reduce(gp[j], axis=(0, 2)))
        if rows.size == 0 or ys.size == 0:
            continue
        xs = np.flatnonzero(np.bitwise_or.reduce(gp[j], axis=(0, 1)))
        y, x = slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)
        crop = pp[:, :, y, x] if rows.size == d else pp[:, :, y, x][rows]
        both = np.bitwise_and(crop, gp[j, :, y, x][None])
        inter[rows, j] = np.bitwise_count(both).sum(axis=(2, 3), dtype=np.int64)
    return torch.from_numpy(inter), pred_areas, target_areas


def _pack(masks: Tensor) -> np.ndarray:
    """``(N, T, H, W)`` bool -> ``(N, T, H, ceil(W / 64))`` uint64, each row zero padded to whole words."""
    n, t_len, h, w = masks.shape
    words = -(-w // 64)
    if masks.numel() == 0:
        return np.zeros((n, t_len, h, words), dtype=np.uint64)
    flat = masks.reshape(n * t_len * h, w).numpy()
    if w % 64 == 0:
        packed = np.ascontiguousarray(np.packbits(flat, axis=1))
    else:
        packed = np.zeros((n * t_len * h, words * 8), dtype=np.uint8)
        packed[:, : -(-w // 8)] = np.packbits(flat, axis=1)
    return packed.view(np.uint64).reshape(n, t_len, h, words)
