"""Results table: one row per task with its headline metrics, like the paper's Table 6 (markdown + JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

#: task -> headline columns: (label printed, accepted result keys). A key matches a result key exactly or
#: its last ``/``-separated part, case-insensitively; the first key found fills the column.
HEADLINE_METRICS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # stage 1 (AgnosticSegmentor): class-agnostic proposals, COCO segm protocol
    "agnostic_seg": (("AP50", ("ap50", "map_50")), ("AP", ("ap", "map")), ("AR@10", ("ar10", "mar_10"))),
    "agnostic_vid": (("AP50", ("video_ap50",)), ("AP", ("video_ap",)), ("AR@10", ("video_ar10",))),
    "img_genseg": (("PQ", ("pq",)), ("mIoU", ("miou",)), ("mAP", ("map", "ap"))),
    "img_ovseg": (("PQ", ("pq",)), ("mIoU", ("miou",)), ("mAP", ("map", "ap"))),
    "img_refseg": (("cIoU", ("ciou",)), ("gIoU", ("giou",))),
    "img_reaseg": (("gIoU", ("giou",)), ("cIoU", ("ciou",))),
    "img_gcgseg": (
        ("METEOR", ("meteor",)),
        ("CIDEr", ("cider",)),
        ("AP50", ("ap50", "map_50", "ap_50")),
        ("mIoU", ("miou",)),
        ("Recall", ("recall",)),
    ),
    # COCO-Interactive: one column per prompt type (X-SAM's table), mIoU; cIoU is in the JSON.
    "img_intseg": (
        ("mIoU point", ("point/miou",)),
        ("mIoU scribble", ("scribble/miou",)),
        ("mIoU box", ("box/miou",)),
        ("mIoU mask", ("mask/miou",)),
    ),
    "img_chat": (("Accuracy", ("accuracy",)),),  # the synthetic chat's exact match (defined here)
    "vid_chat": (("Accuracy", ("accuracy",)),),
    "img_vgdseg": (
        ("AP point", ("point/ap", "point/map")),
        ("AP50 point", ("point/ap50", "point/map_50")),
        ("AP box", ("box/ap", "box/map")),
        ("AP50 box", ("box/ap50", "box/map_50")),
    ),
    "vid_genseg": (
        ("VPQ", ("vpq",)),
        ("mIoU", ("miou",)),
        ("mVC8", ("mvc8", "mvc_8")),
        ("mVC16", ("mvc16", "mvc_16")),
        ("AP", ("ap", "map")),
    ),
    "vid_ovseg": (("AP", ("ap", "map")), ("AP50", ("ap50", "map_50", "ap_50"))),
    "vid_refseg": (("J&F", ("j&f", "j&f-mean", "jf")), ("J", ("j", "j-mean")), ("F", ("f", "f-mean"))),
    "vid_reaseg": (("J&F", ("j&f", "j&f-mean", "jf")), ("J", ("j", "j-mean")), ("F", ("f", "f-mean"))),
    "vid_gcgseg": (
        ("METEOR", ("meteor",)),
        ("CIDEr", ("cider",)),
        ("Recall", ("recall",)),
        ("mIoU", ("miou",)),
    ),
    "vid_objseg": (("J&F", ("j&f", "j&f-mean", "jf")), ("J", ("j", "j-mean")), ("F", ("f", "f-mean"))),
    "vid_vgdseg": (
        ("AP point", ("point/ap", "point/map")),
        ("AP50 point", ("point/ap50", "point/map_50")),
        ("AP box", ("box/ap", "box/map")),
        ("AP50 box", ("box/ap50", "box/map_50")),
    ),
}


def _find(results: Mapping[str, float], keys: Sequence[str]) -> float | None:
    lowered = {name.lower(): value for name, value in results.items()}
    short = {name.lower().rsplit("/", 1)[-1]: value for name, value in results.items()}
    for key in keys:
        for table in (lowered, short):
            if key.lower() in table:
                return float(table[key.lower()])
    return None


def _percent(value: float | None) -> float | None:
    """Fraction -> percent with one decimal, as the paper prints; None / NaN stay missing."""
    if value is None or math.isnan(value):
        return None
    return round(100.0 * value, 1)


def headline_row(task: str, results: Mapping[str, float]) -> dict[str, float | None]:
    """The headline columns of ``task`` in percent (one decimal); an unknown task shows all its scalars."""
    columns = HEADLINE_METRICS.get(task)
    if columns is None:
        return {name: _percent(float(value)) for name, value in results.items()}
    return {label: _percent(_find(results, keys)) for label, keys in columns}


def write_results_table(
    results: Mapping[str, Mapping[str, float]],
    out_dir: str | Path,
    benchmark_names: Mapping[str, str] | None = None,
    stem: str = "results",
    row_tasks: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` in ``out_dir``: one row per task.

    Args:
        results: task id -> metric name -> value as a fraction in [0, 1] (what the metrics compute; METEOR
            and CIDEr as pycocoevalcap returns them); tasks in the given order.
        out_dir: folder to write into (created).
        benchmark_names: task id -> benchmark shown in the row (e.g. ``"RefCOCO val"``); default the task.
        stem: file name without extension.
        row_tasks: when ``results`` is keyed by something else than the task (e.g. one row per evaluated
            source: several sources may share a task), row key -> task id.

    Returns:
        ``(markdown_path, json_path)``. The markdown cells read ``PQ 55.1`` (percent, one decimal; ``-``
        where the metric is missing); the JSON keeps the same table and every raw value.
    """
    benchmark_names = benchmark_names or {}
    rows = []
    row_tasks = row_tasks or {}
    for key, values in results.items():
        task = row_tasks.get(key, key)
        values = {name: float(value) for name, value in values.items()}
        rows.append(
            {
                "task": task,
                "benchmark": benchmark_names.get(key, key),
                "metrics": headline_row(task, values),
                "raw": {name: None if math.isnan(value) else value for name, value in values.items()},
            }
        )
    width = max((len(row["metrics"]) for row in rows), default=0)
    header = ["Task", "Benchmark", *[f"Metric {i + 1}" for i in range(width)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{label} {'-' if v is None else f'{v:.1f}'}" for label, v in row["metrics"].items()]
        cells += [""] * (width - len(cells))
        lines.append("| " + " | ".join([row["task"], row["benchmark"], *cells]) + " |")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    md_path.write_text("\n".join(lines) + "\n")
    json_path.write_text(json.dumps({"unit": "percent", "rows": rows}, indent=2) + "\n")
    return md_path, json_path
