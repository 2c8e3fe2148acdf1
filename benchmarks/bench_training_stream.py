"""Training stream: the cost of exact resume (planned batches, samples read by position) against the
streamed reader (shards read in order through a shuffle buffer, ``iter_source(train=True)``), same run.

Three numbers, one process, one thread, no DataLoader workers (so the data path alone is timed):

- ``planned``: ``MixedBatchStream`` over one source (plan, random access by position, decode, collate);
- ``streamed``: ``iter_source(train=True)`` samples of the same source, collated into batches of the same
  size (the reader the training stream used before exact resume);
- ``plan only``: ``BatchPlanner.next`` for an image and a video source, the work every reader repeats for
  batches that other readers build (video planning reads each sample's json).

``python benchmarks/bench_training_stream.py [--quick]`` writes ``results/training_stream.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from itertools import islice
from pathlib import Path

import torch
from torch.utils import benchmark

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.mixing import MixedBatchStream
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import generate_synthetic
from x2sam_lightning.data.transforms import ResizePadNormalize

DATE = "2026-11-30"


def _planned(source: ShardSource, batches: int, batch: int, size: int, clip: int) -> None:
    stream = MixedBatchStream({source.name: source}, batch_size=batch, video_batch_size=batch,
                              image_size=size, clip_length=clip, shuffle_buffer=64)  # fmt: skip
    for _ in islice(iter(stream), batches):
        pass


def _streamed(source: ShardSource, batches: int, batch: int, size: int, clip: int) -> None:
    samples = iter_source(source, ResizePadNormalize(size), ClipSampler(clip), train=True, shuffle_buffer=64)
    for _ in range(batches):
        collate_samples(list(islice(samples, batch)))


def _plan_only(source: ShardSource, batches: int, batch: int, clip: int) -> None:
    stream = MixedBatchStream(
        {source.name: source}, batch_size=batch, video_batch_size=batch, clip_length=clip
    )
    planner = stream.planner(stream.accesses())
    for _ in range(batches):
        planner.next()


def _time(fn, per: int, min_run_time: float) -> dict[str, float]:
    fn()  # warm-up: file cache, codec initialisation
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=min_run_time
    )
    return {"ms_per_batch": 1000 * measurement.median / per, "passes": len(measurement.times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small set, short timing (about 1 minute)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--clip", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = (
        dict(num_train_images=96, num_train_videos=16)
        if args.quick
        else dict(num_train_images=512, num_train_videos=64)
    )
    min_run_time = 1.0 if args.quick else 5.0
    batches, batch, video_batch = 8, 8, 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_synthetic(root, image_size=args.image_size, num_val_images=0, num_val_videos=0,
                           num_test_images=0, num_test_videos=0, frames=16, **sizes)  # fmt: skip
        images = ShardSource("img", root / "synthetic_img-train.index.json")
        videos = ShardSource("vid", root / "synthetic_vid-train.index.json")
        size, clip = args.image_size, args.clip
        results = {}
        for name, source, per_batch in (("images", images, batch), ("video_clips", videos, video_batch)):
            planned = _time(
                lambda s=source, b=per_batch: _planned(s, batches, b, size, clip), batches, min_run_time
            )
            streamed = _time(
                lambda s=source, b=per_batch: _streamed(s, batches, b, size, clip), batches, min_run_time
            )
            plan = _time(lambda s=source, b=per_batch: _plan_only(s, 1000, b, clip), 1000, min_run_time)
            results[name] = {
                "batch_size": per_batch,
                "planned": planned,
                "streamed": streamed,
                "plan_only": plan,
                "ratio_planned_over_streamed": planned["ms_per_batch"] / streamed["ms_per_batch"],
            }
    report = {
        "date": DATE,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()}-core CPU",
        "load_average_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "settings": {**sizes, "image_size": args.image_size, "clip": args.clip, "quick": args.quick},
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_stream.json").write_text(json.dumps(report, indent=2))
    rows = "\n".join(
        f"| {name} | {r['batch_size']} | {r['planned']['ms_per_batch']:.2f} | {r['streamed']['ms_per_batch']:.2f} | "
        f"{r['ratio_planned_over_streamed']:.2f} | {1000 * r['plan_only']['ms_per_batch']:.0f} |"
        for name, r in results.items()
    )
    markdown = f"""# Training stream: exact resume against the streamed reader

Date {DATE}; machine: {report["machine"]} (1-minute load average {report["load_average_1min"]:.1f} when it
ended); one process, one thread, no DataLoader workers. Command: `python
benchmarks/bench_training_stream.py{" --quick" if args.quick else ""}`. Data: {sizes["num_train_images"]}
synthetic {size}x{size} PNG images, {sizes["num_train_videos"]} videos of 16 frames, clips of {clip}.
*Planned* = `MixedBatchStream` (the batch plan, samples read by position, decode, collate); *streamed* =
`iter_source(train=True)` (shards in order through a shuffle buffer) collated into batches of the same
size; *plan only* = `BatchPlanner.next`, the work each reader repeats for the batches other readers build.

| media | batch | planned (ms/batch) | streamed (ms/batch) | planned / streamed | plan only (us/batch) |
|---|---|---|---|---|---|
{rows}
"""
    (out / "training_stream.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
