"""Region similarity J and boundary F-measure, as the DAVIS-2017 evaluation computes them.

Reference: ``davisvideochallenge/davis2017-evaluation``, ``davis2017/metrics.py`` (``db_eval_iou``,
``f_measure``, ``_seg2bmap``) and ``davis2017/utils.py`` (``db_statistics``); the referring-VOS scorers
(MeViS ``tools/eval_mevis.py``, ReVOS, Ref-DAVIS) call the same two functions on every frame.

The official F dilates both boundary maps with a disk of radius ``ceil(0.008 * diagonal)`` (OpenCV) and
counts the boundary pixels of one map that fall inside the dilation of the other, one frame at a time. Here
the same is done exactly on bit-packed rows (64 pixels per word): the boundary map, the dilation (the disk
is a stack of rows, so it is an OR of row-shifted horizontal dilations, each a few word shifts) and the
counts (population counts) all work on words, for a chunk of frames at once, on the bounding box of both
masks over the chunk (plus one pixel, which is where ``_seg2bmap`` can still put boundary).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "boundary_radius",
    "davis_jf",
    "davis_statistics",
    "masks_from_label_map",
    "referring_vos_jf",
    "region_boundary_per_frame",
    "seg2bmap",
]


def masks_from_label_map(label_map: Tensor, num_objects: int) -> Tensor:
    """Split DAVIS-style index maps (0 = background, k = object k) into per-object binary masks.

    Args:
        label_map: ``(T, H, W)`` integer object ids.
        num_objects: number of objects ``N`` (ids above it are ignored; the official reader stops with an
            error on them).

    Returns:
        ``(N, T, H, W)`` bool.
    """
    ids = torch.arange(1, num_objects + 1, device=label_map.device)
    return label_map[None] == ids[:, None, None, None]


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError("an absolute bound_th must be a whole number of pixels")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


@functools.lru_cache(maxsize=16)
def _disk_half_widths(radius: int) -> Tensor:
    """Half-width of each row of ``skimage.morphology.disk(radius)`` (``x**2 + y**2 <= r**2``)."""
    dy = np.arange(-radius, radius + 1)
    half = np.floor(np.sqrt(radius**2 - dy**2)).astype(np.int64)
    # guard against sqrt rounding: the largest x with x^2 + dy^2 <= r^2
    half = np.where((half + 1) ** 2 + dy**2 <= radius**2, half + 1, half)
    half = np.where(half**2 + dy**2 > radius**2, half - 1, half)
    return torch.from_numpy(half)


def seg2bmap(seg: Tensor) -> Tensor:
    """One-pixel-wide boundary map of binary masks, exactly as DAVIS ``_seg2bmap``.

    A pixel is boundary if it differs from its right, lower or lower-right neighbour; the last row compares
    only with the right neighbour, the last column only with the lower one, the corner is never boundary.

    Args:
        seg: ``(..., H, W)`` bool.

    Returns:
        ``(..., H, W)`` bool.
    """
    b = torch.zeros_like(seg)
    b[..., :-1, :-1] = (
        (seg[..., :-1, :-1] ^ seg[..., :-1, 1:])
        | (seg[..., :-1, :-1] ^ seg[..., 1:, :-1])
        | (seg[..., :-1, :-1] ^ seg[..., 1:, 1:])
    )
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    return b


def _pack_rows(masks: np.ndarray, margin: int) -> np.ndarray:
    """``(T, h, w)`` bool -> ``(T, h, margin + ceil(w / 64) + margin)`` words: pixel ``x`` of a row at bit
    ``x % 64`` of word ``margin + x // 64`` (little-endian), ``margin`` zero words on each side."""
    t_len, h, w = masks.shape
    words = 2 * margin + -(-w // 64)
    out = np.zeros((t_len, h, words * 8), dtype=np.uint8)
    out[:, :, margin * 8 : margin * 8 + -(-w // 8)] = np.packbits(masks, axis=-1, bitorder="little")
    return out.view("<u8")


def _shift(words: np.ndarray, k: int) -> np.ndarray:
    """Rows moved along x by ``k`` pixels: ``out[x] = in[x + k]``.

    The contiguous array is shifted as one bit string (one pass instead of one per row): bits that leave a
    row enter its neighbour's margin words, which hold no pixels as long as every row's content stays
    within ``64 * margin`` pixels of its own pixels (the callers' shifts add up to less).
    """
    if k == 0:
        return words
    flat = words.reshape(-1)
    n = flat.size
    q, b = divmod(abs(k), 64)
    out = np.zeros_like(flat)
    if q >= n:
        return out.reshape(words.shape)
    if k > 0:  # towards lower x: the next word's low bits come in at the top
        np.right_shift(flat[q:], b, out=out[: n - q])
        if b:
            out[: n - q - 1] |= flat[q + 1 :] << (64 - b)
    else:
        np.left_shift(flat[: n - q], b, out=out[q:])
        if b:
            out[q + 1 :] |= flat[: n - q - 1] >> (64 - b)
    return out.reshape(words.shape)


def _packed_boundary(seg: np.ndarray, first: int, width: int) -> np.ndarray:
    """``_seg2bmap`` of packed ``(T, h, words)`` masks whose rows hold pixels ``first .. first + width - 1``
    (zeros elsewhere)."""
    right = _shift(seg, 1)  # right[x] = seg[x + 1]
    inner = _column_mask(first, first + width - 1, seg.shape[-1])  # pixels that have a right neighbour
    bmap = (seg ^ right) & inner  # last row: right neighbour only
    # other rows: also the lower and lower-right neighbours (the last column only the lower one)
    bmap[:, :-1] |= (seg[:, :-1] ^ seg[:, 1:]) | ((seg[:, :-1] ^ right[:, 1:]) & inner)
    return bmap


@functools.lru_cache(maxsize=64)
def _column_mask(start: int, stop: int, words: int) -> np.ndarray:
    """``(words,)`` with the bits of pixels ``start .. stop - 1`` set."""
    bits = np.zeros(words * 64, dtype=bool)
    bits[start:stop] = True
    return np.packbits(bits, bitorder="little").view("<u8")


def _dilate(bmap: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Dilation of packed ``(T, h, words)`` maps by the disk whose row ``r + dy`` spans ``+-half[r + dy]``.

    A horizontal dilation by ``a`` is a one-sided OR over ``2a + 1`` pixels (built by doubling) moved back by
    ``a``; the disk is the OR of those, each moved by its row offset ``dy``. The rows need margins (see
    :func:`_pack_rows`) of at least ``2 * max(half) + 1`` pixels.
    """
    radius = (len(half) - 1) // 2
    one_sided = {0: bmap}  # span -> OR of pixels x .. x + span
    span = 0
    while 2 * span + 1 <= 2 * int(half.max()):
        one_sided[2 * span + 1] = one_sided[span] | _shift(one_sided[span], span + 1)
        span = 2 * span + 1
    spans = sorted(one_sided)
    rows = {}
    for a in sorted({int(x) for x in half}):
        base = max(s for s in spans if s <= 2 * a)
        wide = one_sided[base] if base == 2 * a else one_sided[base] | _shift(one_sided[base], 2 * a - base)
        rows[a] = _shift(wide, -a)
    h = bmap.shape[1]
    out = np.zeros_like(bmap)
    for dy in range(-radius, radius + 1):
        if abs(dy) >= h:
            continue
        src = rows[int(half[dy + radius])]
        if dy >= 0:  # out[y] |= src[y + dy]
            out[:, : h - dy] |= src[:, dy:]
        else:
            out[:, -dy:] |= src[:, : h + dy]
    return out


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per frame of ``(T, h, words)``, int64 ``(T,)``."""
    return np.bitwise_count(words).reshape(words.shape[0], -1).sum(axis=1, dtype=np.int64)


def _bbox(preds: Tensor, target: Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box (inclusive) of all frames of both ``(T, H, W)`` bool stacks, or None if empty."""
    t_len, height, width = preds.shape
    if (height * width) % 8 == 0 and t_len < 128:
        # sum the frames as int64 words of eight 0/1 bytes: each byte ends <= 2T < 256, so never carries
        words = preds.view(torch.uint8).view(t_len, -1).view(torch.int64).sum(0)
        words += target.view(torch.uint8).view(t_len, -1).view(torch.int64).sum(0)
        occupied = words.view(torch.uint8).view(height, width)
    else:
        occupied = preds.view(torch.uint8).amax(dim=0) | target.view(torch.uint8).amax(dim=0)
    rows = occupied.amax(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    cols = occupied.amax(dim=0).nonzero()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def region_boundary_per_frame(
    preds: Tensor, target: Tensor, bound_th: float = 0.008, chunk: int = 16
) -> tuple[Tensor, Tensor]:
    """Per-frame J (IoU) and boundary F of one object track, as DAVIS ``db_eval_iou`` / ``f_measure``.

    Empty prediction and empty ground truth give J = 1 and F = 1, as the official code does.

    Args:
        preds: ``(T, H, W)`` predicted masks (bool, or anything where non-zero is foreground).
        target: ``(T, H, W)`` ground-truth masks.
        bound_th: boundary tolerance, a fraction of the image diagonal (< 1) or pixels (>= 1).
        chunk: frames processed together on one bounding box (moving objects: short chunks, small boxes).

    Returns:
        ``(j, f)``: two ``(T,)`` float64 tensors.
    """
    if preds.shape != target.shape or preds.dim() != 3:
        raise ValueError(
            f"expected two (T, H, W) tensors, got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    preds, target = preds.cpu().bool(), target.cpu().bool()
    radius = boundary_radius(target.shape[1], target.shape[2], bound_th)
    parts = [
        _region_boundary_chunk(preds[i : i + chunk].contiguous(), target[i : i + chunk].contiguous(), radius)
        for i in range(0, target.shape[0], chunk)
    ]
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty.clone()
    return torch.cat([j for j, _ in parts]), torch.cat([f for _, f in parts])


def _region_boundary_chunk(preds: Tensor, target: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """``region_boundary_per_frame`` on contiguous ``(T, H, W)`` bool frames cropped to one box."""
    t_len, height, width = target.shape
    box = _bbox(preds, target)
    if box is None:
        ones = torch.ones(t_len, dtype=torch.float64)
        return ones, ones.clone()
    # one pixel above/left of a mask can be boundary; the zero row/column kept below/right (or the image
    # border, where the official last-row/column rule applies anyway) keeps _seg2bmap exact on the crop
    y0, y1, x0, x1 = max(box[0] - 1, 0), min(box[1] + 2, height), max(box[2] - 1, 0), min(box[3] + 2, width)
    w = x1 - x0
    margin = -(-(2 * radius + 1) // 64)  # zero words around each row: room for the dilation's shifts
    pp = _pack_rows(preds.numpy()[:, y0:y1, x0:x1], margin)
    gp = _pack_rows(target.numpy()[:, y0:y1, x0:x1], margin)

    inter = torch.from_numpy(_popcount(pp & gp)).double()
    union = torch.from_numpy(_popcount(pp | gp)).double()
    j = torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))

    bp, bg = _packed_boundary(pp, 64 * margin, w), _packed_boundary(gp, 64 * margin, w)
    n_fg, n_gt = torch.from_numpy(_popcount(bp)), torch.from_numpy(_popcount(bg))
    half = _disk_half_widths(radius).numpy()
    fg_match = torch.from_numpy(_popcount(bp & _dilate(bg, half))).double()
    gt_match = torch.from_numpy(_popcount(bg & _dilate(bp, half))).double()
    precision = torch.where(n_fg == 0, 1.0, fg_match / n_fg.clamp(min=1).double())
    recall = torch.where(n_gt == 0, 1.0, gt_match / n_gt.clamp(min=1).double())
    # official branches: no predicted boundary -> P = 1, R = 0; no gt boundary -> P = 0, R = 1
    precision = torch.where((n_fg > 0) & (n_gt == 0), 0.0, precision)
    recall = torch.where((n_fg == 0) & (n_gt > 0), 0.0, recall)
    denom = precision + recall
    f = torch.where(denom == 0, 0.0, 2 * precision * recall / denom.clamp(min=1e-300))
    return j, f


def davis_statistics(per_frame: Tensor) -> Tensor:
    """Mean, recall (fraction > 0.5) and decay (first minus last of 4 bins), as DAVIS ``db_statistics``.

    The bin edges are cast to uint8 by the official code, so they wrap for tracks longer than 256 frames;
    this is reproduced to stay equal to it.

    Args:
        per_frame: ``(T,)`` values of one object.

    Returns:
        ``(3,)`` float64: mean, recall, decay.
    """
    n = per_frame.numel()
    if n == 0:
        raise ValueError("DAVIS statistics need at least one frame")
    v = per_frame.double()
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.uint8)
    first = v[int(ids[0]) : int(ids[1]) + 1]
    last = v[int(ids[3]) : int(ids[4]) + 1]
    nan = torch.tensor(math.nan, dtype=torch.float64)
    decay = (first.mean() if first.numel() else nan) - (last.mean() if last.numel() else nan)
    return torch.stack([v.mean(), (v > 0.5).double().mean(), decay])


#: Keys of the DAVIS statistics, in the order of the per-object rows below.
DAVIS_KEYS: tuple[str, ...] = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _as_tracks(preds: Tensor, target: Tensor, same_count: bool = True) -> tuple[Tensor, Tensor]:
    if preds.dim() == 3:
        preds = preds[None]
    if target.dim() == 3:
        target = target[None]
    if preds.dim() != 4 or preds.shape[1:] != target.shape[1:] or (same_count and len(preds) != len(target)):
        raise ValueError(
            f"expected (N, T, H, W) preds and target of one shape, got {tuple(preds.shape)}, {tuple(target.shape)}"
        )
    return preds, target


def _davis_jf_update(
    preds: Tensor,
    target: Tensor,
    unseen: Tensor | None = None,
    bound_th: float = 0.008,
    skip_first_last: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sufficient statistics of the DAVIS-2017 semi-supervised protocol for the objects of one video.

    As ``davis2017/evaluation.py::DAVISEvaluation.evaluate``: per object, J and F on every frame but the
    first and the last (the first one is given as the prompt), then mean / recall / decay per object.

    Args:
        preds: ``(N', T, H, W)`` predicted masks of the first ``N' <= N`` objects (``(T, H, W)`` for one);
            missing objects are zero-padded as the official code does.
        target: ``(N, T, H, W)`` ground truth, same shape.
        unseen: ``(N,)`` bool, True for objects of categories unseen in training (YouTube-VOS split).
        bound_th: boundary tolerance (fraction of the diagonal, or pixels if >= 1).
        skip_first_last: drop the first and last frames as the official semi-supervised protocol does;
            pass False if they were already dropped.

    Returns:
        ``(sums, counts)``: ``(2, 6)`` float64 sums of the per-object statistics ``DAVIS_KEYS`` for the
        seen (row 0) and unseen (row 1) objects, and ``(2,)`` float64 object counts.
    """
    preds, target = _as_tracks(preds, target, same_count=False)
    if preds.shape[0] > target.shape[0]:
        raise ValueError("more predicted objects than annotated ones (the official scorer stops here too)")
    if preds.shape[0] < target.shape[0]:
        # objects without a prediction are zero-padded, as DAVISEvaluation._evaluate_semisupervised does
        missing = preds.new_zeros(target.shape[0] - preds.shape[0], *preds.shape[1:])
        preds = torch.cat([preds, missing])
    if skip_first_last:
        preds, target = preds[:, 1:-1], target[:, 1:-1]
    if unseen is None:
        unseen = torch.zeros(preds.shape[0], dtype=torch.bool)
    split = unseen.cpu().long().reshape(-1)
    sums = torch.zeros(2, len(DAVIS_KEYS), dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    for obj in range(preds.shape[0]):
        j, f = region_boundary_per_frame(preds[obj], target[obj], bound_th)
        sums[split[obj]] += torch.cat([davis_statistics(j), davis_statistics(f)])
        counts[split[obj]] += 1
    return sums, counts


def _davis_jf_compute(sums: Tensor, counts: Tensor) -> dict[str, Tensor]:
    """DAVIS table from the summed statistics: ``J&F-Mean`` and ``DAVIS_KEYS`` over all objects.

    When unseen objects were given, adds the YouTube-VOS split (``J-Mean-seen``, ``F-Mean-unseen``, ...)
    and ``Overall`` = mean of the four seen/unseen J and F means, as the YouTube-VOS server reports.
    """
    total = sums.sum(0) / counts.sum()
    out = {"J&F-Mean": (total[0] + total[3]) / 2}
    out.update({key: total[i] for i, key in enumerate(DAVIS_KEYS)})
    if counts[1] > 0:
        split = sums / counts[:, None]
        for row, name in enumerate(("seen", "unseen")):
            out.update({f"{key}-{name}": split[row, i] for i, key in enumerate(DAVIS_KEYS)})
        out["Overall"] = (split[0, 0] + split[0, 3] + split[1, 0] + split[1, 3]) / 4
    return out


def _referring_jf_update(preds: Tensor, target: Tensor, bound_th: float = 0.008) -> Tensor:
    """Sufficient statistics of the referring-VOS protocol for a batch of expressions.

    As MeViS ``tools/eval_mevis.py::eval_queue`` (also used for Ref-DAVIS17, ReVOS): per expression,
    ``db_eval_iou(gt, pred).mean()`` and ``db_eval_boundary(gt, pred).mean()`` over all frames.

    Args:
        preds: ``(E, T, H, W)`` binary masks, one track per expression (``(T, H, W)`` for one).
        target: ``(E, T, H, W)`` ground truth (union of the referred objects), same shape.
        bound_th: boundary tolerance.

    Returns:
        ``(3,)`` float64: sum of per-expression J, sum of per-expression F, number of expressions.
    """
    preds, target = _as_tracks(preds, target)
    out = torch.zeros(3, dtype=torch.float64)
    for e in range(preds.shape[0]):
        j, f = region_boundary_per_frame(preds[e], target[e], bound_th)
        out += torch.stack([j.mean(), f.mean(), torch.ones((), dtype=torch.float64)])
    return out


def _referring_jf_compute(stats: Tensor) -> dict[str, Tensor]:
    """``J``, ``F`` (means over expressions) and ``J&F`` = their mean."""
    j, f = stats[0] / stats[2], stats[1] / stats[2]
    return {"J&F": (j + f) / 2, "J": j, "F": f}


def davis_jf(
    preds: Tensor, target: Tensor, unseen: Tensor | None = None, bound_th: float = 0.008
) -> dict[str, Tensor]:
    """Functional DAVIS-2017 semi-supervised J / F / J&F of one video (see ``DAVISJandF``)."""
    return _davis_jf_compute(*_davis_jf_update(preds, target, unseen, bound_th))


def referring_vos_jf(preds: Tensor, target: Tensor, bound_th: float = 0.008) -> dict[str, Tensor]:
    """Functional referring-VOS J / F / J&F of a batch of expressions (see ``ReferringVOSJandF``)."""
    return _referring_jf_compute(_referring_jf_update(preds, target, bound_th))
