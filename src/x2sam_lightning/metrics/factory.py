"""Task id -> the ``MetricCollection`` its benchmark reports (paper Table 6; ``PAPER_NOTES`` tasks table).

The registry is data: each task lists :class:`MetricSpec` entries naming a metric class by module path, so
building one task's metrics imports only the modules it needs (the GCG caption scorers, pycocotools, ...
are not loaded for a referring task). A LightningModule builds its collection with
:func:`build_task_metrics` and feeds each member its own inputs (``collection[name].update(...)``): the
members of one task take different inputs (panoptic maps, semantic maps, instance masks), so one
``collection.update(...)`` for all is not the intended use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torchmetrics import Metric, MetricCollection

_PKG = "x2sam_lightning.metrics"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a task.

    Attributes:
        name: key of the metric in the collection, and the key callers use to pass its constructor
            arguments to :func:`build_task_metrics`.
        module: module path of the metric class.
        cls: class name in ``module``.
        kwargs: default constructor arguments (overridden by the caller's).
        prefix: prepended to each output key of the metric (``"gcg/"`` -> ``"gcg/miou"``).
    """

    name: str
    module: str
    cls: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    prefix: str = ""

    def load(self) -> type[Metric]:
        """Import and return the metric class."""
        return getattr(importlib.import_module(self.module), self.cls)


def _spec(name: str, module: str, cls: str, prefix: str = "", **kwargs: Any) -> MetricSpec:
    return MetricSpec(name, f"{_PKG}.{module}", cls, kwargs, prefix)


#: task id -> metrics of its benchmarks (classes of the metric files of ``x2sam_lightning.metrics``).
TASK_METRICS: dict[str, tuple[MetricSpec, ...]] = {
    "img_genseg": (
        _spec("panoptic", "panoptic_quality", "PanopticQuality"),
        _spec("semantic", "mean_iou", "MeanIoU"),
        _spec("instance", "mask_ap", "MaskAP"),
    ),
    "img_ovseg": (
        _spec("panoptic", "panoptic_quality", "PanopticQuality"),
        _spec("semantic", "mean_iou", "MeanIoU"),
        _spec("instance", "mask_ap", "MaskAP"),
    ),
    "img_refseg": (_spec("referring", "referring", "ReferringIoU"),),
    "img_reaseg": (_spec("reasoning", "referring", "ReferringIoU"),),
    "img_gcgseg": (_spec("gcg", "gcg", "GCGMetric"),),
    "img_intseg": (_spec("interactive", "interactive", "InteractiveIoU"),),
    # VGD reports point- and box-prompted results separately (paper Table 6): one metric per prompt type.
    "img_vgdseg": (
        _spec("point", "vgd_ap", "ImageVGDAveragePrecision", prefix="point/"),
        _spec("box", "vgd_ap", "ImageVGDAveragePrecision", prefix="box/"),
    ),
    "vid_genseg": (
        _spec("vpq", "video_panoptic_quality", "VideoPanopticQuality"),
        _spec("semantic", "mean_iou", "MeanIoU"),
        _spec("consistency", "video_consistency", "VideoConsistency"),
        _spec("instance", "youtube_vis_ap", "YouTubeVISAveragePrecision"),
    ),
    "vid_ovseg": (_spec("instance", "youtube_vis_ap", "YouTubeVISAveragePrecision"),),
    "vid_refseg": (_spec("jf", "referring_vos_jf", "ReferringVOSJandF"),),
    "vid_reaseg": (_spec("jf", "referring_vos_jf", "ReferringVOSJandF"),),
    "vid_gcgseg": (_spec("gcg", "gcg", "GCGMetric", caption_max_chars=2000),),  # VideoGLaMM cuts captions
    "vid_objseg": (_spec("jf", "davis_jf", "DAVISJandF"),),
    "vid_vgdseg": (
        _spec("point", "vgd_ap", "VideoVGDAveragePrecision", prefix="point/"),
        _spec("box", "vgd_ap", "VideoVGDAveragePrecision", prefix="box/"),
    ),
}

#: gRefCOCO (no-target expressions) is scored with ReLA's rules: ``build_task_metrics("img_refseg",
#: variant="grefcoco")``.
VARIANTS: dict[tuple[str, str], tuple[MetricSpec, ...]] = {
    ("img_refseg", "grefcoco"): (_spec("referring", "grefcoco", "GRefCOCOIoU"),),
}


class TaskMetricCollection(MetricCollection):
    """A ``MetricCollection`` whose ``compute`` flattens each member's dict as ``prefix + key``.

    A member that returns a tensor is reported under ``prefix + name``.
    """

    def __init__(self, metrics: dict[str, Metric], prefixes: Mapping[str, str], task: str) -> None:
        super().__init__(metrics, compute_groups=False)
        self.prefixes = dict(prefixes)
        self.task = task

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        out: dict[str, Any] = {}
        for name, metric in self.items(keep_base=True, copy_state=False):
            result = metric.compute()
            prefix = self.prefixes.get(name, "")
            items = result.items() if isinstance(result, Mapping) else [(name, result)]
            for key, value in items:
                full = f"{prefix}{key}"
                if full in out:
                    raise KeyError(f"{self.task}: two metrics report '{full}': give them prefixes")
                out[full] = value
        return out


def known_tasks() -> list[str]:
    """Task ids the factory knows, in the paper's order."""
    return list(TASK_METRICS)


def task_specs(task: str, variant: str | None = None) -> tuple[MetricSpec, ...]:
    """The registry entries of ``task`` (and ``variant``); raises ``KeyError`` listing the known ones."""
    if task not in TASK_METRICS:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(known_tasks())}")
    if variant is None:
        return TASK_METRICS[task]
    if (task, variant) not in VARIANTS:
        known = ", ".join(f"{t}:{v}" for t, v in VARIANTS)
        raise KeyError(f"unknown variant {variant!r} of task {task!r}; known variants: {known}")
    return VARIANTS[(task, variant)]


def build_task_metrics(
    task: str, variant: str | None = None, **kwargs: Mapping[str, Any]
) -> TaskMetricCollection:
    """Build the metrics of one task.

    Args:
        task: a task id (``img_refseg``, ``vid_genseg``, ...; see :func:`known_tasks`).
        variant: a benchmark variant with its own rules (``"grefcoco"`` for ``img_refseg``).
        **kwargs: constructor arguments per member, keyed by the member's name, e.g.
            ``build_task_metrics("img_genseg", panoptic={"things": [...], "stuffs": [...]})``.

    Returns:
        A :class:`TaskMetricCollection` keyed by member name.

    Raises:
        KeyError: unknown task, variant, or a keyword that names no member of the task.
    """
    specs = task_specs(task, variant)
    names = {spec.name for spec in specs}
    unknown = set(kwargs) - names
    if unknown:
        raise KeyError(f"{task}: no metric named {sorted(unknown)}; its metrics: {sorted(names)}")
    metrics = {spec.name: spec.load()(**{**spec.kwargs, **kwargs.get(spec.name, {})}) for spec in specs}
    return TaskMetricCollection(metrics, {spec.name: spec.prefix for spec in specs}, task)


def to_floats(results: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Scalar results as plain floats (non-scalar entries, e.g. per-class tensors, are dropped)."""
    out = {}
    for key, value in results.items():
        if isinstance(value, Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        out[key] = float(value)
    return out
