"""Set criterion (DETR / Mask2Former contract) for tracks: Hungarian matching, then per-layer losses.

``forward`` returns unweighted ``loss_*`` terms for the final prediction and ``loss_*_{i}`` for each
auxiliary prediction; :func:`weighted_sum` / :meth:`SetCriterion.weighted` apply the ``weight_dict``.

Losses:
- ``labels``: softmax cross-entropy over the classes + no-object (no-object weight ``eos_coef``) as
  ``loss_ce``; or, with ``class_loss="focal"``, a sigmoid focal loss over the classes (the no-object
  column is ignored: an unmatched query is pushed to 0 on every class) as ``loss_focal``.
- ``masks``: sigmoid BCE ``loss_mask`` and ``loss_dice`` on points drawn per matched track (uncertainty
  sampling shared by the track's frames); frames where the target is not ``valid`` are left out.

Absent and not annotated (schema 2, ``TrackTargets.valid``): a frame where the object is *absent* has an
empty target mask and counts like any other frame, in the matching cost and in both mask losses, so a
prediction there is penalised (as Mask2Former-VIS trains on clips: a track's dice is taken over all its
frames together). A frame *not annotated* (``valid`` False) contributes nothing: its points carry weight 0
in the matching cost, the BCE and the dice, and do not vote in uncertainty sampling. A track annotated on
no frame of the clip is dropped before matching (:func:`annotated_tracks`): it would otherwise take a
query on its class cost alone and count in the normaliser with no mask to learn.

The number of masks that normalises the losses is summed over the batch, all-reduced over processes and
averaged by the world size, then clamped to >= 1, as in Mask2Former.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from x2sam_lightning.models.losses import dice_loss, sigmoid_ce_loss, sigmoid_focal_loss
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.models.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from x2sam_lightning.types import TrackTargets

DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_focal": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}

_AUX_SUFFIX = re.compile(r"_\d+$")


def weighted_sum(losses: Mapping[str, Tensor], weight_dict: Mapping[str, float]) -> Tensor:
    """``sum(weight_dict[base(k)] * v)`` where ``base`` strips an auxiliary ``_{i}`` suffix.

    Raises:
        KeyError: A loss has no weight (a silent 0 would hide a misconfiguration).
    """
    total = None
    for name, value in losses.items():
        base = _AUX_SUFFIX.sub("", name)
        if base not in weight_dict:
            raise KeyError(f"no weight for {name!r} (weight_dict has {sorted(weight_dict)})")
        term = weight_dict[base] * value
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no losses to sum")
    return total


def num_masks_across_processes(
    targets: Sequence[TrackTargets], device: torch.device, num_queries: int | None = None
) -> float:
    """Mean number of target tracks per process (all-reduced when distributed), at least 1.

    With ``num_queries``, a sample counts at most that many: the matcher pairs each query with at most one
    target, so targets beyond the query count are never matched and must not dilute the loss of the
    matched ones (an SA-1B image can hold more masks than there are queries).
    """
    counts = (len(t) if num_queries is None else min(len(t), num_queries) for t in targets)
    num = torch.tensor(float(sum(counts)), device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        world = dist.get_world_size()
    return max(num.item() / world, 1.0)


def annotated_tracks(targets: TrackTargets) -> TrackTargets:
    """``targets`` without the tracks annotated on no frame (``valid [N, T]`` all False); the same object
    when every track has an annotated frame."""
    keep = targets.valid.any(1)
    if bool(keep.all()):
        return targets
    index = keep.nonzero().flatten()
    return TrackTargets(
        masks=targets.masks[index],
        labels=targets.labels[index],
        valid=targets.valid[index],
        object_ids=targets.object_ids[index],
        iscrowd=targets.iscrowd[index],
        original_masks=None if targets.original_masks is None else targets.original_masks[index],
    )


class SetCriterion(nn.Module):
    """Matching-based losses for ``pred_logits [B, Q, C+1]`` and ``pred_masks [B, Q, T, h, w]``.

    Args:
        num_classes: Classes of the linear head (no-object excluded). The no-object index is always the
            last column of ``pred_logits``, so condition-scored logits with ``K`` classes work too.
        matcher: The Hungarian matcher.
        weight_dict: Weight of each base loss name (``loss_ce``, ``loss_focal``, ``loss_mask``,
            ``loss_dice``); ``None`` uses ``{"loss_ce": 2, "loss_focal": 2, "loss_mask": 5, "loss_dice": 5}``.
        eos_coef: Cross-entropy weight of the no-object class.
        losses: Which of ``"labels"``, ``"masks"`` to compute.
        num_points: Points per matched track, chosen by uncertainty (shared by the track's frames).
        point_grid: If set, the loss is taken on the pixel centres of a ``point_grid x point_grid``
            lattice instead (deterministic, no uncertainty sampling): mask logits are bilinearly
            upsampled and targets bilinearly resampled to that grid. The CPU preset uses 64 (32x32 mask
            logits, loss at 64x64); tests use the target size, which reads the targets exactly.
        oversample_ratio: Uncertainty sampling oversampling.
        importance_sample_ratio: Share of points chosen by uncertainty.
        class_loss: ``"ce"`` (softmax over classes + no-object) or ``"focal"`` (sigmoid focal).
        focal_alpha: Focal-loss alpha.
        focal_gamma: Focal-loss gamma.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float] | None = None,
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("labels", "masks"),
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        class_loss: Literal["ce", "focal"] = "ce",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        point_grid: int | None = None,
    ) -> None:
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}")
        if class_loss not in ("ce", "focal"):
            raise ValueError(f"class_loss must be 'ce' or 'focal', not {class_loss!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.num_points = num_points
        self.point_grid = point_grid
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.class_loss = class_loss
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def loss_labels(
        self,
        outputs: dict[str, Any],
        targets: list[TrackTargets],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
        no_object_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Classification loss; unmatched queries are no-object.

        ``no_object_weight`` ``[B]``: the no-object weight of each target set (default ``eos_coef`` for
        all); the cross-entropy is the weighted mean, as ``F.cross_entropy(weight=...)`` computes it.
        """
        logits = outputs["pred_logits"].float()
        num_classes = logits.shape[-1] - 1
        target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src.to(logits.device)] = (
                targets[b].labels[tgt.to(targets[b].labels.device)].to(logits.device)
            )
        if self.class_loss == "focal":
            one_hot = F.one_hot(target_classes, num_classes + 1)[..., :num_classes]
            loss = sigmoid_focal_loss(
                logits[..., :num_classes], one_hot, num_masks, self.focal_alpha, self.focal_gamma
            )
            return {"loss_focal": loss}
        if no_object_weight is None:
            no_object_weight = torch.full((logits.shape[0],), self.eos_coef)
        row_weight = no_object_weight.to(logits.device, logits.dtype)[:, None].expand_as(target_classes)
        weight = torch.where(target_classes == num_classes, row_weight, torch.ones_like(row_weight))
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, reduction="none")
        return {"loss_ce": (loss * weight).sum() / weight.sum()}

    def _point_coords(self, src_masks: Tensor, valid: Tensor) -> Tensor:
        with torch.no_grad():
            return get_uncertain_point_coords_with_randomness(
                src_masks.detach(),
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
                frame_valid=valid,
            )

    def _grid_labels(self, targets: list[TrackTargets]) -> list[Tensor]:
        """Targets resampled once per step onto the loss grid: ``[N, T, g, g]`` per sample (grid mode)."""
        size = (self.point_grid, self.point_grid)
        # Bilinear resize at pixel centres == point_sample at grid_coords(g, g) (border padding).
        return [
            F.interpolate(t.masks.float(), size=size, mode="bilinear", align_corners=False)
            if len(t)
            else t.masks.new_zeros(0, t.masks.shape[1], *size, dtype=torch.float32)
            for t in targets
        ]

    def loss_masks(
        self,
        outputs: dict[str, Any],
        targets: list[TrackTargets],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
        grid_labels: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """BCE and dice on sampled points of the matched tracks (invalid frames masked out).

        ``grid_labels`` (from :meth:`_grid_labels`) are reused across layers in grid mode.
        """
        pred_masks = outputs["pred_masks"]
        src = [pred_masks[b, s.to(pred_masks.device)] for b, (s, _) in enumerate(indices)]
        valid = [targets[b].valid[t.to(targets[b].valid.device)] for b, (_, t) in enumerate(indices)]
        src_masks = torch.cat(src).float()  # [M, T, h, w]
        if src_masks.shape[0] == 0:
            # Keep the graph connected so every parameter gets a (zero) gradient under DDP.
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        valid_frames = torch.cat(valid).to(src_masks.device)  # [M, T]
        if self.point_grid is not None:
            if grid_labels is None:
                grid_labels = self._grid_labels(targets)
            tgt = [grid_labels[b][t.to(grid_labels[b].device)] for b, (_, t) in enumerate(indices)]
            point_labels = torch.cat(tgt).to(src_masks).flatten(2)  # [M, T, g*g]
            size = (self.point_grid, self.point_grid)
            point_logits = F.interpolate(src_masks, size=size, mode="bilinear", align_corners=False).flatten(
                2
            )
        else:
            tgt = [targets[b].masks[t.to(targets[b].masks.device)] for b, (_, t) in enumerate(indices)]
            tgt_masks = torch.cat(tgt).to(src_masks)  # [M, T, H, W]
            coords = self._point_coords(src_masks, valid_frames)
            point_labels = point_sample(tgt_masks, coords)  # [M, T, P]
            point_logits = point_sample(src_masks, coords)
        weights = valid_frames[:, :, None].expand_as(point_logits).flatten(1)
        point_labels, point_logits = point_labels.flatten(1), point_logits.flatten(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks, weights),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks, weights),
        }

    def _losses(
        self,
        outputs: dict[str, Any],
        targets: list[TrackTargets],
        num_masks: float,
        grid_labels: list[Tensor] | None = None,
        no_object_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        indices = self.matcher(outputs, targets)
        losses: dict[str, Tensor] = {}
        if "labels" in self.losses:
            losses.update(self.loss_labels(outputs, targets, indices, num_masks, no_object_weight))
        if "masks" in self.losses:
            losses.update(self.loss_masks(outputs, targets, indices, num_masks, grid_labels))
        return losses

    def forward(
        self,
        outputs: dict[str, Any],
        targets: list[TrackTargets],
        no_object_weight: Sequence[float] | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """All losses, unweighted.

        Args:
            outputs: ``pred_logits [B, Q, C+1]``, ``pred_masks [B, Q, T, h, w]``, optional ``aux_outputs``.
            targets: ``B`` target sets, masks ``[N, T, H, W]`` at the input size.
            no_object_weight: the no-object class weight of each target set (``B`` values); default
                ``eos_coef`` for every set. Stage 2 weights single-target sets apart from many-target ones.

        Returns:
            ``loss_*`` for the final prediction and ``loss_*_{i}`` for auxiliary prediction ``i``.
        """
        targets = [annotated_tracks(t) for t in targets]
        num_masks = num_masks_across_processes(
            targets, outputs["pred_logits"].device, num_queries=outputs["pred_logits"].shape[1]
        )
        grid_labels = None
        if self.point_grid is not None and "masks" in self.losses:
            with torch.no_grad():
                grid_labels = self._grid_labels(targets)
        if no_object_weight is not None:
            no_object_weight = torch.as_tensor(no_object_weight, dtype=torch.float32)
            if no_object_weight.shape != (len(targets),):
                raise ValueError(
                    f"no_object_weight has shape {tuple(no_object_weight.shape)}, expected ({len(targets)},)"
                )
        losses = self._losses(outputs, targets, num_masks, grid_labels, no_object_weight)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self._losses(aux, targets, num_masks, grid_labels, no_object_weight)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def weighted(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The total loss: :func:`weighted_sum` with this criterion's ``weight_dict``."""
        return weighted_sum(losses, self.weight_dict)
