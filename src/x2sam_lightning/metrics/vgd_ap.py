"""AP / AP50 of visual grounded segmentation: image VGD (COCO-VGD) and video V-VGD (YT19-VGD, VIPSeg-VGD).

Decision (see X-SAM ``xsam/evaluation/evaluators/img_vgdseg_evaluator.py``, which X2SAM's VGD follows):
VGD is scored as instance segmentation where the category of a prediction is the category of the object
its visual prompt was drawn from. Every annotated object carries a prompt at evaluation time, so the
ground truth is all annotated instances (tracks) with their categories, and a prediction for a prompt may
match any instance of the prompted category. Images use COCO segm AP (X-SAM runs ``COCOeval``); videos
use the YouTube-VIS track AP (whole-track IoU), since a V-VGD target is the full track of the prompted
object. Point- and box-prompted results are reported separately: keep one metric per prompt type (e.g.
a ``MetricCollection`` with prefixes ``point/`` and ``box/``).
"""

from __future__ import annotations

from x2sam_lightning.metrics.youtube_vis_ap import ImageMaskAveragePrecision, YouTubeVISAveragePrecision


class VideoVGDAveragePrecision(YouTubeVISAveragePrecision):
    """V-VGD AP / AP50: YouTube-VIS track AP on one predicted track per prompt.

    ``update(pred_masks (P, T, H, W), pred_scores (P,), pred_labels (P,), gt_masks (G, T, H, W),
    gt_labels (G,))`` per video, with ``P`` prompts, ``pred_labels`` the prompted objects' categories and
    ``G`` all annotated tracks. Read ``AP`` and ``AP50`` from ``compute()``.
    """


class ImageVGDAveragePrecision(ImageMaskAveragePrecision):
    """Image VGD AP / AP50 (COCO-VGD): COCO segm AP on one predicted mask per prompt.

    ``update(pred_masks (P, H, W), pred_scores (P,), pred_labels (P,), gt_masks (G, H, W), gt_labels
    (G,), gt_iscrowd (G,))`` per image, ``pred_labels`` being the prompted objects' categories.
    """
