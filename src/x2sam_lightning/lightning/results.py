"""The ``test`` verb's results table: one row per evaluated source, markdown and JSON in the run folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from x2sam_lightning.metrics.report import write_results_table


def write_test_results(
    results: Mapping[str, float],
    run_dir: Path,
    tasks: Mapping[str, str],
    templates: Mapping[str, list[str]] | None = None,
) -> tuple[Path, Path]:
    """Group ``test/...`` values by evaluated source and write ``results.md`` and ``results.json``.

    Args:
        results: what ``Trainer.test`` logged: ``{"test/<source>/<metric>": ...}`` (the metric may hold a
            ``/``, e.g. ``point/AP``), or ``{"test/<metric>": ...}`` when one source was scored (stage 1).
        run_dir: the run folder.
        tasks: evaluated source name -> task id (the row's task; the source is its benchmark).
        templates: source -> the instruction wordings its evaluation used (recorded in the JSON).
    """
    by_source: dict[str, dict[str, float]] = {}
    only = next(iter(tasks), "unknown")
    for name, value in results.items():
        parts = name.split("/")
        if parts[0] != "test" or len(parts) < 2:
            continue
        source, metric = (
            (parts[1], "/".join(parts[2:]))
            if parts[1] in tasks and len(parts) > 2
            else (only, "/".join(parts[1:]))
        )
        by_source.setdefault(source, {})[metric] = float(value)
    paths = write_results_table(
        by_source, run_dir, benchmark_names={s: s for s in by_source}, row_tasks=dict(tasks)
    )
    if templates:
        table = json.loads(paths[1].read_text())
        table["templates"] = {source: list(ids) for source, ids in templates.items()}
        paths[1].write_text(json.dumps(table, indent=2) + "\n")
    return paths
