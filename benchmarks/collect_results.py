"""Rebuild ``benchmarks/RESULTS.md`` from the per-benchmark reports in ``benchmarks/results/*.md``.

Each ``bench_*.py`` writes its own markdown (with machine and date) and JSON; ``nox -s bench`` runs them
all and then this script, so RESULTS.md always shows the latest run of every benchmark.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["loader", "model", "training", "metrics_panoptic", "metrics_video", "metrics_text"]


def main() -> None:
    reports = {path.stem: path for path in (HERE / "results").glob("*.md")}
    names = [n for n in ORDER if n in reports] + sorted(set(reports) - set(ORDER))
    parts = [
        "# Benchmark results\n",
        "Each section is written by its script (`nox -s bench` runs them all; `-- --quick` for short runs)",
        "and states the machine and date it was measured on. Raw numbers: `benchmarks/results/*.json`.\n",
    ]
    for name in names:
        text = reports[name].read_text().strip()
        parts.append("#" + text if text.startswith("# ") else text)  # demote to a section
        parts.append("")
    (HERE / "RESULTS.md").write_text("\n".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
