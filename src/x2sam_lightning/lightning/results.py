"""The ``test`` verb's results table: one row per evaluated source, markdown and JSON in the run folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from x2sam_lightning.metrics.report import write_results_table


def write_test_results(
    results: Mapping[str, float], run_dir: Path, tasks: Mapping[str, str]
) -> tuple[Path, Path]:
    """Group ``test/<metric>`` values by task and write ``results.md`` and ``results.json``.

    Args:
        results: what ``Trainer.test`` logged, e.g. ``{"test/ap50": 0.81}`` (one evaluated task), or
            ``{"test/<task>/<metric>": ...}`` when several tasks were scored (the metric may hold a
            ``/``, e.g. ``point/AP``).
        run_dir: the run folder.
        tasks: source name -> task id, for the benchmark column.
    """
    by_task: dict[str, dict[str, float]] = {}
    default_task = next(iter(tasks.values()), "unknown")
    for name, value in results.items():
        parts = name.split("/")
        if parts[0] != "test":
            continue
        # test/<metric> (one task) or test/<task>/<metric...> (e.g. test/img_vgdseg/point/AP)
        task, metric = (parts[1], "/".join(parts[2:])) if len(parts) >= 3 else (default_task, parts[1])
        by_task.setdefault(task, {})[metric] = float(value)
    benchmarks = {}
    for source, task in tasks.items():
        benchmarks[task] = f"{benchmarks[task]}, {source}" if task in benchmarks else source
    return write_results_table(by_task, run_dir, benchmark_names=benchmarks)
