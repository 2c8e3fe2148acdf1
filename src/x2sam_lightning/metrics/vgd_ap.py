"""AP / AP50 of visual grounded segmentation: image VGD (COCO-VGD) and video V-VGD (YT19-VGD, VIPSeg-VGD).

Decision (see X-SAM ``xsam/evaluation/evaluators/img_vgdseg_evaluator.py``, which X2SAM's VGD follows):
VGD is scored as instance segmentation where the category of a prediction is the category of the object
its visual prompt was drawn from. Every annotated object carries a prompt at evaluation time, so the
ground truth is all annotated instances (tracks) with their categories, and a prediction for a prompt may
match any instance of the prompted category. Images use COCO segm AP (X-SAM runs ``COCOeval``; here
:class:`MaskAP`, which equals it). Videos use, by default, the YouTube-VIS track AP (whole-track IoU), since a
V-VGD target is the full track of the prompted object (a protocol defined here: no released scorer scores
V-VGD tracks); ``protocol="frame"`` gives the per-frame COCO AP that X2SAM's own evaluator reports. Point-
and box-prompted results are reported separately: keep one metric per prompt type (e.g. a
``MetricCollection`` with prefixes ``point/`` and ``box/``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from x2sam_lightning.metrics.functional.video_ap import AP_KEYS
from x2sam_lightning.metrics.mask_ap import MaskAP
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision

# MaskAP's torchmetrics-style names -> the COCO summary names both VGD metrics report.
_MASK_AP_KEYS = dict(
    zip(
        ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
        + ("mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"),
        AP_KEYS,
    )
)


class VideoVGDAveragePrecision(YouTubeVISAveragePrecision):
    """V-VGD AP / AP50 on one predicted track per prompt, whole-track or per-frame.

    ``update(pred_masks (P, T, H, W), pred_scores (P,), pred_labels (P,), gt_masks (G, T, H, W),
    gt_labels (G,))`` per video, with ``P`` prompts, ``pred_labels`` the prompted objects' categories and
    ``G`` all annotated tracks. Read ``AP`` and ``AP50`` from ``compute()``.

    Args:
        protocol: ``"track"`` (default; defined here): YouTube-VIS track AP, a prediction matches a track
            by the IoU summed over all frames. ``"frame"``: what X2SAM's own evaluator reports
            (``vid_vgdseg_evaluator.py``), COCO segm AP with every frame an image, so numbers can be set
            beside the paper's table; a track that is right on most frames scores on those frames.
    """

    def __init__(self, protocol: str = "track", **kwargs) -> None:
        if protocol not in ("track", "frame"):
            raise ValueError(f"protocol must be 'track' or 'frame', got {protocol!r}")
        super().__init__(**kwargs)
        self.protocol = protocol


class ImageVGDAveragePrecision(MaskAP):
    """Image VGD AP / AP50 (COCO-VGD): COCO segm AP (pycocotools) on one predicted mask per prompt.

    Same call as :class:`VideoVGDAveragePrecision`, one image per call, and the same result keys
    (``AP``, ``AP50``, ... in COCO ``summarize`` order).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(max_detection_thresholds=(1, 10, 100), **kwargs)

    def update(
        self,
        pred_masks: Tensor,
        pred_scores: Tensor,
        pred_labels: Tensor,
        gt_masks: Tensor,
        gt_labels: Tensor,
        gt_iscrowd: Tensor | None = None,
    ) -> None:
        """Add one image: ``pred_masks (P, H, W)`` bool, ``pred_labels`` = the prompted categories,
        ``gt_masks (G, H, W)`` all annotated instances, optional ``gt_iscrowd (G,)``."""
        iscrowd = torch.zeros_like(gt_labels) if gt_iscrowd is None else gt_iscrowd.long()
        super().update(
            [{"masks": pred_masks, "scores": pred_scores, "labels": pred_labels}],
            [{"masks": gt_masks, "labels": gt_labels, "iscrowd": iscrowd}],
        )

    def compute(self) -> dict[str, Tensor]:
        values = super().compute()
        return {name: values[key] for key, name in _MASK_AP_KEYS.items()}
