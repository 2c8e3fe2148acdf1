"""Hungarian matching of predicted tracks to target tracks (Mask2Former's matcher, for clips).

Cost of (query ``q``, target ``n``) = ``cost_class * class cost`` + ``cost_mask * BCE`` +
``cost_dice * dice``, the mask terms computed on random points shared by all queries, targets and frames
of a sample, over the frames where target ``n`` is annotated (``valid``). The class cost follows the
classification loss: ``-softmax(logits)[label]`` for cross-entropy; for the sigmoid focal loss the focal
cost of Deformable DETR / Mask DINO, ``alpha (1-p)^g (-log p) - (1-alpha) p^g (-log(1-p))`` with
``p = sigmoid(logit[label])``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from x2sam_lightning.models.losses import pairwise_dice_loss, pairwise_sigmoid_ce_loss
from x2sam_lightning.models.point_sampling import grid_coords, point_sample
from x2sam_lightning.types import TrackTargets


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising the summed matching cost.

    Args:
        cost_class: Weight of the classification cost (``-probability`` of the target class).
        cost_mask: Weight of the point-sampled sigmoid BCE cost.
        cost_dice: Weight of the point-sampled dice cost.
        num_points: Random points per sample (shared by its queries, targets and frames).
        point_grid: If set, the pixel centres of a ``point_grid x point_grid`` lattice over the image
            replace the random points (deterministic; cheap for small inputs and exact in tests).
        class_loss: ``"ce"`` or ``"focal"``: which class cost (set it to the criterion's ``class_loss``).
        focal_alpha, focal_gamma: Focal cost parameters.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        point_grid: int | None = None,
        class_loss: Literal["ce", "focal"] = "ce",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all costs are 0")
        if class_loss not in ("ce", "focal"):
            raise ValueError(f"class_loss must be 'ce' or 'focal', not {class_loss!r}")
        self.class_loss, self.focal_alpha, self.focal_gamma = class_loss, focal_alpha, focal_gamma
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points
        self.point_grid = point_grid

    def class_cost(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``[Q, N]`` classification cost of ``logits [Q, C+1]`` against target ``labels [N]``."""
        if self.class_loss == "ce":
            return -logits.softmax(-1)[:, labels]
        prob = logits[:, labels].sigmoid()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        negative = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        return positive - negative

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, masks: Tensor, target: TrackTargets) -> Tensor:
        """Matching cost of one sample.

        Args:
            logits: ``[Q, C+1]`` class logits (last = no-object).
            masks: ``[Q, T, h, w]`` mask logits.
            target: ``N`` tracks with ``masks [N, T, H, W]``.

        Returns:
            ``[Q, N]`` float32 cost.
        """
        logits, masks = logits.float(), masks.float()
        num_queries = masks.shape[0]
        if len(target) == 0:
            return logits.new_zeros(num_queries, 0)
        cost = self.class_cost(logits, target.labels) * self.cost_class
        if self.point_grid is not None:
            coords = grid_coords(self.point_grid, self.point_grid, masks.device)
        else:
            coords = torch.rand(self.num_points, 2, device=masks.device)
        num_points = coords.shape[0]
        coords = coords[None]
        pred = point_sample(masks, coords.expand(num_queries, -1, -1)).flatten(1)  # [Q, T*P]
        tgt = point_sample(target.masks.float(), coords.expand(len(target), -1, -1)).flatten(1)  # [N, T*P]
        weights = target.valid.float()[:, :, None].expand(-1, -1, num_points).flatten(1)
        cost = cost + self.cost_mask * pairwise_sigmoid_ce_loss(pred, tgt, weights)
        cost = cost + self.cost_dice * pairwise_dice_loss(pred, tgt, weights)
        return cost

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], targets: list[TrackTargets]) -> list[tuple[Tensor, Tensor]]:
        """Match every sample of the batch.

        Args:
            outputs: ``pred_logits [B, Q, C+1]``, ``pred_masks [B, Q, T, h, w]``.
            targets: ``B`` target sets.

        Returns:
            Per sample ``(query_indices, target_indices)``, two int64 CPU tensors of length ``min(Q, N)``.
        """
        # The matcher runs in fp32 whatever autocast says: costs of close pairs must not tie by rounding.
        with torch.autocast(device_type=outputs["pred_masks"].device.type, enabled=False):
            indices = []
            for b, target in enumerate(targets):
                cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], target)
                rows, cols = linear_sum_assignment(cost.cpu().numpy())
                indices.append(
                    (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
                )
        return indices
