"""Grounded conversation generation (GCG) metrics, as GLaMM's ``eval/gcg/evaluate.py`` computes them.

Scorer: ``mbzuai-oryx/groundingLMM``, ``eval/gcg/evaluate.py`` (``main``, ``compute_miou``,
``find_best_matches``, ``evaluate_recall_with_mapping``). Per image:

* **mIoU**: the IoU matrix of predicted x ground-truth masks is paired greedily (largest IoU first, row and
  column removed) while its maximum is > 0; the image scores the mean of the paired IoUs (0 when none).
  The dataset mIoU is the mean over images. Unpaired masks do not lower it.
* **Recall**: ground-truth x predicted pairs are taken greedily by IoU; the loop stops at the first pair
  with IoU < 0.5 or phrase similarity < 0.5. Recall = matched pairs / ground-truth phrases. As in GLaMM,
  the IoU matrix is indexed by masks and the similarity matrix by phrases: an image whose chosen pair
  falls outside the phrase matrix (fewer phrases than masks) scores no match but still counts its
  ground-truth phrases (GLaMM's ``try/except``).
* **AP50**: class-agnostic COCO ``segm`` AP at IoU 0.5 (pycocotools' ``evaluateImg`` / ``accumulate``
  re-implemented: per image the top 100 detections by score are matched greedily, 101-point interpolated
  precision; GLaMM gives every mask score 1.0, so ties are broken by image id and mask order as
  pycocotools does).
* **METEOR / CIDEr** of the captions (pycocoevalcap, after its PTB tokeniser): corpus-level, so computed
  once over the gathered captions.

IoU follows each piece of the scorer: ``0/0`` is NaN in GLaMM's numpy ``compute_iou`` (mIoU, recall) and 0
in pycocotools (AP). Masks are ``(N, H, W)`` images or ``(N, T, H, W)`` video tracks (flattened).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from x2sam_lightning.imports import java_available, require
from x2sam_lightning.metrics.phrase_similarity import PhraseSimilarity

AP_IOU_THRESHOLD = 0.5
AP_MAX_DETS = 100


def mask_intersection_union(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union of two sets of masks.

    Args:
        pred: ``(P, ...)`` masks (non-zero = foreground).
        gt: ``(G, ...)`` masks of the same trailing shape.

    Returns:
        ``(intersection, union)``, float64 ``(P, G)`` pixel counts.
    """
    if pred.shape[1:] != gt.shape[1:] and pred.shape[0] and gt.shape[0]:
        raise ValueError(f"mask sizes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    p = pred.flatten(1) if pred.dtype == torch.bool else pred.flatten(1) != 0
    g = gt.flatten(1) if gt.dtype == torch.bool else gt.flatten(1) != 0
    if p.device.type == "cpu":
        # numpy's count_nonzero on contiguous rows is far faster than torch's boolean reductions on CPU
        pn, gn = p.contiguous().numpy(), g.contiguous().numpy()
        inter_np = np.array(
            [[np.count_nonzero(np.logical_and(a, b)) for b in gn] for a in pn], dtype=np.float64
        )
        inter = torch.from_numpy(inter_np.reshape(len(pn), len(gn)))
        area_p = torch.tensor([np.count_nonzero(a) for a in pn], dtype=torch.float64)
        area_g = torch.tensor([np.count_nonzero(b) for b in gn], dtype=torch.float64)
    else:
        # float32 matmul counts exactly up to 2**24 pixels per mask
        dtype = torch.float32 if p.shape[1] < 2**24 else torch.float64
        inter = (p.to(dtype) @ g.to(dtype).T).double()
        area_p, area_g = p.sum(1, dtype=torch.float64), g.sum(1, dtype=torch.float64)
    return inter, area_p[:, None] + area_g[None, :] - inter


def greedy_pair_miou(iou: np.ndarray) -> float:
    """GLaMM's ``compute_miou`` pairing on a ``(P, G)`` IoU matrix (NaN stops it, as ``np.max`` does)."""
    iou = iou.copy()
    paired = []
    while iou.size > 0 and np.max(iou) > 0:
        r, c = np.unravel_index(np.argmax(iou, axis=None), iou.shape)
        paired.append(iou[r, c])
        iou = np.delete(np.delete(iou, r, axis=0), c, axis=1)
    return float(np.mean(paired)) if paired else 0.0


def greedy_recall_matches(
    iou: np.ndarray, text_sim: np.ndarray, iou_threshold: float = 0.5, text_threshold: float = 0.5
) -> int:
    """GLaMM's ``find_best_matches`` on ``(G, P)`` IoU and phrase-similarity matrices; -1 where GLaMM raises."""
    iou = iou.copy()
    text_sim = text_sim.copy()
    matches = 0
    while iou.size > 0:
        r, c = np.unravel_index(np.argmax(iou), iou.shape)
        if r >= text_sim.shape[0] or c >= text_sim.shape[1]:
            return -1
        if iou[r, c] < iou_threshold or text_sim[r, c] < text_threshold:
            break
        matches += 1
        iou[r, :] = 0
        iou[:, c] = 0
        text_sim[r, :] = 0
        text_sim[:, c] = 0
    return matches


def coco_match(
    iou: np.ndarray, scores: np.ndarray, threshold: float = AP_IOU_THRESHOLD
) -> tuple[np.ndarray, ...]:
    """pycocotools' per-image greedy matching at one IoU threshold (no crowd, all areas).

    Args:
        iou: ``(P, G)`` IoU (0 for an empty union).
        scores: ``(P,)`` detection scores.

    Returns:
        ``(scores, matched)`` of the kept detections (top ``AP_MAX_DETS`` by score, stable order).
    """
    order = np.argsort(-scores, kind="mergesort")[:AP_MAX_DETS]
    iou = iou[order]
    matched = np.zeros(len(order), dtype=bool)
    gt_taken = np.zeros(iou.shape[1], dtype=bool)
    for d in range(len(order)):
        best, m = min(threshold, 1 - 1e-10), -1
        for g in range(iou.shape[1]):
            if gt_taken[g] or iou[d, g] < best:
                continue
            best, m = iou[d, g], g
        if m > -1:
            gt_taken[m] = True
            matched[d] = True
    return scores[order], matched


def coco_average_precision(
    scores: np.ndarray, matched: np.ndarray, image_keys: np.ndarray, det_rank: np.ndarray, num_gt: int
) -> float:
    """pycocotools' ``accumulate`` + ``summarize`` for one class, one IoU threshold, area all, 100 dets.

    Args:
        scores, matched: ``(D,)`` kept detections of all images.
        image_keys: ``(D,)`` image sort key (pycocotools walks images in sorted id order).
        det_rank: ``(D,)`` rank of each detection within its image after the score sort.
        num_gt: ground-truth masks of all images.

    Returns:
        AP in [0, 1], or -1 without ground truth (pycocotools' convention).
    """
    if num_gt == 0:
        return -1.0
    walk = np.lexsort((det_rank, image_keys))  # pycocotools' concatenation order
    scores, matched = scores[walk], matched[walk]
    inds = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(matched[inds], dtype=float)
    fps = np.cumsum(~matched[inds], dtype=float)
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    rc = tps / num_gt
    pr = tps / (fps + tps + np.spacing(1))
    q = np.zeros(len(rec_thrs))
    pr = pr.tolist()
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    idx = np.searchsorted(rc, rec_thrs, side="left")
    for ri, pi in enumerate(idx):
        if pi < len(pr):
            q[ri] = pr[pi]
    return float(np.mean(q))


def _gcg_image_update(
    pred_masks: Tensor,
    target_masks: Tensor,
    pred_phrases: Sequence[str],
    target_phrases: Sequence[str],
    similarity: PhraseSimilarity,
    pred_scores: Tensor | None = None,
    iou_threshold: float = 0.5,
    text_threshold: float = 0.5,
) -> dict[str, np.ndarray | float]:
    """Statistics of one image.

    Args:
        pred_masks: ``(P, H, W)`` or ``(P, T, H, W)`` predicted masks, in phrase order.
        target_masks: ``(G, H, W)`` or ``(G, T, H, W)`` ground-truth masks, in phrase order.
        pred_phrases, target_phrases: the phrases of the masks.
        similarity: phrase similarity for recall.
        pred_scores: ``(P,)`` mask scores for AP (GLaMM: all 1.0, the default).

    Returns:
        ``miou`` (the image's paired mIoU), ``recall_tp``, ``recall_gt``, ``num_gt``, and the AP detections
        ``ap_scores`` / ``ap_matched`` (kept, in score order).
    """
    inter, union = mask_intersection_union(pred_masks, target_masks)
    inter, union = inter.cpu().numpy(), union.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou_glamm = inter / union  # NaN for 0/0, as GLaMM's numpy compute_iou
    iou_coco = np.where(union > 0, iou_glamm, 0.0)

    text_sim = np.asarray(similarity(list(target_phrases), list(pred_phrases)), dtype=np.float64)
    text_sim = text_sim.reshape(len(target_phrases), len(pred_phrases))
    tp = greedy_recall_matches(iou_glamm.T, text_sim, iou_threshold, text_threshold)

    scores = (
        np.ones(pred_masks.shape[0]) if pred_scores is None else pred_scores.detach().cpu().double().numpy()
    )
    ap_scores, ap_matched = coco_match(iou_coco, scores)
    return {
        "miou": greedy_pair_miou(iou_glamm),
        "recall_tp": float(max(tp, 0)),
        "recall_gt": float(len(target_phrases)),
        "num_gt": float(target_masks.shape[0]),
        "ap_scores": ap_scores,
        "ap_matched": ap_matched,
    }


def tokenize_captions(captions: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTB tokeniser (Java) on ``{key: [caption, ...]}``."""
    ptb = require("pycocoevalcap.tokenizer.ptbtokenizer")
    return ptb.PTBTokenizer().tokenize({k: [{"caption": c} for c in caps] for k, caps in captions.items()})


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], meteor: bool = True, cider: bool = True
) -> dict[str, float]:
    """Corpus METEOR and CIDEr (CIDEr-D) of captions, as pycocoevalcap's ``COCOEvalCap`` computes them.

    Args:
        predictions: one caption per image.
        references: the ground-truth captions of each image.

    Returns:
        ``{"meteor": ..., "cider": ...}`` (those asked for).

    Raises:
        RuntimeError: Java is not on PATH (pycocoevalcap's tokeniser and METEOR run Java programs).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted captions for {len(references)} references")
    if not java_available():
        raise RuntimeError(
            "METEOR and CIDEr need Java on PATH (pycocoevalcap's PTB tokeniser and METEOR jar)"
        )
    out: dict[str, float] = {}
    if not predictions:
        return {name: float("nan") for name, on in (("meteor", meteor), ("cider", cider)) if on}
    gts = tokenize_captions({i: list(refs) for i, refs in enumerate(references)})
    res = tokenize_captions({i: [cap] for i, cap in enumerate(predictions)})
    if meteor:
        scorer = require("pycocoevalcap.meteor.meteor").Meteor()
        out["meteor"] = float(scorer.compute_score(gts, res)[0])
        del scorer  # its __del__ stops the Java process
    if cider:
        out["cider"] = float(require("pycocoevalcap.cider.cider").Cider().compute_score(gts, res)[0])
    return out
