"""Loader throughput: our shard pipeline against raw decoding of the same media from the same shards.

What is timed (one process, no DataLoader workers, so the numbers are per core):
- ours, images: ``iter_source`` (tar read, json validation, PIL decode, RLE masks, resize/pad/normalise).
- raw, images: the same tar members, PIL decode to a numpy array only.
- ours, video clips: the same pipeline with a first-clip sampler of ``--clip`` frames (decord + masks).
- raw, video clips: the same tar members, ``decord.VideoReader(BytesIO)`` + ``get_batch`` of that clip.
The ratio ours / raw is the price of validation, masks and transforms on top of decoding.

Run: ``python benchmarks/bench_loader.py --quick`` (writes benchmarks/results/loader.{json,md}).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import generate_synthetic
from x2sam_lightning.data.transforms import ResizePadNormalize


def _members(urls: list[str], ext: str) -> list[bytes]:
    out = []
    for url in urls:
        with tarfile.open(url) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith("." + ext)]
    return out


def _raw_images(urls: list[str]) -> int:
    from PIL import Image

    n = 0
    for url in urls:
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png"):
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                        np.asarray(image.convert("RGB"))
                    n += 1
    return n


def _raw_clips(urls: list[str], clip: int) -> int:
    import decord

    n = 0
    for url in urls:
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    reader = decord.VideoReader(io.BytesIO(tar.extractfile(member).read()), num_threads=1)
                    reader.get_batch(list(range(min(clip, len(reader))))).asnumpy()
                    n += 1
    return n


def _ours(source: ShardSource, image_size: int, clip: int) -> int:
    stream = iter_source(source, ResizePadNormalize(image_size), ClipSampler(clip, mode="first"), train=False)
    return sum(1 for _ in stream)


def _time(fn, count: int, min_run_time: float) -> dict[str, float]:
    fn()  # warm-up: file cache, codec initialisation
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=min_run_time
    )
    per_pass = measurement.median
    return {
        "ms_per_item": 1000 * per_pass / count,
        "items_per_s": count / per_pass,
        "passes": len(measurement.times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small set, short timing (about 30 s)")
    parser.add_argument("--root", default=None, help="data folder (default: a temp folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--clip", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = (
        dict(num_train_images=96, num_train_videos=16, frames=16)
        if args.quick
        else dict(num_train_images=512, num_train_videos=64, frames=16)
    )
    min_run_time = 1.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        start = time.perf_counter()
        generate_synthetic(
            root,
            image_size=args.image_size,
            num_val_images=0,
            num_val_videos=0,
            num_test_images=0,
            num_test_videos=0,
            **sizes,
        )
        generation_s = time.perf_counter() - start
        images = ShardSource("img", root / "synthetic_img-train.index.json")
        videos = ShardSource("vid", root / "synthetic_vid-train.index.json")
        n_img, n_vid = images.num_samples, videos.num_samples
        results = {
            "images": {
                "ours": _time(lambda: _ours(images, args.image_size, args.clip), n_img, min_run_time),
                "raw_pil": _time(lambda: _raw_images(images.urls), n_img, min_run_time),
            },
            "video_clips": {
                "ours": _time(lambda: _ours(videos, args.image_size, args.clip), n_vid, min_run_time),
                "raw_decord": _time(lambda: _raw_clips(videos.urls, args.clip), n_vid, min_run_time),
            },
        }
        mean_png = float(np.mean([len(b) for b in _members(images.urls, "png")]))
        mean_mp4 = float(np.mean([len(b) for b in _members(videos.urls, "mp4")]))
    for name, entry in results.items():
        baseline = entry["raw_pil" if name == "images" else "raw_decord"]
        entry["ratio_ours_over_raw"] = entry["ours"]["ms_per_item"] / baseline["ms_per_item"]
    report = {
        "date": "2026-11-29",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()}-core CPU",
        "torch_threads": torch.get_num_threads(),
        "settings": {**sizes, "image_size": args.image_size, "clip": args.clip, "quick": args.quick},
        "generation_s": generation_s,
        "mean_png_bytes": mean_png,
        "mean_mp4_bytes": mean_mp4,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(report, indent=2))
    img, vid = results["images"], results["video_clips"]
    markdown = f"""# Loader benchmark

Date 2026-11-29; machine: {report["machine"]}; one process, one thread, no DataLoader workers.
Command: `python benchmarks/bench_loader.py{" --quick" if args.quick else ""}`. Data: {n_img} synthetic
{args.image_size}x{args.image_size} PNG images, {n_vid} videos of {sizes["frames"]} frames (H.264 mp4),
clips of {args.clip} frames. Raw = decode only (PIL / decord) from the same tar shards; ours = the full
pipeline (tar, json validation, decode, RLE masks, resize/pad/normalise to SegSample).

| media | ours (ms/item) | ours (items/s) | raw (ms/item) | raw (items/s) | ours / raw |
|---|---|---|---|---|---|
| image | {img["ours"]["ms_per_item"]:.2f} | {img["ours"]["items_per_s"]:.0f} | {img["raw_pil"]["ms_per_item"]:.2f} | {img["raw_pil"]["items_per_s"]:.0f} | {img["ratio_ours_over_raw"]:.2f} |
| video clip | {vid["ours"]["ms_per_item"]:.2f} | {vid["ours"]["items_per_s"]:.0f} | {vid["raw_decord"]["ms_per_item"]:.2f} | {vid["raw_decord"]["items_per_s"]:.0f} | {vid["ratio_ours_over_raw"]:.2f} |

Generation of this set took {generation_s:.1f} s.
"""
    (out / "loader.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
