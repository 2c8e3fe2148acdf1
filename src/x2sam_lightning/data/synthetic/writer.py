"""Writing the synthetic datasets as shards: idempotent, atomic, optionally in parallel processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from x2sam_lightning.data.schema import SCHEMA_VERSION
from x2sam_lightning.data.synthetic.config import (
    DATASETS,
    SPLITS,
    STAGE1_DATASETS,
    VIDEO_TASK_DATASETS,
    SyntheticConfig,
)
from x2sam_lightning.data.synthetic.scenes import CATEGORIES, make_image_sample, make_video_sample
from x2sam_lightning.data.synthetic.tasks import OV_CATEGORIES, make_task_sample
from x2sam_lightning.data.synthetic.video_tasks import make_video_task_sample
from x2sam_lightning.imports import require

log = logging.getLogger(__name__)


def sample_key(dataset: str, index: int) -> str:
    """WebDataset key ``<dataset>/<id>`` (no dots: WebDataset splits member names at the first dot)."""
    return f"{dataset}/{index:07d}"


def index_path(root: str | os.PathLike, dataset: str, split: str) -> Path:
    """``root/<dataset>-<split>.index.json``."""
    return Path(root) / f"{dataset}-{split}.index.json"


def dataset_categories(dataset: str) -> list[dict[str, Any]]:
    """The category vocabulary of a dataset (the index's ``categories``)."""
    return OV_CATEGORIES if DATASETS[dataset]["task"] in ("img_ovseg", "vid_ovseg") else CATEGORIES


def media_extension(dataset: str) -> str:
    """The media member of a dataset's samples: ``png`` (stage-1 images), ``mp4`` (videos), ``jpg``."""
    if dataset == "synthetic_img":
        return "png"
    return "mp4" if DATASETS[dataset]["modality"] == "video" else "jpg"


def make_sample(
    dataset: str, index: int, split: str, cfg: SyntheticConfig
) -> tuple[dict[str, Any], bytes, list]:
    """Sample ``index`` of any synthetic dataset split: ``(json, media bytes, masks)``."""
    if dataset == "synthetic_img":
        return make_image_sample(index, split, cfg)
    if dataset == "synthetic_vid":
        return make_video_sample(index, split, cfg)
    if dataset in VIDEO_TASK_DATASETS:
        return make_video_task_sample(dataset, index, split, cfg)
    return make_task_sample(dataset, index, split, cfg)


def iter_samples(dataset: str, split: str, cfg: SyntheticConfig) -> Iterator[tuple[str, dict, bytes]]:
    """Yield ``(key, sample json, media bytes)`` for every sample of a dataset split, in order."""
    for index in range(cfg.count(dataset, split)):
        sample, media, _ = make_sample(dataset, index, split, cfg)
        yield sample_key(dataset, index), sample, media


def _write_split(root: Path, dataset: str, split: str, cfg: SyntheticConfig) -> float:
    """Write one dataset split into a temp folder beside ``root``, then move it in, index last.

    Returns:
        Seconds it took.
    """
    start = time.perf_counter()
    wds = require("webdataset")
    ext = media_extension(dataset)
    per_shard = cfg.per_shard(dataset)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{dataset}-{split}.") as tmp:
        shards: list[dict[str, Any]] = []
        writer = None
        for i, (key, sample, media) in enumerate(iter_samples(dataset, split, cfg)):
            if i % per_shard == 0:
                if writer is not None:
                    writer.close()
                name = f"{dataset}-{split}-{len(shards):06d}.tar"
                # A fixed mtime keeps the tar bytes reproducible.
                writer = wds.TarWriter(str(Path(tmp) / name), encoder=False, mtime=0.0)
                shards.append({"url": name, "num_samples": 0})
            writer.write({"__key__": key, "json": json.dumps(sample).encode(), ext: media})
            shards[-1]["num_samples"] += 1
        if writer is not None:
            writer.close()
        index = {
            "schema": SCHEMA_VERSION,
            "dataset": dataset,
            "split": split,
            "task": DATASETS[dataset]["task"],
            "modality": DATASETS[dataset]["modality"],
            "num_samples": cfg.count(dataset, split),
            "shards": shards,
            "categories": dataset_categories(dataset),
            "config": cfg.fingerprint(dataset, split),
        }
        (Path(tmp) / "index.json").write_text(json.dumps(index, indent=1))
        final_index = index_path(root, dataset, split)
        final_index.unlink(missing_ok=True)  # no index = no dataset, while shards are replaced
        for stale in root.glob(f"{dataset}-{split}-*.tar"):
            stale.unlink()
        for shard in shards:
            os.replace(Path(tmp) / shard["url"], root / shard["url"])
        os.replace(Path(tmp) / "index.json", final_index)
    seconds = time.perf_counter() - start
    log.info("wrote %s-%s to %s in %.1f s", dataset, split, root, seconds)
    return seconds


def _is_current(root: Path, dataset: str, split: str, cfg: SyntheticConfig) -> bool:
    path = index_path(root, dataset, split)
    if not path.is_file():
        return False
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    shards_present = all((root / s["url"]).is_file() for s in index.get("shards", []))
    return index.get("config") == cfg.fingerprint(dataset, split) and shards_present


def generate_synthetic(
    root: str | os.PathLike,
    *,
    image_size: int = 128,
    num_train_images: int = 4000,
    num_val_images: int = 200,
    num_test_images: int = 200,
    num_train_videos: int = 100,
    num_val_videos: int = 20,
    num_test_videos: int = 20,
    num_train_task_images: int = 2000,
    num_val_task_images: int = 50,
    num_test_task_images: int = 200,
    num_train_task_videos: int = 200,
    num_val_task_videos: int = 20,
    num_test_task_videos: int = 50,
    frames: int = 12,
    fps: float = 8.0,
    images_per_shard: int = 500,
    videos_per_shard: int = 25,
    seed: int = 0,
    datasets: str | Iterable[str] = STAGE1_DATASETS,
    workers: int = 1,
    force: bool = False,
) -> dict[str, float]:
    """Generate the synthetic datasets (train, val and test splits) under ``root``.

    Idempotent: a dataset split whose index json exists with the same config (and whose shards exist) is
    skipped. Each split is written to a temp folder and moved in with its index last, so an interrupted
    run never leaves an index that points at a partial set. A split with zero samples is not written.
    Every sample depends only on ``(seed, dataset, split, index)``: the bytes are the same for any number
    of ``workers``.

    Args:
        root: output folder.
        datasets: the names to generate (``DATASETS``) or ``"all"``; default the stage-1 sets
            ``synthetic_img`` and ``synthetic_vid`` (what earlier versions wrote).
        workers: processes writing splits in parallel (one split per process; 1 = this process).
        force: rewrite even current splits.
        Other arguments: see :class:`~x2sam_lightning.data.synthetic.config.SyntheticConfig`.

    Returns:
        Seconds spent per ``"<dataset>-<split>"`` that was (re)generated.
    """
    cfg = SyntheticConfig(
        image_size=image_size,
        num_train_images=num_train_images,
        num_val_images=num_val_images,
        num_test_images=num_test_images,
        num_train_videos=num_train_videos,
        num_val_videos=num_val_videos,
        num_test_videos=num_test_videos,
        num_train_task_images=num_train_task_images,
        num_val_task_images=num_val_task_images,
        num_test_task_images=num_test_task_images,
        num_train_task_videos=num_train_task_videos,
        num_val_task_videos=num_val_task_videos,
        num_test_task_videos=num_test_task_videos,
        frames=frames,
        fps=fps,
        images_per_shard=images_per_shard,
        videos_per_shard=videos_per_shard,
        seed=seed,
        datasets=datasets,
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".synthetic_*-*.*"):  # temp folders of an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    jobs = [
        (dataset, split)
        for dataset in cfg.datasets
        for split in SPLITS
        if cfg.count(dataset, split) > 0 and (force or not _is_current(root, dataset, split, cfg))
    ]
    if workers <= 1 or len(jobs) <= 1:
        return {f"{d}-{s}": _write_split(root, d, s, cfg) for d, s in jobs}
    # Largest splits first, so the slowest ones do not start last. Spawned processes: no forked threads.
    jobs.sort(
        key=lambda job: -cfg.count(*job) * (cfg.frames if DATASETS[job[0]]["modality"] == "video" else 1)
    )
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = {f"{d}-{s}": pool.submit(_write_split, root, d, s, cfg) for d, s in jobs}
        return {name: future.result() for name, future in futures.items()}


def ensure_synthetic(root: str | os.PathLike, **kwargs: Any) -> Path:
    """Generate the synthetic sets under ``root`` unless they are already there (first-use hook).

    Args:
        root: output folder.
        **kwargs: :func:`generate_synthetic` keyword arguments.

    Returns:
        ``root`` as a Path.
    """
    generate_synthetic(root, **kwargs)
    return Path(root)


def default_config() -> dict[str, Any]:
    """The default generation settings as a plain dict (for configs and reports)."""
    return asdict(SyntheticConfig())


def remove_synthetic(root: str | os.PathLike) -> None:
    """Delete every synthetic shard and index under ``root`` (leaves other files alone)."""
    root = Path(root)
    for dataset in DATASETS:
        for path in [*root.glob(f"{dataset}-*.tar"), *root.glob(f"{dataset}-*.index.json")]:
            path.unlink()
        for tmp in root.glob(f".{dataset}-*"):
            shutil.rmtree(tmp, ignore_errors=True)
