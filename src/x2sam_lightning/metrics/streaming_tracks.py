"""Video AP of a video streamed chunk by chunk: the track protocol's sums, accumulated, never the masks.

The YouTube-VIS track IoU is ``sum_t |p_t & g_t| / sum_t |p_t | g_t|`` and a track's area is its mean area
over the frames where it is non-empty: both are sums over frames, so a video scored whole and the same
video scored a chunk at a time give the same statistics (:func:`_track_statistics`). A Mask2Former-style
detection score (class probability of the track's mean logits times its mask quality, the mean probability
inside its binary mask over the whole video) is a sum over frames too. :class:`TrackOverlaps` keeps, per
video, ``Q x G`` intersections and a few numbers per query and object: its memory does not depend on the
video's length.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.mask_counts import overlap_counts
from x2sam_lightning.metrics.functional.video_ap import _track_statistics
from x2sam_lightning.models.postprocess import class_probabilities


class TrackOverlaps:
    """One video's sufficient statistics for the track protocol, fed a chunk of frames at a time.

    Args:
        num_queries: ``Q``, the predicted tracks (every query of the decoding instance).
        top_k: detections kept per video, ranked by class score (as ``instance_postprocess`` does).
        class_loss: how the class logits were trained.
    """

    def __init__(self, num_queries: int, top_k: int = 100, class_loss: Literal["ce", "focal"] = "ce") -> None:
        self.num_queries, self.top_k, self.class_loss = int(num_queries), int(top_k), class_loss
        q = self.num_queries
        self.logit_sum: Tensor | None = None  # [Q, C+1] float64
        self.frames = 0
        self.quality_sum = torch.zeros(q, dtype=torch.float64)  # sum of sigmoid inside the binary mask
        self.pred_area = torch.zeros(q, dtype=torch.long)
        self.pred_present = torch.zeros(q, dtype=torch.long)
        self.gt_ids: list[int] = []
        self.gt_labels: list[int] = []
        self.gt_crowd: list[bool] = []
        self.intersections = torch.zeros(q, 0, dtype=torch.long)
        self.gt_area = torch.zeros(0, dtype=torch.long)
        self.gt_present = torch.zeros(0, dtype=torch.long)

    def add(
        self,
        frame_logits: Tensor,
        mask_logits: Tensor,
        gt_masks: Tensor,
        gt_ids: Tensor,
        gt_labels: Tensor,
        gt_crowd: Tensor,
    ) -> None:
        """Add ``t`` frames.

        Args:
            frame_logits: ``[t, Q, C+1]`` class logits of each frame.
            mask_logits: ``[Q, t, H, W]`` mask logits at the scoring size.
            gt_masks: ``[N, t, H, W]`` bool ground truth of the objects present in these frames.
            gt_ids: ``[N]`` the objects' ids (the same object in another chunk has the same id).
            gt_labels, gt_crowd: ``[N]``.
        """
        summed = frame_logits.detach().double().sum(0).cpu()
        self.logit_sum = summed if self.logit_sum is None else self.logit_sum + summed
        self.frames += int(frame_logits.shape[0])
        binary = mask_logits > 0
        self.quality_sum += (mask_logits.sigmoid() * binary).flatten(1).sum(1).double().cpu()
        for n, object_id in enumerate(gt_ids.tolist()):
            if object_id not in self.gt_ids:
                self.gt_ids.append(object_id)
                self.gt_labels.append(int(gt_labels[n]))
                self.gt_crowd.append(bool(gt_crowd[n]))
        g = len(self.gt_ids)
        if g > self.intersections.shape[1]:
            grow = g - self.intersections.shape[1]
            self.intersections = torch.cat(
                [self.intersections, self.intersections.new_zeros(self.num_queries, grow)], 1
            )
            self.gt_area = torch.cat([self.gt_area, self.gt_area.new_zeros(grow)])
            self.gt_present = torch.cat([self.gt_present, self.gt_present.new_zeros(grow)])
        inter, pred_frames, gt_frames = overlap_counts(binary.cpu(), gt_masks.cpu().bool())
        self.pred_area += pred_frames.sum(1)
        self.pred_present += (pred_frames > 0).sum(1)
        columns = torch.tensor([self.gt_ids.index(i) for i in gt_ids.tolist()], dtype=torch.long)
        if len(columns):
            self.intersections[:, columns] += inter.sum(2)
            self.gt_area[columns] += gt_frames.sum(1)
            self.gt_present[columns] += (gt_frames > 0).sum(1)

    def detections(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(queries [D], scores [D], labels [D])`` of the kept detections (``D = min(top_k, Q)``)."""
        if self.logit_sum is None:
            raise ValueError("no frame was added")
        probs = class_probabilities(self.logit_sum / self.frames, self.class_loss)  # [Q, C]
        class_scores, labels = probs.max(-1)
        order = class_scores.topk(min(self.top_k, self.num_queries)).indices
        quality = self.quality_sum[order] / (self.pred_area[order].double() + 1e-6)
        scores = class_scores[order].double() * quality
        rank = scores.argsort(descending=True)  # the order instance_postprocess returns
        return order[rank], scores[rank], labels[order][rank]

    def statistics(self, video_key: int) -> tuple[Tensor, ...]:
        """The video's ``STATE_NAMES`` tensors for
        :meth:`~x2sam_lightning.metrics.youtube_vis_ap.YouTubeVISAveragePrecision.update_statistics`."""
        order, scores, labels = self.detections()
        return _track_statistics(
            self.intersections[order],
            self.pred_area[order],
            self.pred_present[order],
            self.gt_area,
            self.gt_present,
            scores,
            labels,
            torch.tensor(self.gt_labels, dtype=torch.long),
            torch.tensor(self.gt_crowd, dtype=torch.bool),
            video_key,
        )
