"""cIoU / gIoU for referring and reasoning segmentation, and the gRefCOCO variant with no-target samples.

Two official scorers define these numbers and they differ in small ways, so both are reproduced:

* LISA (``dvlab-research/LISA``, ``train_ds.py::validate`` with ``utils/utils.py::intersectionAndUnionGPU``)
  scores RefCOCO/+/g and ReasonSeg. Per sample it takes ``I / (U + 1e-5)`` and adds 1 when the union is
  empty (an empty prediction for an empty target counts as IoU 1); cIoU is ``sum I / (sum U + 1e-10)``; its
  all-reduce divides the summed gIoU by ``count + 1e-5``. Target pixels equal to ``ignore_index`` are
  left out of both masks. ``exact=True`` drops the three epsilons.
* ReLA (``henghuiding/ReLA``, ``gres_model/evaluation/refer_evaluation.py::ReferEvaluator.evaluate``)
  scores gRefCOCO. A sample whose ground truth has no target and whose prediction says "no target" counts
  as IoU 1 and adds nothing to the sums; one that predicts a target adds its union (its predicted area) to
  ``sum U``. A target sample predicted as "no target" keeps its union but loses its intersection. N-acc is
  the share of no-target samples predicted as such, T-acc the share of target samples predicted as having
  one (both 0 when the data has no no-target sample, as ReLA reports); Pr@X is the share of target
  samples with IoU >= X.

Masks may be images ``(N, H, W)`` or videos ``(N, T, H, W)``: everything after the first dimension is
flattened.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: Precision thresholds ReLA reports (Pr@0.7, Pr@0.8, Pr@0.9).
PR_THRESHOLDS: tuple[float, ...] = (0.7, 0.8, 0.9)


def _binarize(preds: Tensor) -> Tensor:
    """Boolean masks from bool / integer masks (non-zero = foreground) or float logits (``> 0``, as LISA)."""
    if preds.dtype == torch.bool:
        return preds
    if preds.is_floating_point():
        return preds > 0
    return preds != 0


def _check_shapes(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape:
        raise ValueError(f"preds and target must have the same shape, got {preds.shape} and {target.shape}")
    if preds.dim() < 2:
        raise ValueError(f"expected masks of shape (N, ...), got {tuple(preds.shape)}")


def _row_counts(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row foreground counts of boolean ``(N, D)`` masks: ``(|pred & gt|, |pred|, |gt|)``, int64 ``(N,)``.

    On CPU, numpy's ``count_nonzero`` over one contiguous row is an order of magnitude faster than torch's
    boolean reductions, so rows are counted there; other devices use torch.
    """
    if pred.device.type != "cpu":
        inter = (pred & gt).sum(1, dtype=torch.int64)
        return inter, pred.sum(1, dtype=torch.int64), gt.sum(1, dtype=torch.int64)
    p, g = pred.contiguous().numpy(), gt.contiguous().numpy()
    counts = np.empty((3, p.shape[0]), dtype=np.int64)
    for i in range(p.shape[0]):
        counts[0, i] = np.count_nonzero(np.logical_and(p[i], g[i]))
        counts[1, i] = np.count_nonzero(p[i])
        counts[2, i] = np.count_nonzero(g[i])
    out = torch.from_numpy(counts)
    return out[0], out[1], out[2]


def _intersection_union(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample intersection and union of boolean masks ``(N, ...)`` as float64 ``(N,)`` tensors."""
    inter, area_p, area_g = _row_counts(pred.flatten(1), gt.flatten(1))
    return inter.double(), (area_p + area_g - inter).double()


def _referring_iou_update(
    preds: Tensor, target: Tensor, ignore_index: int | None = 255, exact: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sufficient statistics of LISA's cIoU / gIoU for one batch.

    Args:
        preds: ``(N, H, W)`` or ``(N, T, H, W)`` predicted masks: bool, integer (non-zero = foreground) or
            float logits (foreground where ``> 0``).
        target: same shape, integer or bool; 1 (or True) = foreground, ``ignore_index`` = not scored.
        ignore_index: target value whose pixels are excluded from prediction and target; None for none.
        exact: plain ``I / U`` per sample instead of LISA's ``I / (U + 1e-5)``.

    Returns:
        ``(intersection_sum, union_sum, iou_sum, count)``: float64 scalars (the count as float64 too).
    """
    _check_shapes(preds, target)
    pred = _binarize(preds)
    if ignore_index is not None and target.dtype != torch.bool:
        valid = target != ignore_index
        gt = (target != 0) & valid
        pred = pred & valid
    else:
        gt = _binarize(target)
    inter, union = _intersection_union(pred, gt)
    if exact:
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    else:
        iou = inter / (union + 1e-5) + (union == 0).double()
    count = torch.tensor(float(pred.shape[0]), dtype=torch.float64, device=pred.device)
    return inter.sum(), union.sum(), iou.sum(), count


def _referring_iou_compute(
    intersection_sum: Tensor, union_sum: Tensor, iou_sum: Tensor, count: Tensor, exact: bool = False
) -> dict[str, Tensor]:
    """cIoU and gIoU (fractions in [0, 1]) from summed statistics, as LISA reports them.

    Returns:
        ``{"ciou": ..., "giou": ...}``, float64 scalars; NaN when nothing was scored.
    """
    if exact:
        ciou = intersection_sum / union_sum
        giou = iou_sum / count
    else:
        ciou = intersection_sum / (union_sum + 1e-10)
        giou = iou_sum / (count + 1e-5)
    if count == 0:
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=count.device)
        return {"ciou": nan, "giou": nan.clone()}
    return {"ciou": ciou, "giou": giou}


def referring_iou(
    preds: Tensor, target: Tensor, ignore_index: int | None = 255, exact: bool = False
) -> dict[str, Tensor]:
    """LISA's cIoU and gIoU of one set of masks; see :func:`_referring_iou_update` for the inputs."""
    stats = _referring_iou_update(preds, target, ignore_index, exact)
    return _referring_iou_compute(*stats, exact=exact)


def _grefcoco_update(
    preds: Tensor,
    target: Tensor,
    pred_no_target: Tensor | None = None,
    target_no_target: Tensor | None = None,
    thresholds: tuple[float, ...] = PR_THRESHOLDS,
) -> dict[str, Tensor]:
    """Sufficient statistics of ReLA's gRefCOCO evaluation for one batch.

    Args:
        preds: ``(N, H, W)`` or ``(N, T, H, W)`` predicted masks (bool, integer or float logits ``> 0``).
        target: same shape, ground-truth masks (non-zero = foreground; an empty mask for no-target samples).
        pred_no_target: ``(N,)`` bool, the model's "no target" decision (ReLA's ``nt_label`` head). Default:
            the predicted mask is empty.
        target_no_target: ``(N,)`` bool, the sample is a no-target expression (ReLA's ``empty`` flag).
            Default: the ground-truth mask is empty.
        thresholds: IoU thresholds of the Pr@X counts.

    Returns:
        Summed float64 statistics: ``intersection``, ``union``, ``iou`` (sums), ``count`` (all samples),
        ``target_count`` (target samples), ``precision_count`` ``(len(thresholds),)``, and the no-target
        confusion counts ``nt_tp`` (no target, predicted none), ``nt_fn`` (no target, predicted one),
        ``nt_tn`` (target, predicted one) and ``nt_fp`` (target, predicted none), named as in ReLA.
    """
    _check_shapes(preds, target)
    pred = _binarize(preds)
    gt = _binarize(target)
    inter, area_p, area_g = _row_counts(pred.flatten(1), gt.flatten(1))
    inter, union = inter.double(), (area_p + area_g - inter).double()
    pred_nt = (area_p == 0) if pred_no_target is None else pred_no_target
    gt_nt = (area_g == 0) if target_no_target is None else target_no_target
    pred_nt = pred_nt.to(device=pred.device, dtype=torch.bool).reshape(-1)
    gt_nt = gt_nt.to(device=pred.device, dtype=torch.bool).reshape(-1)

    has_target = ~gt_nt
    inter = torch.where(has_target & ~pred_nt, inter, torch.zeros_like(inter))
    union = torch.where(gt_nt & pred_nt, torch.zeros_like(union), union)
    iou_target = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    iou = torch.where(gt_nt, pred_nt.double(), iou_target)
    thr = torch.tensor(thresholds, dtype=torch.float64, device=pred.device)
    precision = ((iou_target[:, None] >= thr) & has_target[:, None]).sum(0).double()

    def total(mask: Tensor) -> Tensor:
        return mask.sum().double()

    return {
        "intersection": inter.sum(),
        "union": union.sum(),
        "iou": iou.sum(),
        "count": torch.tensor(float(pred.shape[0]), dtype=torch.float64, device=pred.device),
        "target_count": total(has_target),
        "precision_count": precision,
        "nt_tp": total(gt_nt & pred_nt),
        "nt_fn": total(gt_nt & ~pred_nt),
        "nt_tn": total(has_target & ~pred_nt),
        "nt_fp": total(has_target & pred_nt),
    }


def _grefcoco_compute(
    stats: dict[str, Tensor], thresholds: tuple[float, ...] = PR_THRESHOLDS
) -> dict[str, Tensor]:
    """gIoU, cIoU, N-acc, T-acc and Pr@X (fractions in [0, 1]) from summed statistics, as ReLA reports.

    N-acc and T-acc are 0 when no sample is a no-target one (ReLA's convention); a ratio with an empty
    denominator that ReLA would divide by zero on is NaN here.
    """

    def ratio(num: Tensor, den: Tensor) -> Tensor:
        return num / den if den > 0 else torch.full_like(num, float("nan"))

    out = {
        "giou": ratio(stats["iou"], stats["count"]),
        "ciou": ratio(stats["intersection"], stats["union"]),
    }
    empty_count = stats["nt_tp"] + stats["nt_fn"]
    if empty_count > 0:
        out["n_acc"] = ratio(stats["nt_tp"], empty_count)
        out["t_acc"] = ratio(stats["nt_tn"], stats["nt_tn"] + stats["nt_fp"])
    else:
        out["n_acc"] = torch.zeros_like(stats["count"])
        out["t_acc"] = torch.zeros_like(stats["count"])
    for i, thr in enumerate(thresholds):
        out[f"pr@{thr:.1f}"] = ratio(stats["precision_count"][i], stats["target_count"])
    return out


def grefcoco_iou(
    preds: Tensor,
    target: Tensor,
    pred_no_target: Tensor | None = None,
    target_no_target: Tensor | None = None,
) -> dict[str, Tensor]:
    """ReLA's gRefCOCO metrics of one set of masks; see :func:`_grefcoco_update` for the inputs."""
    return _grefcoco_compute(_grefcoco_update(preds, target, pred_no_target, target_no_target))
