"""Reading WebDataset shards: a streaming pipeline, media and mask decoding, and clip cutting.

The pipeline for one :class:`~x2sam_lightning.data.sources.ShardSource`::

    shard urls ─(training: reshuffled every epoch, seeded, endless)─ split_by_node ─ split_by_worker
      ─ tarfile_samples ─ (training: seeded shuffle buffer) ─ decode_sample ─ transform ─> SegSample

Errors go through WebDataset's ``handler`` hook: with ``on_error="raise"`` (default) a bad sample stops
the run with a :class:`~x2sam_lightning.data.schema.SampleError` naming shard url, sample key and problem;
``on_error="skip"`` logs the same message as a warning and goes on. Skipping is meant for training only:
an evaluation that silently drops samples reports a number on a different set.

Media are decoded inside the DataLoader worker (PIL for jpg/png, ``decord.VideoReader`` over a BytesIO
for mp4), after the clip's frame indices are chosen, so only the needed frames and masks are decoded.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal

import numpy as np

from x2sam_lightning.data.schema import SampleError, validate_sample
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.imports import require

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
VIDEO_EXTENSIONS = ("mp4",)


@dataclass(frozen=True)
class ClipSampler:
    """Chooses which frames of a video form the clip (images always give ``[0]``).

    Args:
        length: frames per clip.
        stride: step between consecutive clip frames.
        mode: ``"random"`` (training: a random consecutive clip, from the caller's seeded generator),
            ``"first"`` (evaluation: the first clip) or ``"all"`` (evaluation: the whole video at ``stride``,
            up to ``max_frames``).
        max_frames: cap for ``mode="all"``.

    A video shorter than one clip gives all its frames at ``stride`` (a shorter ``T``; batches group by
    ``T``, so such clips are batched with each other).
    """

    length: int = 8
    stride: int = 1
    mode: Literal["random", "first", "all"] = "random"
    max_frames: int = 64

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1 or self.max_frames < 1:
            raise ValueError(f"clip length, stride and max_frames must be >= 1: {self}")
        if self.mode not in ("random", "first", "all"):
            raise ValueError(f"clip mode must be 'random', 'first' or 'all', got {self.mode!r}")

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> list[int]:
        """Frame indices (sorted) of the clip cut from a ``num_frames`` video."""
        if self.mode == "all":
            return list(range(0, num_frames, self.stride))[: self.max_frames]
        span = (self.length - 1) * self.stride + 1
        if num_frames <= span:
            return list(range(0, num_frames, self.stride))[: self.length]
        start = 0
        if self.mode == "random":
            start = int((rng or np.random.default_rng()).integers(0, num_frames - span + 1))
        return list(range(start, start + span, self.stride))


@dataclass
class DecodedClip:
    """A decoded sample at its original resolution, before resizing.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        masks: ``[N, T, H, W]`` bool (False where absent).
        valid: ``[N, T]`` bool, False where the shard stores ``null``.
        labels: ``[N]`` int64, index into ``categories`` (0 when the object has no category).
        object_ids: ``[N]`` int64.
        iscrowd: ``[N]`` bool.
        frame_indices: the clip's frame indices in the stored video.
        sample: the validated sample json.
        categories: the sample's vocabulary.
        key: sample key; url: shard url.
    """

    frames: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    object_ids: np.ndarray
    iscrowd: np.ndarray
    frame_indices: list[int]
    sample: dict[str, Any]
    categories: list[dict[str, Any]]
    key: str
    url: str


def _decode_image(data: bytes, url: str, key: str, ext: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))[None]
    except Exception as error:  # PIL raises many types for broken files
        raise SampleError(url, key, f"cannot decode {ext} image: {error}") from error


def _decode_video(data: bytes, url: str, key: str, indices_for: Callable[[int], list[int]]) -> np.ndarray:
    decord = require("decord")
    try:
        # The reader is created here, inside the worker: decord readers must not cross processes.
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        indices = indices_for(len(reader))
        return reader.get_batch(indices).asnumpy()
    except SampleError:
        raise
    except Exception as error:  # decord raises DECORDError / RuntimeError on broken streams
        raise SampleError(url, key, f"cannot decode mp4 video: {error}") from error


def decode_sample(
    raw: dict[str, Any],
    clip_sampler: ClipSampler,
    rng: np.random.Generator | None = None,
    default_categories: list[dict[str, Any]] | None = None,
) -> DecodedClip:
    """Validate and decode one raw WebDataset sample (``{"__key__", "__url__", "json", "png", ...}``).

    Objects with no mask on any frame of the clip are dropped (nothing to learn or score there).

    Raises:
        SampleError: missing json or media, a json that breaks the schema, undecodable media, a video
            with fewer frames than its json says, or masks whose size differs from the frames.
    """
    url, key = str(raw.get("__url__", "")), str(raw.get("__key__", ""))
    members = sorted(k for k in raw if not k.startswith("__"))
    if "json" not in raw:
        raise SampleError(url, key, f"missing the 'json' member (members: {members})")
    try:
        sample = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SampleError(url, key, f"json member is not valid json: {error}") from error
    sample = validate_sample(sample, url=url, key=key)
    num_frames, height, width = sample["num_frames"], sample["height"], sample["width"]

    if sample["modality"] == "image":
        ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
        if ext is None:
            raise SampleError(
                url, key, f"missing image media (one of {IMAGE_EXTENSIONS}; members: {members})"
            )
        frames, indices = _decode_image(raw[ext], url, key, ext), [0]
    else:
        if "mp4" not in raw:
            raise SampleError(url, key, f"missing video media ('mp4'; members: {members})")
        chosen: list[int] = []

        def indices_for(stored: int) -> list[int]:
            if stored < num_frames:
                raise SampleError(url, key, f"video has {stored} frames but json num_frames is {num_frames}")
            chosen.extend(clip_sampler(num_frames, rng))
            return chosen

        frames, indices = _decode_video(raw["mp4"], url, key, indices_for), chosen
    if frames.shape[1:3] != (height, width):
        raise SampleError(
            url, key, f"media size {list(frames.shape[1:3])} does not match json size [{height}, {width}]"
        )

    mask_utils = require("pycocotools.mask")
    categories = sample.get("categories") or default_categories or []
    position = {c["id"]: i for i, c in enumerate(categories)}
    masks, valid, labels, ids, crowd = [], [], [], [], []
    for obj in sample["objects"]:
        rles = [obj["masks"][t] for t in indices]
        if all(r is None for r in rles):
            continue
        track = np.zeros((len(indices), height, width), dtype=bool)
        for t, rle in enumerate(rles):
            if rle is None:
                continue
            try:
                mask = mask_utils.decode(rle)
            except Exception as error:
                raise SampleError(
                    url, key, f"object {obj['id']} frame {indices[t]}: bad RLE: {error}"
                ) from error
            if mask.shape != (height, width):
                raise SampleError(
                    url, key, f"object {obj['id']} mask size {list(mask.shape)} != frame [{height}, {width}]"
                )
            track[t] = mask.astype(bool)
        masks.append(track)
        valid.append([r is not None for r in rles])
        labels.append(position.get(obj.get("category_id"), 0))
        ids.append(obj["id"])
        crowd.append(bool(obj.get("iscrowd", False)))
    n, t = len(masks), len(indices)
    return DecodedClip(
        frames=frames,
        masks=np.stack(masks) if masks else np.zeros((0, t, height, width), dtype=bool),
        valid=np.asarray(valid, dtype=bool).reshape(n, t),
        labels=np.asarray(labels, dtype=np.int64),
        object_ids=np.asarray(ids, dtype=np.int64),
        iscrowd=np.asarray(crowd, dtype=bool),
        frame_indices=list(indices),
        sample=sample,
        categories=categories,
        key=key,
        url=url,
    )


def error_handler(on_error: OnError) -> Callable[[Exception], bool]:
    """WebDataset handler: re-raise, or log a warning and continue (``True`` = skip the sample)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    def handler(error: Exception) -> bool:
        if on_error == "raise":
            raise error
        log.warning("skipping bad sample: %s", error)
        return True

    return handler


def _url_stream(urls: list[str], *, endless: bool, shuffle: bool, seed: int) -> Iterator[dict[str, str]]:
    """Shard urls as WebDataset expects (``{"url": ...}``), reshuffled per epoch with a shared seed.

    Every rank and worker computes the same order, so ``split_by_node`` / ``split_by_worker`` below give
    disjoint shards at every position of the (possibly endless) stream.
    """
    for epoch in count():
        order = list(urls)
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        yield from ({"url": u} for u in order)
        if not endless:
            return


def iter_raw_samples(
    urls: list[str],
    *,
    train: bool,
    seed: int = 0,
    shuffle_buffer: int = 0,
    on_error: OnError = "raise",
) -> Iterator[dict[str, Any]]:
    """Raw samples of this rank and worker.

    Training: endless, shards reshuffled every epoch, shard-level split by node and worker (with fewer
    shards than readers, readers take turns on the shards of successive epochs), then a seeded shuffle
    buffer. Evaluation: one pass in stored order; shard-level split when there are at least as many
    shards as readers, else every reader reads all shards and keeps every ``readers``-th sample, so each
    sample is read exactly once overall.
    """
    wds = require("webdataset")
    from webdataset.filters import _shuffle
    from webdataset.tariterators import tarfile_samples
    from webdataset.utils import pytorch_worker_info

    handler = error_handler(on_error)
    rank, world, worker, workers = pytorch_worker_info()
    readers, me = world * workers, rank * workers + worker
    shard_split = train or len(urls) >= readers
    src: Iterable[dict[str, str]] = _url_stream(urls, endless=train, shuffle=train, seed=seed)
    if shard_split:
        src = wds.split_by_worker(wds.split_by_node(src))
    samples: Iterable[dict[str, Any]] = tarfile_samples(src, handler=handler)
    if not shard_split:
        samples = (s for i, s in enumerate(samples) if i % readers == me)
    if train and shuffle_buffer > 1:
        rng = random.Random(f"{seed}-{rank}-{worker}")
        samples = _shuffle(samples, bufsize=shuffle_buffer, initial=min(100, shuffle_buffer), rng=rng)
    yield from samples


def iter_source(
    source: ShardSource,
    transform: Callable[[DecodedClip, np.random.Generator], Any],
    clip_sampler: ClipSampler,
    *,
    train: bool,
    seed: int = 0,
    shuffle_buffer: int = 0,
    on_error: OnError = "raise",
) -> Iterator[Any]:
    """Decoded, transformed samples (``SegSample``) of one source for this rank and worker.

    ``seed`` drives the shard order, the shuffle buffer, clip starts and flips; each rank and worker
    derives its own generator from it, so runs are reproducible for a fixed number of readers.
    """
    from webdataset.filters import _map
    from webdataset.utils import pytorch_worker_info

    rank, _, worker, _ = pytorch_worker_info()
    rng = np.random.default_rng([seed, rank, worker])
    categories = source.categories
    raw = iter_raw_samples(
        source.urls, train=train, seed=seed, shuffle_buffer=shuffle_buffer, on_error=on_error
    )
    # An endless training stream whose samples are all skipped (on_error="skip") would otherwise spin
    # for ever: after this many raw samples in a row without a usable one, stop with an error.
    max_skipped = max(1000, 2 * source.num_samples)
    since_good = 0

    def counted(samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal since_good
        for sample in samples:
            since_good += 1
            if since_good > max_skipped:
                raise SampleError(
                    ",".join(source.urls[:3]) + (",..." if len(source.urls) > 3 else ""),
                    "",
                    f"source {source.name!r}: the last {max_skipped} samples read were all unusable "
                    "(see the warnings above); nothing left to train on",
                )
            yield sample

    def decode(sample: dict[str, Any]) -> Any:
        clip = decode_sample(sample, clip_sampler, rng, default_categories=categories)
        out = transform(clip, rng)
        out.source = source.name
        return out

    for out in _map(counted(raw), decode, handler=error_handler(on_error)):
        since_good = 0
        yield out
