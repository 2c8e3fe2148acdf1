"""Cost of the mask memory on the stage-1 CPU preset (128x128), and that it stays flat with the video length.

What is timed (one process, ``--threads`` intra-op threads, default 1; ``torch.utils.benchmark``):
- per frame of a clip (B=1, T=8): the segmentor forward (no grad) and a training step (forward + set
  criterion + backward), without memory (``model/mask_memory=none``, the baseline of the same run) and with
  the ``tiny`` and ``default`` memories; reported as ms per frame and the ratio to the baseline;
- streaming: a video of T frames decoded in chunks of 8 frames (encoder included) through the ``tiny``
  memory with the bank carried over and detached, at several T: ms per frame and the bank's bytes after the
  last frame. Flat in T is the claim (docs/video.md, "Cost per frame").

Run: ``python benchmarks/bench_mask_memory.py --quick`` (writes benchmarks/results/mask_memory.{json,md}).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils import benchmark

from x2sam_lightning.config import compose_config
from x2sam_lightning.models.criterion import SetCriterion
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.models.memory_bank import MemoryBank
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.types import TrackTargets

SIZE = 128
# name -> overrides; two cheaper variants of the CPU preset: its memory stored at the coarsest level, and
# the finest level (stride 4, most tokens) reading no memory.
VARIANTS = {
    "none": ["model/mask_memory=none"],
    "tiny": ["model/mask_memory=tiny"],
    "tiny, stride 16": ["model/mask_memory=tiny", "model.segmentor.mask_memory.memory_level=0"],
    "tiny, 2 levels": ["model/mask_memory=tiny", "model.segmentor.mask_memory.read_levels=2"],
    "default": ["model/mask_memory=default"],
}
MEMORIES = tuple(VARIANTS)


def segmentor(memory: str) -> Segmentor:
    torch.manual_seed(0)
    cfg = compose_config("agnostic", [f"data.image_size={SIZE}", *VARIANTS[memory]])
    return instantiate(cfg.model.segmentor)


def _targets(frames: int, g: torch.Generator) -> list[TrackTargets]:
    masks = torch.rand(3, frames, SIZE, SIZE, generator=g) > 0.7
    return [
        TrackTargets(
            masks,
            torch.zeros(3, dtype=torch.long),
            torch.ones(3, frames, dtype=torch.bool),
            torch.arange(3),
            torch.zeros(3, dtype=torch.bool),
        )
    ]


def _median_ms(fn: Callable[[], None], min_run_time: float) -> float:
    return (
        benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median
        * 1e3
    )


def bank_bytes(bank: MemoryBank) -> int:
    return sum(f.numel() * f.element_size() for entry in bank.entries for f in entry.features)


def stream(model: Segmentor, video: torch.Tensor, chunk: int) -> tuple[MemoryBank, float]:
    """Decode ``video [1, T, 3, H, W]`` chunk by chunk through the memory (the seam streaming uses); returns
    the last bank and the seconds the last chunk took."""
    bank = model.mask_memory.empty(detach=True)
    with torch.no_grad():
        for start in range(0, video.shape[1], chunk):
            began = time.perf_counter()
            part = video[:, start : start + chunk]
            _, bank = model.decode_with_memory(model.encode(part), part.shape[1], memory=bank)
            last = time.perf_counter() - began
    return bank, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, streaming up to 64 frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    min_run_time, num_rounds = (0.2, 1) if args.quick else (1.0, 3)
    lengths = (8, 32, 64) if args.quick else (8, 64, 256)
    frames, chunk = 8, 8

    g = torch.Generator().manual_seed(0)
    clip = torch.randn(1, frames, 3, SIZE, SIZE, generator=g)
    targets = _targets(frames, g)
    criterion = SetCriterion(1, HungarianMatcher(point_grid=32), point_grid=64)
    models = {name: segmentor(name).train() for name in MEMORIES}

    def workloads(model: Segmentor) -> dict[str, Callable[[], None]]:
        def forward() -> None:
            with torch.no_grad():
                model(clip)

        def train_step() -> None:
            model.zero_grad(set_to_none=True)
            criterion.weighted(criterion(model(clip), targets)).backward()

        return {"forward": forward, "train step": train_step}

    per_frame: dict[str, dict[str, float]] = {name: {} for name in MEMORIES}
    work = {name: workloads(model) for name, model in models.items()}
    for part in ("forward", "train step"):
        rounds: dict[str, list[float]] = {name: [] for name in MEMORIES}
        for name in MEMORIES:
            work[name][part]()  # warm-up
        for _ in range(num_rounds):  # interleaved: each variant sees the same load on average
            for name in MEMORIES:
                rounds[name].append(_median_ms(work[name][part], min_run_time) / frames)
        for name in MEMORIES:
            per_frame[name][part] = min(rounds[name])
            print(f"{name:8s} {part:10s} {per_frame[name][part]:8.1f} ms/frame (best of {num_rounds})")

    streaming = []
    model = models["tiny"].eval()
    stream(model, torch.randn(1, chunk, 3, SIZE, SIZE), chunk)  # warm-up
    for length in lengths:
        video = torch.randn(1, length, 3, SIZE, SIZE, generator=g)
        times, last_chunk = [], []
        for _ in range(max(num_rounds, 2)):
            start = time.perf_counter()
            bank, last = stream(model, video, chunk)
            times.append((time.perf_counter() - start) * 1e3 / length)
            last_chunk.append(last * 1e3 / chunk)
        streaming.append(
            {
                "frames": length,
                "ms_per_frame": min(times),
                "last_chunk_ms_per_frame": min(last_chunk),
                "bank_bytes": bank_bytes(bank),
            }
        )
        print(
            f"stream T={length:4d}: {min(times):7.1f} ms/frame, last chunk {min(last_chunk):7.1f} ms/frame, "
            f"bank {bank_bytes(bank) / 1e6:.2f} MB"
        )

    load = os.getloadavg()[0]
    date = datetime.date.today().isoformat()
    command = "python benchmarks/bench_mask_memory.py" + (" --quick" if args.quick else "")
    report = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU",
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": num_rounds,
        "load_average_1min_at_end": round(load, 2),
        "command": command,
        "input_size": SIZE,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "per_frame_ms": per_frame,
        "streaming": streaming,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mask_memory.json").write_text(json.dumps(report, indent=2))

    base = per_frame["none"]
    rows = [
        f"| {name} | {report['parameters'][name] / 1e6:.2f}M | {per_frame[name]['forward']:.1f} "
        f"({per_frame[name]['forward'] / base['forward']:.2f}x) | {per_frame[name]['train step']:.1f} "
        f"({per_frame[name]['train step'] / base['train step']:.2f}x) |"
        for name in MEMORIES
    ]
    # The shortest video's last chunk is its first (the bank still filling): the steady base is the next.
    first, steady = streaming[0]["ms_per_frame"], streaming[1]["last_chunk_ms_per_frame"]
    stream_rows = [
        f"| {s['frames']} | {s['ms_per_frame']:.1f} ({s['ms_per_frame'] / first:.2f}x) | "
        f"{s['last_chunk_ms_per_frame']:.1f} ({s['last_chunk_ms_per_frame'] / steady:.2f}x) | "
        f"{s['bank_bytes'] / 1e6:.2f} |"
        for s in streaming
    ]
    markdown = (
        f"""# Mask memory benchmark (stage-1 CPU preset)

Date {date}; machine: {report["machine"]}; torch {torch.__version__}; {args.threads} thread(s).
Command: `{command}`. Input {SIZE}x{SIZE}; the `+experiment=agnostic` segmentor with
`model/mask_memory=none|tiny|default` (docs/video.md); "tiny, stride 16" is `tiny` with
`memory_level=0` (memory stored at 8x8 instead of 16x16), "tiny, 2 levels" is `tiny` with `read_levels=2`
(the stride-4 level reads no memory). Per frame of a clip B=1, T={frames}: forward without
gradients, and a training step (forward + set criterion + backward, no optimizer update); ratio to `none` in
the same run; best of {num_rounds} interleaved round(s). 1-minute load average at the end: {load:.1f} (2 cores;
above 2 means other jobs shared them: read the ratios, not the absolute times).

| memory | parameters (segmentor) | forward ms/frame | train step ms/frame |
|---|---|---|---|
"""
        + "\n".join(rows)
        + f"""

Streaming through the `tiny` memory: a video of T frames in chunks of {chunk} (encoder included), the
detached bank carried from chunk to chunk (`Segmentor.decode_with_memory`); time per frame over the whole
video (ratio to the shortest) and over its last chunk (ratio to the second shortest, the first whose last
chunk reads a full bank), and the bank's size after the last frame. The first K = 6 frames read a bank still
filling up, so they cost less: the whole-video average rises towards the steady cost over the first chunks;
the last chunk's cost is the steady one.

| frames | ms/frame, whole video | ms/frame, last chunk | bank (MB) |
|---|---|---|---|
"""
        + "\n".join(stream_rows)
        + "\n"
    )
    (args.out / "mask_memory.md").write_text(markdown)


if __name__ == "__main__":
    main()
