"""J, F and J&F with the DAVIS-2017 semi-supervised protocol (and the YouTube-VOS seen/unseen split)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.metrics.functional.region_boundary import (
    DAVIS_KEYS,
    _davis_jf_compute,
    _davis_jf_update,
)


class DAVISJandF(Metric):
    """Region similarity J, boundary F and J&F as ``davis2017-evaluation`` reports them (semi-supervised).

    Per object: J and F on all frames but the first and last, then mean, recall (share of frames > 0.5) and
    decay (first quarter minus last quarter); averaged over the objects of all videos. Only summed states,
    so any split of the videos over processes gives the same numbers.

    Example:
        >>> metric = DAVISJandF()
        >>> metric.update(pred_tracks, gt_tracks)  # (N, T, H, W) bool, one video
        >>> metric.compute()["J&F-Mean"]

    Args:
        bound_th: boundary tolerance, fraction of the image diagonal (0.008 as DAVIS) or pixels if >= 1.
        skip_first_last: drop the first and last frame of each video as the official protocol does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, bound_th: float = 0.008, skip_first_last: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bound_th = bound_th
        self.skip_first_last = skip_first_last
        self.add_state("sums", torch.zeros(2, len(DAVIS_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, unseen: Tensor | None = None) -> None:
        """Add one video.

        Args:
            preds: ``(N, T, H, W)`` predicted binary masks of the video's ``N`` objects (all-zero for a lost
                object). DAVIS index maps convert with ``masks_from_label_map``.
            target: ``(N, T, H, W)`` ground-truth masks.
            unseen: optional ``(N,)`` bool marking objects of unseen categories (YouTube-VOS).
        """
        sums, counts = _davis_jf_update(preds, target, unseen, self.bound_th, self.skip_first_last)
        self.sums += sums.to(self.sums.device)
        self.counts += counts.to(self.counts.device)

    def compute(self) -> dict[str, Tensor]:
        """``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``, ``F-Decay`` (0-1);
        with the seen/unseen keys and ``Overall`` when unseen objects were given."""
        return _davis_jf_compute(self.sums, self.counts)
