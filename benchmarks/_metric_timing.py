"""Timing and reporting shared by the metric benchmarks (``bench_metrics_*.py``).

Both sides of every comparison are timed the same way:

- one clock, ``time.perf_counter``, around a plain call of each side's function (no harness inside);
- each function runs once untimed first (imports, caches, lazily built tables), then ``rounds`` timed
  calls, interleaved (ours core, official core, ours end-to-end, official end-to-end, ours core, ...) so
  that every side sees the same machine load;
- the best round of each side is reported (on a shared machine the closest estimate of the uncontended
  cost), and every round is kept in the JSON.

Two figures per metric:

- **core**: from data in memory, no file read. Predictions are the arrays a model hands the metric (dense
  masks or label maps); each side turns them into what its scorer takes (the official COCO / YouTube-VIS
  scorers need RLE, panopticapi and VIPSeg RGB-coded ids: that conversion is part of the official time and
  is also shown alone). Ground truth is what each scorer holds after reading its files (decoded PNGs,
  parsed JSON).
- **end-to-end**: the same plus reading the ground-truth files of the benchmark from disk, on both sides
  (PNG decoding with PIL; JSON parsing; for our metrics also decoding RLE into tensors).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

SIDES = ("core_ours", "core_official", "e2e_ours", "e2e_official")


def load_average() -> float:
    return os.getloadavg()[0]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()}-core CPU, 1 thread; torch {torch.__version__}"


def time_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmups: dict[str, Callable[[], Any]] | None = None
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time ``fns`` with the rules above.

    Args:
        fns: side name -> function (returns the side's metric values).
        rounds: timed calls per side.
        warmups: optional side name -> a cheaper untimed first call (e.g. on one video) for slow sides.

    Returns:
        ``(seconds, values)``: the timed rounds per side, and each side's returned values (from its last
        call).
    """
    values: dict[str, Any] = {}
    for name, fn in fns.items():
        values[name] = (warmups or {}).get(name, fn)()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            values[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds, values


def row(metric: str, inputs: str, scorer: str, seconds: dict[str, list[float]], **extra: Any) -> dict:
    """A result row: best round per side, speed-ups (official / ours) for core and end-to-end."""
    out: dict[str, Any] = {"metric": metric, "inputs": inputs, "official": scorer}
    for name, rounds in seconds.items():
        out[f"{name}_s"] = min(rounds)
        out[f"{name}_rounds_s"] = rounds
    for kind in ("core", "e2e"):
        if f"{kind}_official_s" in out and f"{kind}_ours_s" in out:
            out[f"{kind}_speedup"] = out[f"{kind}_official_s"] / out[f"{kind}_ours_s"]
    return out | extra


def table(rows: list[dict]) -> list[str]:
    """Markdown table of the rows (``-`` where the official scorer was absent)."""

    def cell(r: dict, key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(r[key]) if key in r else "-"

    lines = [
        "| metric | inputs | core: ours (s) | core: official (s) | core speed-up "
        "| end-to-end: ours (s) | end-to-end: official (s) | end-to-end speed-up | official scorer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['inputs']} | {cell(r, 'core_ours_s')} | {cell(r, 'core_official_s')} "
            f"| {cell(r, 'core_speedup', '{:.1f}x')} | {cell(r, 'e2e_ours_s')} | {cell(r, 'e2e_official_s')} "
            f"| {cell(r, 'e2e_speedup', '{:.1f}x')} | {r['official']} |"
        )
    return lines


def method(rounds: int, load_start: float, load_end: float) -> str:
    """The paragraph that says how the table was measured."""
    return (
        f"Both sides timed alike: `time.perf_counter` around each side's call, one untimed call first, then "
        f"{rounds} rounds interleaved across the four sides; best round shown (every round in the JSON). "
        "**Core**: from data in memory, no file read: predictions as a model hands them (dense masks / "
        "label maps), each side converting them to its scorer's input (for the official COCO-style scorers "
        "RLE encoding, for panopticapi / VIPSeg RGB-coded ids: counted in the official time); ground truth "
        "as each scorer holds it after reading its files. **End-to-end**: the same plus reading the "
        "ground-truth files from disk on both sides (PNG decoding, JSON parsing, and for ours RLE decoding "
        f"into tensors). Values checked equal on every row. 1-minute load average {load_start:.1f} at the "
        f"start, {load_end:.1f} at the end ({os.cpu_count()} cores; above that the run shared them)."
    )
