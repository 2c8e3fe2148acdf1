"""Benchmark metrics as ``torchmetrics.Metric`` classes, each checked against its official scorer.

Functional forms (``_update`` / ``_compute``) live in :mod:`x2sam_lightning.metrics.functional`; the
task -> collection registry in :mod:`x2sam_lightning.metrics.factory`; the results table in
:mod:`x2sam_lightning.metrics.report`. See ``docs/metrics.md`` for conventions and references.
"""

from x2sam_lightning.metrics.davis_jf import DAVISJandF
from x2sam_lightning.metrics.factory import build_task_metrics
from x2sam_lightning.metrics.gcg import GCGMetric
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU
from x2sam_lightning.metrics.interactive import InteractiveIoU
from x2sam_lightning.metrics.mask_ap import MaskAP
from x2sam_lightning.metrics.mean_iou import MeanIoU
from x2sam_lightning.metrics.panoptic_quality import PanopticQuality
from x2sam_lightning.metrics.referring import ReferringIoU
from x2sam_lightning.metrics.referring_vos_jf import ReferringVOSJandF
from x2sam_lightning.metrics.vgd_ap import ImageVGDAveragePrecision, VideoVGDAveragePrecision
from x2sam_lightning.metrics.video_consistency import VideoConsistency
from x2sam_lightning.metrics.video_panoptic_quality import VideoPanopticQuality
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision

__all__ = [
    "DAVISJandF",
    "GCGMetric",
    "GRefCOCOIoU",
    "ImageVGDAveragePrecision",
    "InteractiveIoU",
    "MaskAP",
    "MeanIoU",
    "PanopticQuality",
    "ReferringIoU",
    "ReferringVOSJandF",
    "VideoConsistency",
    "VideoPanopticQuality",
    "VideoVGDAveragePrecision",
    "YouTubeVISAveragePrecision",
    "build_task_metrics",
]
