"""YouTube-VIS video AP / AP50 with the real video protocol (whole-track IoU), for vid_genseg / vid_ovseg."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from x2sam_lightning.metrics.functional.video_ap import STATE_NAMES, _ap_compute, _ap_update

_DTYPES = {"det_scores": torch.float64, "det_areas": torch.float64, "gt_areas": torch.float64}
_DTYPES["ious"] = torch.float64


class YouTubeVISAveragePrecision(Metric):
    """Video mask AP as ``youtubevos/cocoapi`` ``ytvoseval.py::YTVOSeval`` computes it.

    A predicted track matches a ground-truth track of its category by the IoU summed over all frames
    (sum of intersections / sum of unions), not frame by frame; track areas (for the small / medium /
    large split at 128² and 256²) are the mean area over the frames where the track is non-empty; at
    most 100 tracks per video and category count. ``update`` reduces a video to its track IoUs and areas
    (list states, gathered across processes); ``compute`` runs the matching and accumulation on all videos.

    Example:
        >>> metric = YouTubeVISAveragePrecision()
        >>> metric.update(pred_masks, pred_scores, pred_labels, gt_masks, gt_labels, video_id=7)
        >>> metric.compute()["AP"]

    Args:
        kwargs: passed to ``torchmetrics.Metric``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    #: ``"track"``: one image per video, whole-track IoU (YouTube-VIS); ``"frame"``: one per frame (COCO).
    protocol = "track"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in STATE_NAMES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._num_updates = 0

    def update(
        self,
        pred_masks: Tensor,
        pred_scores: Tensor,
        pred_labels: Tensor,
        gt_masks: Tensor,
        gt_labels: Tensor,
        gt_iscrowd: Tensor | None = None,
        video_id: int | None = None,
    ) -> None:
        """Add one video.

        Args:
            pred_masks: ``(D, T, H, W)`` bool predicted tracks (all frames of the video).
            pred_scores: ``(D,)`` confidences.
            pred_labels: ``(D,)`` category ids.
            gt_masks: ``(G, T, H, W)`` bool ground-truth tracks; an all-zero frame means the object is
                absent there.
            gt_labels: ``(G,)`` category ids.
            gt_iscrowd: optional ``(G,)`` bool crowd flags.
            video_id: the dataset's video id. Detections of exactly equal score in different videos are
                ranked in video-id order, as the official scorer does; without it, in update order.
        """
        key = self._num_updates if video_id is None else int(video_id)
        self._num_updates += 1
        values = _ap_update(
            pred_masks,
            pred_scores,
            pred_labels,
            gt_masks,
            gt_labels,
            gt_iscrowd,
            video_key=key,
            protocol=self.protocol,
        )
        for name, value in zip(STATE_NAMES, values):
            getattr(self, name).append(value.to(self.device))

    def update_statistics(self, values: tuple[Tensor, ...]) -> None:
        """Add one video already reduced to its ``STATE_NAMES`` tensors (a video streamed chunk by chunk:
        :class:`~x2sam_lightning.metrics.streaming_tracks.TrackOverlaps`; track protocol only)."""
        if self.protocol != "track":
            raise ValueError("per-video statistics are the track protocol's")
        # What torchmetrics' wrapped ``update`` does besides the states: a new cache, one more update.
        self._computed = None
        self._update_count += 1
        self._num_updates += 1
        for name, value in zip(STATE_NAMES, values):
            getattr(self, name).append(value.to(self.device))

    def compute(self) -> dict[str, Tensor]:
        """``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``, ``ARs``,
        ``ARm``, ``ARl`` in 0-1 (-1 where there is nothing to evaluate, as the official summary)."""
        states = {name: _cat(getattr(self, name), _DTYPES.get(name, torch.long)) for name in STATE_NAMES}
        return _ap_compute(states, self.protocol)


def _cat(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    # a list before synchronisation, one concatenated tensor after it
    if isinstance(state, Tensor):
        return state.reshape(-1)
    return dim_zero_cat(state) if state else torch.zeros(0, dtype=dtype)
