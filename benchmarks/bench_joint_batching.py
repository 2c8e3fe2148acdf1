"""Joint image+video training: simple joint batching against the unified strategy, time per epoch.

The paper (section 3.3) reports that its unified joint strategy cut training from 5.2K to 3.3K GPU-hours
(36.5%). Both strategies here train the tiny stage-1 segmentor (the real model and criterion of
``+experiment=agnostic``) for one epoch over the *same* samples, in the same run:

- **simple joint batching**: batches of ``B`` samples drawn in one shuffled order whatever their
  modality; a batch's clips are padded to its longest clip (an image becomes a clip of padding frames,
  not annotated there), one accumulation setting for all (every batch steps).
- **unified**: image batches of ``B`` (the base ``B / 4`` x image multiplier 4), video batches of
  ``B / 4``, each of one source's clips of one length (as ``data/batch_plan.py`` groups them: no padding frame),
  gradients accumulated over 1 image batch and 4 video batches (``lightning/accumulation.py``).

Samples (seeded, in memory, so decoding is not timed): images and video clips of several lengths (as
clips cut from videos of different lengths); each sample has a few random object masks. Writes
``benchmarks/results/joint_batching.{json,md}``. ``--quick``: fewer samples.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from x2sam_lightning.lightning.agnostic_segmentor import class_agnostic
from x2sam_lightning.types import TrackTargets

HERE = Path(__file__).parent


@dataclass
class Sample:
    pixels: torch.Tensor  # [T, 3, S, S]
    masks: torch.Tensor  # [N, T, S, S]
    modality: str


def make_samples(num_images: int, num_videos: int, lengths: list[int], size: int, seed: int) -> list[Sample]:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(num_images + num_videos):
        video = i >= num_images
        t = int(rng.choice(lengths)) if video else 1
        masks = torch.rand(3, t, size, size, generator=gen) > 0.7
        samples.append(
            Sample(torch.randn(t, 3, size, size, generator=gen), masks, "video" if video else "image")
        )
    return samples


def collate(samples: list[Sample]) -> tuple[torch.Tensor, list[TrackTargets]]:
    """Stack, padding every clip to the longest with zero frames marked not annotated (valid False)."""
    t_max = max(s.pixels.shape[0] for s in samples)
    pixels, targets = [], []
    for s in samples:
        t, n = s.pixels.shape[0], s.masks.shape[0]
        pad = t_max - t
        pixels.append(torch.cat([s.pixels, s.pixels.new_zeros(pad, *s.pixels.shape[1:])]))
        masks = torch.cat([s.masks, s.masks.new_zeros(n, pad, *s.masks.shape[2:])], dim=1)
        valid = torch.zeros(n, t_max, dtype=torch.bool)
        valid[:, :t] = True
        targets.append(
            TrackTargets(
                masks=masks,
                labels=torch.zeros(n, dtype=torch.long),
                valid=valid,
                object_ids=torch.arange(n),
                iscrowd=torch.zeros(n, dtype=torch.bool),
            )
        )
    return torch.stack(pixels), targets


def simple_batches(samples: list[Sample], batch: int, seed: int) -> list[tuple[list[Sample], int]]:
    order = np.random.default_rng(seed).permutation(len(samples))
    return [([samples[i] for i in order[j : j + batch]], 1) for j in range(0, len(order), batch)]


def unified_batches(samples: list[Sample], batch: int, seed: int) -> list[tuple[list[Sample], int]]:
    """Modality-aware sizes, length-grouped clips; each entry carries its accumulation window length."""
    order = np.random.default_rng(seed).permutation(len(samples))
    buckets: dict[tuple[str, int], list[Sample]] = {}
    out: list[tuple[list[Sample], str]] = []
    for i in order:
        s = samples[i]
        size = batch if s.modality == "image" else max(1, batch // 4)
        bucket = buckets.setdefault((s.modality, s.pixels.shape[0]), [])
        bucket.append(s)
        if len(bucket) == size:
            out.append((bucket, s.modality))
            del buckets[(s.modality, s.pixels.shape[0])]
    out += [(group, modality) for (modality, _), group in buckets.items()]  # the epoch's last, smaller ones
    # Windows: 1 image batch, up to 4 consecutive video batches (a switch closes a window early).
    windows: list[tuple[list[Sample], int]] = []
    i = 0
    while i < len(out):
        modality = out[i][1]
        run = 1
        while modality == "video" and run < 4 and i + run < len(out) and out[i + run][1] == "video":
            run += 1
        windows += [(group, run) for group, _ in out[i : i + run]]
        i += run
    return windows


def train_epoch(module, optimizer, batches: list[tuple[list[Sample], int]]) -> tuple[float, int]:
    """One epoch; returns seconds and optimiser steps. Each loss is divided by its window's length."""
    start = time.perf_counter()
    done, steps = 0, 0
    for samples, window in batches:
        pixels, targets = collate(samples)
        outputs = module.segmentor(pixels)
        loss = module.criterion.weighted(module.criterion(outputs, class_agnostic(targets)))
        (loss / window).backward()
        done += 1
        if done == window:
            optimizer.step()
            optimizer.zero_grad()
            done, steps = 0, steps + 1
    return time.perf_counter() - start, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller epoch")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per strategy (the fastest counts)")
    parser.add_argument("--image-size", type=int, default=128, help="input side (the tiny default: 128)")
    args = parser.parse_args()
    from hydra.utils import instantiate

    from x2sam_lightning.config import compose_config

    torch.set_num_threads(2)
    size, batch, lengths = args.image_size, 4, [4, 6, 8]
    num_images, num_videos = (48, 12) if args.quick else (160, 40)
    cfg = compose_config("agnostic", [f"data.image_size={size}", "paths.data_dir=/unused"])
    samples = make_samples(num_images, num_videos, lengths, size, seed=0)
    plans = {
        "simple": simple_batches(samples, batch, seed=1),
        "unified": unified_batches(samples, batch, seed=1),
    }
    for plan in plans.values():  # the same samples, each once
        assert sorted(id(s) for b, _ in plan for s in b) == sorted(id(s) for s in samples)
    results: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for name, plan in plans.items():
            torch.manual_seed(0)
            module = instantiate(cfg.model)
            optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
            train_epoch(module, optimizer, plan[:2])  # warm-up
            seconds, steps = train_epoch(module, optimizer, plan)
            frames = sum(collate(b)[0].shape[0] * collate(b)[0].shape[1] for b, _ in plan)
            best = results.get(name, {}).get("seconds", float("inf"))
            results[name] = {
                "seconds": min(best, seconds),
                "batches": len(plan),
                "optimizer_steps": steps,
                "frames_encoded": frames,
            }
            print(
                f"{name:8s} repeat {repeat}: {seconds:.1f} s, {len(plan)} batches, {steps} steps, {frames} frames"
            )
    reduction = 1 - results["unified"]["seconds"] / results["simple"]["seconds"]
    real_frames = sum(s.pixels.shape[0] for s in samples)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()}-thread CPU, no GPU",
        "command": "python benchmarks/bench_joint_batching.py"
        + (" --quick" if args.quick else "")
        + f" --repeats {args.repeats} --image-size {size}",
        "samples": {
            "images": num_images,
            "videos": num_videos,
            "clip_lengths": lengths,
            "frames": real_frames,
        },
        "image_size": size,
        "batch": batch,
        "results": results,
        "reduction": reduction,
        "paper_reduction": 0.365,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "joint_batching.json").write_text(json.dumps(report, indent=2))
    simple, unified = results["simple"], results["unified"]
    md = f"""# Joint batching benchmark (time per epoch, image+video mix)

Date {report["date"]}; machine: {report["machine"]}. Command: `{report["command"]}`.
The tiny stage-1 segmentor and criterion (`+experiment=agnostic`, {size}x{size}), one epoch over the same
{num_images} images and {num_videos} video clips ({", ".join(map(str, lengths))} frames; {real_frames} real
frames), in memory (decoding not timed), AdamW; fastest of {args.repeats} epochs per strategy.

| strategy | batches | optimiser steps | frames encoded (with padding) | s / epoch |
|---|---|---|---|---|
| simple joint (mixed modalities, padded clips, batch {batch}, every batch steps) | {simple["batches"]} | {simple["optimizer_steps"]} | {simple["frames_encoded"]} | {simple["seconds"]:.1f} |
| unified (images x{batch}, videos x{max(1, batch // 4)} grouped by length, accumulation 1 / 4) | {unified["batches"]} | {unified["optimizer_steps"]} | {unified["frames_encoded"]} | {unified["seconds"]:.1f} |

Reduction of the time per epoch: **{reduction:.1%}** (the paper: 36.5%, 5.2K -> 3.3K GPU-hours, on its
real mix). Most of it is padding: in a mixed batch every image and every shorter clip is encoded at the
longest clip's frame count. The size depends on the mix (share of videos, spread of clip lengths).
"""
    (out / "joint_batching.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
