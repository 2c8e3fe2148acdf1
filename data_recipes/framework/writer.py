"""Converting one split of a dataset into validated shards: in parallel, resumable, with a summary.

The split's work items are cut into consecutive chunks of ``items_per_shard``; chunk ``k`` becomes shard
``<dataset>-<split>-<k:06d>.tar`` (no shard when every item of the chunk was skipped), written by one
worker process under a hidden temporary name and renamed when complete. Each finished chunk is appended to
a hidden progress file, so an interrupted conversion (Ctrl-C, ``kill -9``, a full disk) resumes by
redoing only the chunks it had not finished; the shard bytes depend on neither the worker count nor the
interruptions. The index is written last, atomically: a split with an index is complete. Every sample
is validated against the schema (masks decoded run by run) and its media checked against the json (image
header size, frame count) before it is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from data_recipes.framework.media import image_size
from data_recipes.framework.recipe import ConvertedSample, Plan, Recipe, SkipItem, sample_key
from x2sam_lightning.data.errors import SampleError
from x2sam_lightning.data.schema import validate_index, validate_sample

log = logging.getLogger(__name__)

_IMAGE_MEMBERS = ("jpg", "jpeg", "png")

#: The schema the converters write. Still 1: their video converters fold "absent on an annotated frame"
#: and "frame not annotated" into one ``null`` (``data_recipes/_video.py``), which is schema 1's meaning;
#: schema 2 (an empty mask where absent) needs each video converter to tell the two apart first.
RECIPE_SCHEMA = 1


class ConversionError(RuntimeError):
    """A work item failed in a way that is not a counted skip: names the dataset, split and item."""


@dataclass
class ChunkRecord:
    """What one finished chunk produced (a line of the progress file)."""

    chunk: int
    items: int
    shard: str | None
    num_samples: int = 0
    num_objects: int = 0
    num_frames: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class SplitSummary:
    """The totals printed after a split and stored in its index (``summary``)."""

    dataset: str
    split: str
    items: int = 0
    samples: int = 0
    objects: int = 0
    frames: int = 0
    shards: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_chunks: int = 0

    def line(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        resumed = f", {self.resumed_chunks} shard(s) kept from an earlier run" if self.resumed_chunks else ""
        return (
            f"{self.dataset}-{self.split}: {self.samples} samples, {self.objects} objects, {self.frames} "
            f"frames in {self.shards} shard(s) from {self.items} items; skipped: {skipped} "
            f"({self.seconds:.1f} s{resumed})"
        )


def index_path(out: Path, dataset: str, split: str) -> Path:
    return out / f"{dataset}-{split}.index.json"


def _progress_path(out: Path, dataset: str, split: str) -> Path:
    return out / f".{dataset}-{split}.progress.jsonl"


def _shard_name(dataset: str, split: str, chunk: int) -> str:
    return f"{dataset}-{split}-{chunk:06d}.tar"


def fingerprint(recipe: Recipe, root: Path, split: str, items_per_shard: int, max_items: int | None) -> dict:
    """The settings an output depends on: a resumed or skipped conversion must have the same."""
    return {
        "dataset": recipe.name,
        "version": recipe.version,
        "root": str(root.resolve()),
        "split": split,
        "items_per_shard": items_per_shard,
        "max_items": max_items,
        "options": recipe.options(),
    }


def _fingerprint_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- validation
def check_media(sample: dict[str, Any], media: dict[str, bytes], where: str) -> None:
    """The media members must be what the reader expects for the sample json.

    Raises:
        SampleError: a missing or extra member, an image whose displayed size differs from the json's, a
            frame count different from ``num_frames``.
    """
    height, width, frames = sample["height"], sample["width"], sample["num_frames"]
    if sample["modality"] == "image":
        members = [m for m in media if m in _IMAGE_MEMBERS]
        if len(media) != 1 or len(members) != 1:
            raise SampleError(where, "", f"an image sample needs one jpg or png member, got {sorted(media)}")
        sizes = [image_size(media[members[0]])]
    elif list(media) == ["mp4"]:
        return  # decoded (and its frame count checked) by the reader; recipes store frame files
    else:
        names = sorted(media)
        expected = len(names) == frames and all(
            n.split(".", 1)[0].isdigit() and n.split(".", 1)[1] in _IMAGE_MEMBERS for n in names
        )
        if not expected:
            raise SampleError(
                where, "", f"a video of {frames} frames needs {frames} frame members, got {names[:4]}..."
            )
        sizes = [image_size(media[n]) for n in names]
    for n, size in enumerate(sizes):
        if size != (height, width):
            raise SampleError(
                where, "", f"media {n} is {size[1]}x{size[0]} but the json says {width}x{height} (w x h)"
            )


def _complete(recipe: Recipe, converted: ConvertedSample) -> tuple[str, dict[str, Any]]:
    sample = {
        "schema": RECIPE_SCHEMA,
        "task": recipe.task,
        "dataset": recipe.name,
        "modality": recipe.modality,
        **converted.json,
    }
    return sample_key(recipe.name, converted.id), sample


# ---------------------------------------------------------------------------------------------- workers
class _ShardWriter:
    """A tar shard with WebDataset's member naming (``<key>.<ext>``), written with :mod:`tarfile` (no
    torch import in the workers: webdataset's writer would pull it in). Members get a fixed mtime and
    owner, so the bytes depend on the content only."""

    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path, "w")  # noqa: SIM115 - closed by close(), the shard outlives one call

    def write(self, key: str, members: dict[str, bytes]) -> None:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


def convert_chunk(
    recipe: Recipe,
    items: list[Any],
    chunk: int,
    out: str,
    split: str,
    categories: list[dict[str, Any]] | None,
    on_error: str,
) -> ChunkRecord:
    """Convert one chunk of items into one shard (run in a worker process)."""
    name = _shard_name(recipe.name, split, chunk)
    final, tmp = Path(out) / name, Path(out) / f".{name}.tmp"
    record = ChunkRecord(chunk=chunk, items=len(items), shard=None)
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    writer = None
    try:
        for item in items:
            try:
                # Every sample of the item is checked before any is written: an item is kept or skipped whole.
                checked: list[tuple[str, dict[str, Any], dict[str, bytes]]] = []
                for converted in recipe.convert(item):
                    key, sample = _complete(recipe, converted)
                    where = f"{recipe.name} {split} {recipe.describe(item)}"
                    if key in seen or any(key == k for k, _, _ in checked):
                        raise SampleError(where, key, "two samples of this chunk have the same key")
                    validate_sample(sample, url=where, key=key, categories=categories)
                    check_media(sample, converted.media, f"{where} key {key}")
                    checked.append((key, sample, converted.media))
            except SkipItem as skip:
                skipped[skip.reason] += 1
                continue
            except Exception as error:
                if on_error == "skip":
                    reason = f"invalid: {type(error).__name__}"
                    log.warning("%s %s: skipped %s: %s", recipe.name, split, recipe.describe(item), error)
                    skipped[reason] += 1
                    continue
                raise ConversionError(
                    f"{recipe.name} {split}: {recipe.describe(item)}: {type(error).__name__}: {error}"
                ) from error
            for key, sample, media in checked:
                seen.add(key)
                if writer is None:
                    writer = _ShardWriter(tmp)
                writer.write(key, {"json": json.dumps(sample).encode(), **media})
                record.num_samples += 1
                record.num_objects += len(sample["objects"])
                record.num_frames += sample["num_frames"]
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp, final)
            record.shard = name
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    record.skipped = dict(skipped)
    return record


# ------------------------------------------------------------------------------------------------ runner
def _read_progress(path: Path, config_hash: str, out: Path) -> dict[int, ChunkRecord]:
    """Chunks an interrupted run with the same settings finished (and whose shard is still there)."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("config") != config_hash:
        log.warning("%s: from a conversion with other settings; starting over", path)
        return {}
    done: dict[int, ChunkRecord] = {}
    for line in lines[1:]:
        try:
            record = ChunkRecord(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # the line being written when the run was killed
        if record.shard is None or (out / record.shard).is_file():
            done[record.chunk] = record
    return done


def _chunks(items: Iterable[Any], size: int, max_items: int | None) -> Iterator[tuple[int, list[Any]]]:
    iterator = iter(items) if max_items is None else islice(items, max_items)
    chunk = 0
    while batch := list(islice(iterator, size)):
        yield chunk, batch
        chunk += 1


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub
        return None
    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, dynamic_ncols=True)


def convert_split(
    recipe: Recipe,
    root: Path,
    out: Path,
    split: str,
    *,
    workers: int = 1,
    items_per_shard: int | None = None,
    max_items: int | None = None,
    on_error: str = "raise",
    force: bool = False,
    progress: bool = True,
) -> SplitSummary:
    """Convert ``split`` of the dataset under ``root`` into shards and an index under ``out``.

    Args:
        recipe: the dataset's converter.
        root: the raw dataset folder (the layout ``recipe.layout`` documents).
        out: output folder (created).
        workers: processes converting chunks (1 = in this process).
        items_per_shard: work items per shard (default the recipe's).
        max_items: convert only the first ``max_items`` items (quick tries).
        on_error: ``raise`` (default) stops at the first item that fails conversion or validation, naming
            it; ``skip`` logs it and counts it in the summary as ``invalid: <error type>``.
        force: convert again even if the split is complete with the same settings.
        progress: show a progress bar.

    Returns:
        The split's summary (also stored in the index as ``summary``).

    Raises:
        LayoutError: the split is not in the documented layout.
        ConversionError: an item failed (``on_error="raise"``), or no sample came out at all.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    start = time.perf_counter()
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_shard = int(items_per_shard or recipe.items_per_shard)
    config = fingerprint(recipe, root, split, per_shard, max_items)
    config_hash = _fingerprint_hash(config)
    final_index = index_path(out, recipe.name, split)
    if not force and final_index.is_file():
        try:
            existing = json.loads(final_index.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        if existing.get("config", {}).get("hash") == config_hash:
            summary = SplitSummary(**existing["summary"])
            log.info("%s-%s is already converted with these settings (--force redoes it)", recipe.name, split)
            return summary
    recipe.check_layout(root, split)
    plan: Plan = recipe.plan(root, split)
    progress_file = _progress_path(out, recipe.name, split)
    done = {} if force else _read_progress(progress_file, config_hash, out)
    if not done:  # a fresh start: no index, no shard of an earlier run left to mix in
        final_index.unlink(missing_ok=True)
        for stale in out.glob(f"{recipe.name}-{split}-[0-9]*.tar"):
            stale.unlink()
        progress_file.write_text(json.dumps({"config": config_hash}) + "\n")
    total = plan.num_items if max_items is None or plan.num_items is None else min(plan.num_items, max_items)
    bar = _progress_bar(total, f"{recipe.name}-{split}", progress)
    records: dict[int, ChunkRecord] = dict(done)
    args = (str(out), split, plan.categories, on_error)

    def finish(record: ChunkRecord) -> None:
        records[record.chunk] = record
        with open(progress_file, "a") as handle:
            handle.write(json.dumps(record.__dict__) + "\n")
        if bar is not None:
            bar.update(record.items)

    try:
        pending = ((k, items) for k, items in _chunks(plan.items, per_shard, max_items) if k not in done)
        if bar is not None:
            bar.update(sum(r.items for r in done.values()))
        if workers <= 1:
            for chunk, items in pending:
                finish(convert_chunk(recipe, items, chunk, *args))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                running: set[Future[ChunkRecord]] = set()
                try:
                    for chunk, items in pending:
                        # At most two chunks per worker in flight: items stream, memory stays bounded.
                        while len(running) >= 2 * workers:
                            finished, running = wait(running, return_when=FIRST_COMPLETED)
                            for future in finished:
                                finish(future.result())
                        running.add(pool.submit(convert_chunk, recipe, items, chunk, *args))
                    for future in wait(running).done:
                        finish(future.result())
                except BaseException:
                    # A failed chunk (or Ctrl-C) stops the conversion now: queued chunks are not started.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        if bar is not None:
            bar.close()

    ordered = [records[k] for k in sorted(records)]
    summary = SplitSummary(dataset=recipe.name, split=split, resumed_chunks=len(done))
    skipped: Counter[str] = Counter()
    for record in ordered:
        summary.items += record.items
        summary.samples += record.num_samples
        summary.objects += record.num_objects
        summary.frames += record.num_frames
        summary.shards += record.shard is not None
        skipped.update(record.skipped)
    summary.skipped = dict(skipped)
    if summary.samples == 0:
        raise ConversionError(
            f"{recipe.name} {split}: no sample was converted from {summary.items} items "
            f"(skipped: {summary.skipped or 'none'})"
        )
    summary.seconds = time.perf_counter() - start
    index = {
        "schema": RECIPE_SCHEMA,
        "dataset": recipe.name,
        "split": split,
        "task": recipe.task,
        "modality": recipe.modality,
        "num_samples": summary.samples,
        "shards": [{"url": r.shard, "num_samples": r.num_samples} for r in ordered if r.shard is not None],
        "categories": plan.categories or [],
        "config": {**config, "hash": config_hash},
        "summary": summary.__dict__,
    }
    validate_index(index, path=str(final_index))
    tmp_index = final_index.with_name(f".{final_index.name}.tmp")
    tmp_index.write_text(json.dumps(index, indent=1))
    os.replace(tmp_index, final_index)
    progress_file.unlink(missing_ok=True)
    log.info("%s", summary.line())
    return summary
