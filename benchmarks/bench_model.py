"""Model speed of the stage-1 CPU preset (tiny Hiera + pixel decoder + 3-layer mask decoder, 128x128).

What is timed (one process, ``--threads`` intra-op threads, default 1), each with
``torch.utils.benchmark.Timer.blocked_autorange``:
- ``encoder``: the mask encoder forward on the frames.
- ``forward``: encoder + pixel decoder + mask decoder forward (the whole ``Segmentor``).
- ``train step``: forward + set criterion (matching on a 32x32 point grid, loss on a 64x64 grid, aux losses
  on every layer) + backward, the work of one training step without the optimizer update.
for an image batch (B=8, T=1) and a clip (B=1, T=8), each with 3 random target tracks per sample.
Two variants run beside the preset, each reported as variant / preset: the X2SAM layout of the pixel
decoder (deformable attention over all three levels, strides 4-16; the preset keeps the stride-4 level out
of the transformer) and a pixel decoder without deformable layers (projections only, the cheapest).

Run: ``python benchmarks/bench_model.py --quick`` (writes benchmarks/results/model.{json,md}); without
``--quick``, 7 longer rounds (about 4 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils import benchmark

from x2sam_lightning.config import compose_config
from x2sam_lightning.models.criterion import SetCriterion
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.types import TrackTargets

X2SAM = "all levels deformable"
PLAIN = "no deformable layer"


def _targets(batch: int, frames: int, size: int, generator: torch.Generator) -> list[TrackTargets]:
    targets = []
    for _ in range(batch):
        n = 3
        masks = torch.rand(n, frames, size, size, generator=generator) > 0.7
        targets.append(
            TrackTargets(
                masks,
                torch.zeros(n, dtype=torch.long),
                torch.ones(n, frames, dtype=torch.bool),
                torch.arange(n),
                torch.zeros(n, dtype=torch.bool),
            )
        )
    return targets


def _workloads(
    model: Segmentor, criterion: SetCriterion, batch: int, frames: int, size: int
) -> dict[str, Callable[[], None]]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, frames, 3, size, size, generator=g)
    targets = _targets(batch, frames, size, g)

    def encoder() -> None:
        with torch.no_grad():
            model.encode(pixels)

    def forward() -> None:
        with torch.no_grad():
            model(pixels)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        criterion.weighted(criterion(model(pixels), targets)).backward()

    model.train()
    return {"encoder": encoder, "forward": forward, "train step": train_step}


def tiny_segmentor(size: int, *overrides: str) -> Segmentor:
    """The stage-1 CPU preset (``+experiment=agnostic``) at ``size``, with config overrides."""
    cfg = compose_config("agnostic", [f"data.image_size={size}", *overrides])
    return instantiate(cfg.model.segmentor)


def _median_ms(fn: Callable[[], None], min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 short rounds (about 1 minute in all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    min_run_time, num_rounds = (0.3, 3) if args.quick else (1.0, 7)
    size = 128

    criterion = SetCriterion(1, HungarianMatcher(point_grid=32), point_grid=64)
    torch.manual_seed(0)
    preset = tiny_segmentor(size)
    torch.manual_seed(0)
    variants = {"preset": preset}
    torch.manual_seed(0)
    variants[X2SAM] = tiny_segmentor(size, "model.segmentor.pixel_decoder.num_transformer_levels=3")
    torch.manual_seed(0)
    variants[PLAIN] = tiny_segmentor(
        size,
        "model.segmentor.pixel_decoder.num_layers=0",
        "model.segmentor.pixel_decoder.num_transformer_levels=3",
    )
    cases = {"images B=8 T=1": (8, 1), "clip B=1 T=8": (1, 8)}
    # Other jobs share the cores, so the variants are timed in interleaved rounds (each sees the same
    # load on average) and the best round is reported: the closest estimate of the uncontended cost.
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {name: {} for name in variants}
    for case, (batch, frames) in cases.items():
        work = {name: _workloads(model, criterion, batch, frames, size) for name, model in variants.items()}
        for part in ("encoder", "forward", "train step"):
            rounds: dict[str, list[float]] = {name: [] for name in variants}
            for name in variants:
                work[name][part]()  # warm-up (allocations, position-embedding caches)
            for _ in range(num_rounds):
                for name in variants:
                    rounds[name].append(_median_ms(work[name][part], min_run_time))
            for name, times in rounds.items():
                entry = {"best_ms": min(times), "median_ms": statistics.median(times), "rounds_ms": times}
                results[name].setdefault(case, {})[part] = entry
                print(
                    f"{name:24s} {case:16s} {part:11s} best {min(times):7.1f} ms, median {statistics.median(times):7.1f}"
                )

    load = os.getloadavg()[0]  # other jobs on the shared cores: read the numbers against it
    params = sum(p.numel() for p in variants["preset"].parameters())
    report = {
        "date": "2026-11-25",
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU",
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": num_rounds,
        "load_average_1min_at_end": round(load, 2),
        "command": "python benchmarks/bench_model.py" + (" --quick" if args.quick else ""),
        "input_size": size,
        "parameters": params,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.json").write_text(json.dumps(report, indent=2))

    rows = []
    for case in cases:
        for part in ("encoder", "forward", "train step"):
            ours = results["preset"][case][part]["best_ms"]
            x2sam = results[X2SAM][case][part]["best_ms"]
            plain = results[PLAIN][case][part]["best_ms"]
            rows.append(
                f"| {case} | {part} | {ours:.1f} | {x2sam:.1f} ({x2sam / ours:.2f}x) | {plain:.1f} ({plain / ours:.2f}x) |"
            )
    markdown = (
        f"""# Model benchmark (stage-1 CPU preset)

Date 2026-11-25; machine: {report["machine"]}; torch {torch.__version__}; {args.threads} thread(s).
Command: `python benchmarks/bench_model.py{" --quick" if args.quick else ""}`. Input {size}x{size}; preset =
`+experiment=agnostic`'s segmentor: tiny Hiera (stages 16-128, blocks 1-2-2-1) + FPN 32 with top-down into every level
(trainable), pixel decoder width 64 with 1 deformable layer (4 heads, 2 points) over strides 8 and 16 and the
FPN path to stride 4, mask decoder width 64, 16 queries, 3 layers, 32x32 mask logits; {params / 1e6:.2f}M
parameters. Train step = forward + criterion (Hungarian matching on a 32x32 point grid, BCE + dice on a
64x64 grid, CE with no-object, aux losses on all 4 predictions) + backward, no optimizer update.
Variants, same model otherwise: "{X2SAM}" = the X2SAM pixel-decoder layout (deformable attention over
strides 4, 8 and 16); "{PLAIN}" = pixel decoder of input projections only (`num_pixel_decoder_layers=0`).
Each number is the best of {num_rounds} interleaved rounds (variants alternate, so each sees the same load) of
the median of a `torch.utils.benchmark` blocked_autorange; if other jobs share the cores, the best round
is the closest estimate of the uncontended cost. 1-minute load average at the end of the run: {load:.1f}
(2 cores; above 2 means the run shared them).

| input | part | preset (ms) | {X2SAM} (ms, ratio) | {PLAIN} (ms, ratio) |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    (args.out / "model.md").write_text(markdown)


if __name__ == "__main__":
    main()
