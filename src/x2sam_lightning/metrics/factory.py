"""Task id -> the ``MetricCollection`` its benchmark reports (paper Table 6; ``PAPER_NOTES`` tasks table).

The registry is one Hydra config, ``conf/model/metrics/tasks.yaml``: each task lists its members as
partials (``_target_`` + ``_partial_: true``), and ``task:variant`` entries hold a benchmark variant's own
rules (``img_refseg:grefcoco``). ``X2SAMJoint`` receives the same file through its config;
:func:`build_task_metrics` reads it for callers without Hydra. Building one task's metrics imports only
the modules it needs (the GCG caption scorers, ... are not loaded for a referring task).

The members of one task take different inputs (panoptic maps, semantic maps, instance masks), so a caller
feeds each member its own (``collection[name].update(...)``), not one ``collection.update(...)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor
from torchmetrics import Metric, MetricCollection

REGISTRY = Path(__file__).parents[1] / "conf" / "model" / "metrics" / "tasks.yaml"


@functools.cache
def registry() -> dict[str, dict[str, dict[str, Any]]]:
    """``{task or "task:variant": {member: partial node}}`` as plain dicts (the YAML registry)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(REGISTRY), resolve=True)


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
    """Task ids the registry knows, in the paper's order (variants left out)."""
    return [name for name in registry() if ":" not in name]


def task_members(task: str, variant: str | None = None) -> dict[str, dict[str, Any]]:
    """The registry's members of ``task`` (and ``variant``); raises ``KeyError`` listing the known ones."""
    table = registry()
    if task not in table:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(known_tasks())}")
    if variant is None:
        return table[task]
    key = f"{task}:{variant}"
    if key not in table:
        known = ", ".join(name for name in table if ":" in name)
        raise KeyError(f"unknown variant {variant!r} of task {task!r}; known variants: {known}")
    return table[key]


def collection_from_partials(
    task: str, partials: Mapping[str, Callable[..., Metric]], **kwargs: Mapping[str, Any]
) -> TaskMetricCollection:
    """Call each member's partial with ``kwargs[member]``; members of a class that occurs more than once
    (one per prompt type) report under ``member/``."""
    unknown = set(kwargs) - set(partials)
    if unknown:
        raise KeyError(f"{task}: no metric named {sorted(unknown)}; its metrics: {sorted(partials)}")
    classes = [getattr(p, "func", p) for p in partials.values()]
    metrics = {name: partial(**dict(kwargs.get(name, {}))) for name, partial in partials.items()}
    prefixes = {name: f"{name}/" if classes.count(cls) > 1 else "" for name, cls in zip(partials, classes)}
    return TaskMetricCollection(metrics, prefixes, task)


def build_task_metrics(
    task: str, variant: str | None = None, **kwargs: Mapping[str, Any]
) -> TaskMetricCollection:
    """Build the metrics of one task from the registry.

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
    from hydra.utils import instantiate

    partials = {name: instantiate(node) for name, node in task_members(task, variant).items()}
    return collection_from_partials(task, partials, **kwargs)


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
