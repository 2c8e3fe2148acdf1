"""Rebuild ``benchmarks/RESULTS.md`` from the per-benchmark reports in ``benchmarks/results/*.md``.

Each ``bench_*.py`` writes its own markdown (with machine and date) and JSON; ``nox -s bench`` runs them
all and then this script, so RESULTS.md always shows the latest run of every benchmark. Before the metric
sections it puts one table of every metric's core and end-to-end speed-up, read from their JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "loader",
    "loader_384",
    "training_stream",
    "recipes",
    "model",
    "training",
    "joint_batching",
    "joint_image",
    "referring_kinds",
    "joint",
    "memory_ablation",
    "mask_memory",
    "streaming",
    "streaming_rss",
    "metrics_panoptic",
    "metrics_video",
    "metrics_text",
]
METRIC_REPORTS = ["metrics_video", "metrics_panoptic", "metrics_text"]


def metric_summary() -> list[str]:
    """One row per metric of the metric benchmarks' JSON (core and end-to-end speed-ups)."""
    rows = []
    for name in METRIC_REPORTS:
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        for r in report.get("results", report.get("rows", [])):
            if "core_speedup" not in r:
                continue
            e2e = "= core" if r.get("e2e") == "= core" else f"{r['e2e_speedup']:.1f}x"
            rows.append(f"| {r['metric']} | {r['core_speedup']:.1f}x | {e2e} | {name} |")
    if not rows:
        return []
    return [
        "## Metric speed-ups at a glance",
        "",
        "Official scorer time / our time, both sides measured the same way in one run (sections below: "
        "method, inputs, seconds, and the profiles of the rows under 10x).",
        "",
        "| metric | core | end-to-end | section |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    reports = {path.stem: path for path in (HERE / "results").glob("*.md")}
    names = [n for n in ORDER if n in reports] + sorted(set(reports) - set(ORDER))
    parts = [
        "# Benchmark results\n",
        "Each section is written by its script (`nox -s bench` runs them all; `-- --quick` for short runs)",
        "and states the machine and date it was measured on. Raw numbers: `benchmarks/results/*.json`.\n",
    ]
    summary_done = False
    for name in names:
        if name.startswith("metrics_") and not summary_done:
            parts.extend(metric_summary())
            summary_done = True
        text = reports[name].read_text().strip()
        parts.append("#" + text if text.startswith("# ") else text)  # demote to a section
        parts.append("")
    (HERE / "RESULTS.md").write_text("\n".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
