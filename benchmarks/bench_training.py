"""Stage 1 on the embedded default: wall time, AP50 at initialisation, and the validation curve.

Runs ``python -m x2sam_lightning validate +experiment=agnostic`` (the untrained model: same seed, same
initial weights as the fit) and then ``fit +experiment=agnostic`` exactly as the README's first command,
in a fresh output folder (the synthetic data is reused from ``--data-dir`` if it is already there), and
writes ``benchmarks/results/training.{json,md}``. ``--quick`` trains 200 steps.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def _run(verb: str, data_dir: str, out_dir: str, extra: list[str]) -> tuple[float, str]:
    args = [sys.executable, "-m", "x2sam_lightning", verb, "+experiment=agnostic"]
    args += [f"paths.data_dir={data_dir}", f"paths.output_dir={out_dir}", "trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    result = subprocess.run(args + extra, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{verb} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start, result.stdout


def _curve(out_dir: str) -> list[dict[str, float]]:
    (metrics_csv,) = Path(out_dir, "agnostic", "fit").glob("*/logs/metrics.csv")
    rows = []
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("val/ap50"):
                rows.append({k: float(row[k]) for k in ("step", "val/ap50", "val/ap", "val/ar10")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 training steps instead of the preset's")
    parser.add_argument(
        "--data-dir", default="data", help="where the synthetic data is (generated if absent)"
    )
    args = parser.parse_args()
    extra = ["trainer.max_steps=200", "trainer.val_check_interval=100"] if args.quick else []
    with tempfile.TemporaryDirectory() as out_dir:
        init_seconds, _ = _run("validate", args.data_dir, out_dir, [])
        (init_file,) = Path(out_dir, "agnostic", "validate").glob("*/validate_metrics.json")
        init = json.loads(init_file.read_text())
        fit_seconds, _ = _run("fit", args.data_dir, out_dir, extra)
        curve = _curve(out_dir)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "command": "python -m x2sam_lightning fit +experiment=agnostic"
        + (" " + " ".join(extra) if extra else ""),
        "fit_wall_seconds": round(fit_seconds, 1),
        "init_val_ap50": init["val/ap50"],
        "curve": curve,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Stage-1 training on the embedded default",
        "",
        f"Date {result['date']}; machine: {result['machine']}. Command: `{result['command']}` (wall time "
        f"includes start-up and validation; the synthetic data already existed). Script: "
        f"`python benchmarks/bench_training.py`.",
        "",
        f"Wall time of the fit: **{fit_seconds / 60:.1f} min**. Held-out class-agnostic AP50 at "
        f"initialisation: {init['val/ap50']:.3f}; at the end: **{curve[-1]['val/ap50']:.3f}**.",
        "",
        "| step | AP50 | AP | AR@10 |",
        "|---|---|---|---|",
        *[
            f"| {r['step'] + 1:.0f} | {r['val/ap50']:.3f} | {r['val/ap']:.3f} | {r['val/ar10']:.3f} |"
            for r in curve
        ],
    ]
    (HERE / "results" / "training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"(validate at init took {init_seconds:.0f} s)")


if __name__ == "__main__":
    main()
