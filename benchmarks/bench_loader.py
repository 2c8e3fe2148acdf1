"""Loader throughput: our training loader against raw decoding of the same shards, both with DataLoader
workers, in the same run; plus where our per-sample time goes.

Throughput (samples/s, ``--workers`` DataLoader workers on every side, default 2):
- ours: ``SegDataModule.train_dataloader()`` over one source (strict tar reading, json validation, media
  decoding, RLE masks resized and padded, temporal grouping, collation into a ``SegBatch`` of uint8 frames).
  The model input (resize, normalise, pad) is made where the batch is moved: on the GPU in a GPU run.
- ours + model input on CPU: the same with ``batch.to("cpu")`` in the main process, in the timed loop (what
  a CPU-only run pays), so no work leaves the measurement.
- raw: the same tar shards read with ``tarfile``, each image decoded with PIL (``convert("RGB")``) and each
  video clip (``--clip`` consecutive frames at a random start) with ``decord``, to uint8 tensors, batched by
  the DataLoader's default collate. Nothing else: the lower bound of any loader of these shards.
Each repeat times every side, the order rotating (other jobs share the machine), after ``--warmup``
batches (worker start-up excluded); the medians over ``--repeats`` are reported with the ratio to raw
(1.0 = raw decode speed; the target is >= 0.8), and the CPU time (user + system) of the main process and
the workers per sample, which other jobs disturb far less than wall time.

Profile (one process, no workers): the CPU time of each stage of raw decoding and of our pipeline.

Run: ``python benchmarks/bench_loader.py --quick`` (writes benchmarks/results/loader.{json,md}).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.rle import decode_runs
from x2sam_lightning.data.schema import check_mask_runs, parse_json, validate_sample
from x2sam_lightning.data.shards import ClipSampler, decode_sample, resize_nearest
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import generate_synthetic
from x2sam_lightning.data.tars import read_shard
from x2sam_lightning.data.transforms import ResizePadNormalize


class RawDecode(IterableDataset):
    """Endless raw decoding of a shard list's media (PIL images or decord clips) as uint8 tensors."""

    def __init__(self, urls: list[str], ext: str, clip: int, seed: int = 0) -> None:
        self.urls, self.ext, self.clip, self.seed = urls, ext, clip, seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed, worker])
        mine = self.urls[worker::workers] or self.urls
        while True:
            for url in mine:
                with tarfile.open(url, "r|") as tar:
                    for member in tar:
                        if member.name.endswith("." + self.ext):
                            yield self._decode(tar.extractfile(member).read(), rng)

    def _decode(self, data: bytes, rng: np.random.Generator) -> torch.Tensor:
        if self.ext == "mp4":
            import decord

            reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
            start = int(rng.integers(0, max(1, len(reader) - self.clip + 1)))
            frames = reader.get_batch(list(range(start, min(len(reader), start + self.clip)))).asnumpy()
            return torch.from_numpy(frames)
        from PIL import Image

        # PIL's array is read-only (torch warns); raw decoding does not copy it.
        with Image.open(io.BytesIO(data)) as image, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.asarray(image.convert("RGB")))[None]


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of the DataLoader worker processes ``pids``."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def _rate(
    loader: DataLoader, batch_samples: int, warmup: int, batches: int, finish: Callable[[object], object]
) -> tuple[float, float]:
    """Samples per second and CPU ms per sample (all processes) over ``batches`` batches after ``warmup``
    (worker start-up excluded)."""
    iterator = iter(loader)
    for _ in range(warmup):
        finish(next(iterator))
    # The worker processes: of the iterator, or of the DataLoader iterator ours keeps across epochs.
    inner = getattr(loader, "_batches", None)  # (no `or`: a DataLoader iterator's len() may raise)
    inner = getattr(loader, "_iterator", None) if inner is None else inner
    workers = getattr(iterator, "_workers", None) or getattr(inner, "_workers", [])
    pids = [worker.pid for worker in workers]
    if len(pids) != loader.num_workers:
        raise RuntimeError(f"found {len(pids)} of the {loader.num_workers} worker processes to time")
    start, cpu = time.perf_counter(), _cpu_seconds(pids)
    for _ in range(batches):
        finish(next(iterator))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
    del iterator  # stops the workers
    samples = batches * batch_samples
    return samples / seconds, 1000 * cpu / samples


def _ours(source: ShardSource, args: argparse.Namespace, batch_size: int, seed: int) -> DataLoader:
    dm = SegDataModule(
        {source.name: source},
        batch_size=batch_size,  # one source: image batches = batch_size x 1, video batches = batch_size
        image_batch_multiplier=1,
        num_workers=args.workers,
        image_size=args.image_size,
        clip_length=args.clip,
        seed=seed,
        shuffle_buffer=args.shuffle_buffer,
        epoch_samples=10**9,  # one epoch outlasts the timed batches (an epoch's end stops the iterator)
    )
    return dm.train_dataloader()


def _raw(source: ShardSource, args: argparse.Namespace, batch_size: int, seed: int) -> DataLoader:
    ext = "mp4" if source.modality == "video" else "png"
    dataset = RawDecode(source.urls, ext, args.clip, seed)
    return DataLoader(dataset, batch_size=batch_size, num_workers=args.workers, persistent_workers=False)


def _to_model_input(batch: object) -> object:
    return batch.to("cpu")  # uint8 frames -> model input (on a GPU run: on the GPU)


def _nothing(batch: object) -> object:
    return batch


#: The sides timed in each repeat: our loader (the model input made on the device, as in a GPU run), our
#: loader with the model input made on this CPU in the loop (a CPU-only run), and raw decoding.
SIDES = ("ours", "ours + model input on CPU", "raw")


def throughput(source: ShardSource, args: argparse.Namespace, batch_size: int) -> dict:
    """Median samples/s and CPU ms per sample of each side over interleaved repeats (the order of the
    sides rotates from repeat to repeat)."""
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        shift = repeat % len(SIDES)
        for side in SIDES[shift:] + SIDES[:shift]:
            build = _raw if side == "raw" else _ours
            loader = build(source, args, batch_size, seed=repeat)
            finish = _to_model_input if side == "ours + model input on CPU" else _nothing
            rate, cpu_ms = _rate(loader, batch_size, args.warmup, args.batches, finish)
            rates[side].append(rate)
            cpu[side].append(cpu_ms)
    out: dict = {"batch_size": batch_size, "rates": rates, "cpu_ms_per_sample": cpu}
    raw, raw_cpu = statistics.median(rates["raw"]), statistics.median(cpu["raw"])
    for side in SIDES:
        rate, cpu_ms = statistics.median(rates[side]), statistics.median(cpu[side])
        out[side] = {
            "samples_per_s": rate,
            "ratio": rate / raw,
            "ratio_per_repeat": [o / r for o, r in zip(rates[side], rates["raw"])],
            "cpu_ms_per_sample": cpu_ms,
            "cpu_ratio": raw_cpu / cpu_ms,
        }
    return out


def _cpu_ms(fn: Callable[[], object], count: int, rounds: int) -> float:
    """CPU ms per item of ``fn`` (this process), the least of ``rounds`` runs."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1000 * min(times) / count


def profile(source: ShardSource, args: argparse.Namespace, rounds: int) -> dict[str, float]:
    """CPU ms per sample of each stage of raw decoding and of our pipeline (one process, least of
    ``rounds``; random clip starts from the same seed on both sides)."""
    raws = [s for url in source.urls for s in read_shard(url)]
    clip = ClipSampler(args.clip, mode="random")
    transform = ResizePadNormalize(args.image_size)
    decoded = [decode_sample(r, clip, mask_size=transform.mask_size) for r in raws]
    samples = [transform(d) for d in decoded]
    for sample in samples:
        sample.source = source.name
    batch = args.batch_size if source.modality == "image" else 1
    n = len(raws)
    batches = [collate_samples(samples[i : i + batch]) for i in range(0, n - batch + 1, batch)]
    ext = "mp4" if source.modality == "video" else "png"
    media = RawDecode(source.urls, ext, args.clip)

    def raw_tar() -> None:
        for url in source.urls:
            with tarfile.open(url, "r|") as tar:
                for member in tar:
                    tar.extractfile(member).read()

    def raw_media() -> None:
        rng = np.random.default_rng(0)
        for raw in raws:
            media._decode(raw[ext], rng)

    def validate() -> None:
        for raw in raws:
            sample = validate_sample(parse_json(raw["json"]), check_runs=False)
            check_mask_runs(sample, set(range(min(args.clip, sample["num_frames"]))))

    def decode() -> None:
        rng = np.random.default_rng(0)
        for raw in raws:
            decode_sample(raw, clip, rng, mask_size=transform.mask_size)

    checked = []
    for raw, item in zip(raws, decoded):
        sample = validate_sample(parse_json(raw["json"]), check_runs=False)
        runs = check_mask_runs(sample, set(item.frame_indices))
        checked.append((list(runs.values()), sample["height"], sample["width"], item.masks.shape[-2:]))

    def masks() -> None:
        for runs, height, width, size in checked:
            stack = decode_runs(runs, height, width)
            if stack.shape[-2:] != size:
                stack = resize_nearest(stack, size)
            np.empty(stack.shape, dtype=bool)[...] = stack  # laid out in the sample's mask stack

    def collate() -> None:
        for i in range(0, n - batch + 1, batch):
            collate_samples(samples[i : i + batch])

    stages = {
        "raw: tar reading (tarfile stream)": raw_tar,
        "raw: media decoding (PIL / decord)": raw_media,
        "tar reading (strict)": lambda: [s for url in source.urls for s in read_shard(url)],
        "decode_sample (json + schema + media + masks)": decode,
        "json + schema + RLE run sums": validate,
        "masks: decoded from their runs, resized, laid out": masks,
        "transform (masks resized and padded; pixels stay uint8)": lambda: [transform(d) for d in decoded],
        "collate (one copy of the uint8 frames)": collate,
        "batch crosses the worker queue (pickle both ways)": lambda: [
            pickle.loads(ForkingPickler.dumps(b)) for b in batches
        ],
        "model input: resize / normalise / pad (batch.to, here on the CPU)": lambda: [
            b.to("cpu") for b in batches
        ],
    }
    out = {name: _cpu_ms(fn, n, rounds) for name, fn in stages.items()}
    # Our media decoding is raw's (the same decoders, plus header and size checks); a difference of
    # separately timed stages, so within their noise of zero.
    out["rest of decode_sample (= decode_sample - json/schema/runs - masks - raw media)"] = (
        out["decode_sample (json + schema + media + masks)"]
        - out["json + schema + RLE run sums"]
        - out["masks: decoded from their runs, resized, laid out"]
        - out["raw: media decoding (PIL / decord)"]
    )
    return out


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats (about 1 minute)")
    parser.add_argument("--root", default=None, help="data folder (default: a temp folder)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--image-size", type=int, default=128, help="side of the synthetic media and of the model input"
    )
    parser.add_argument("--clip", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="image batch (video batches: 1 clip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shuffle-buffer", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None, help="timed batches per repeat")
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.batches = args.batches or (25 if args.quick else 60)
    torch.set_num_threads(1)
    sizes = dict(
        num_train_images=256, num_train_videos=48, frames=16, images_per_shard=64, videos_per_shard=12
    )
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
        images = ShardSource("synthetic_img", root / "synthetic_img-train.index.json")
        videos = ShardSource("synthetic_vid", root / "synthetic_vid-train.index.json")
        load_before = _load()
        results = {
            "images": throughput(images, args, args.batch_size),
            "video_clips": throughput(videos, args, 1),
        }
        rounds = 2 if args.quick else 3
        stages = {"images": profile(images, args, rounds), "video_clips": profile(videos, args, rounds)}
        load_after = _load()
    date = subprocess.run(["date", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
    report = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU, no GPU",
        "torch": torch.__version__,
        "load_average_before_after": [load_before, load_after],
        "settings": {**sizes, **{k: v for k, v in vars(args).items() if k not in ("out", "root")}},
        "generation_s": generation_s,
        "results": results,
        "profile_ms_per_sample": stages,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "loader" if args.image_size == 128 else f"loader_{args.image_size}"  # the tiny default's size
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    img, vid = results["images"], results["video_clips"]

    def rows(media: str, r: dict, raw: str) -> str:
        lines = []
        for side in SIDES:
            x = r[side]
            spread = ", ".join(f"{v:.2f}" for v in x["ratio_per_repeat"])
            name = f"raw ({raw})" if side == "raw" else side
            lines.append(
                f"| {media} | {name} | {x['samples_per_s']:.0f} | **{x['ratio']:.2f}** | {spread} | "
                f"{x['cpu_ms_per_sample']:.2f} | **{x['cpu_ratio']:.2f}** |"
            )
        return "\n".join(lines)

    profile_rows = "\n".join(
        f"| {stage} | {stages['images'][stage]:.3f} | {stages['video_clips'][stage]:.3f} |"
        for stage in stages["images"]
    )
    title = "" if args.image_size == 128 else f" at {args.image_size}x{args.image_size}"
    markdown = f"""## Loader benchmark{title}

Date {date}; machine: {report["machine"]}; torch {torch.__version__}, 1 thread per process. Command:
`python benchmarks/bench_loader.py {" ".join(sys.argv[1:])}`. Data: {sizes["num_train_images"]}
synthetic {args.image_size}x{args.image_size} PNG images and {sizes["num_train_videos"]} H.264 mp4 videos
of {sizes["frames"]} frames, in tar shards. Every side runs as a DataLoader with {args.workers} workers over
the same shards, in the same run. **ours** = `SegDataModule.train_dataloader()` (strict tar reading, json
and schema validation, decoding, RLE masks resized and padded, grouping, collation into a `SegBatch` of
uint8 frames; the model input is made where the batch is moved, on the GPU in a GPU run);
**ours + model input on CPU** = the same, with `batch.to("cpu")` (resize / normalise / pad) in the main
process, in the loop (a CPU-only run); **raw** = `tarfile` + PIL `convert("RGB")` / decord `get_batch` of
a random {args.clip}-frame clip, to uint8 tensors, default collate. Samples/s are medians of {args.repeats}
repeats ({args.batches} batches each after {args.warmup} warm-up batches), the order of the sides rotating;
ratio = side / raw (target >= 0.8). CPU ms = CPU time (user + system) of the main process and the workers
per sample over the same timed batches (median over repeats), which other jobs on the machine disturb
least; raw / side CPU is the throughput ratio a machine with the loader alone on its cores would give.
Load average (1, 5, 15 min) before {load_before}, after {load_after} on {os.cpu_count()} cores.

| media | side | samples/s | / raw | per repeat | CPU ms / sample | raw / side CPU |
|---|---|---|---|---|---|---|
{rows(f"image, batch {img['batch_size']}", img, "PIL")}
{rows(f"{args.clip}-frame clip, batch 1", vid, "decord")}

Where the time goes: CPU ms per sample, one process, least of {rounds} runs (images / {args.clip}-frame
clips; "raw:" rows are the raw side's work):

| stage | image | video clip |
|---|---|---|
{profile_rows}
"""
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
