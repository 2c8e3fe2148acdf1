"""Reading WebDataset shards: a streaming pipeline, media and mask decoding, and clip cutting.

The pipeline for one :class:`~x2sam_lightning.data.sources.ShardSource`::

    shard urls ─(training: reshuffled every epoch, seeded, endless)─ split by node and worker
      ─ read_shard (strict tar reading, data.tars) ─ (training: seeded shuffle buffer)
      ─ decode_sample (schema, media, masks) ─ transform ─> SegSample

The mixed training stream (``data.mixing.MixedBatchStream``) reads by stream position instead, for exact
resume (``data.sample_order``, ``data.sample_access``), and decodes each sample with
:func:`decode_source_sample`; ``iter_source(train=True)`` remains a plain streamed reader of one source.

Errors: every defect raises a :class:`~x2sam_lightning.data.errors.SampleError` (or its subclasses
``ShardError`` / ``SourceError``) naming the shard url, the sample key and the problem. With
``on_error="raise"`` (default) the first one stops the run; with ``on_error="skip"`` a bad sample or a bad
shard is logged once as a warning, counted in the source's :class:`~x2sam_lightning.data.errors.SkipStats`
and skipped (a shard found bad is not read again by the same reader). Either way a source that gives no
usable sample for ``source.max_consecutive_failures`` reads in a row (samples, shards, or training epochs
in which this reader had no readable shard) raises a ``SourceError``: never an endless loop.

Media are decoded inside the DataLoader worker (PIL for jpg/png, ``decord.VideoReader`` over a BytesIO
for mp4), after the clip's frame indices are chosen, so only the needed frames and masks are decoded.
"""

from __future__ import annotations

import io
import random
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal

import numpy as np

from x2sam_lightning.data.errors import SampleError, ShardError, SkipStats, SourceError, warn_skip
from x2sam_lightning.data.remote import RemoteOptions
from x2sam_lightning.data.rle import decode_runs, rle_has_foreground
from x2sam_lightning.data.schema import DEFAULT_MAX_PIXELS, check_mask_runs, parse_json, validate_sample
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.tars import read_shard
from x2sam_lightning.imports import require

_FRAME = re.compile(r"^\d+\.(png|jpe?g)$")

OnError = Literal["raise", "skip"]
#: Source-resolution mask pixels decoded at once (16 Mpx = 16 MB): a group of objects, at least one track.
_DECODE_PIXELS = 1 << 24
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
VIDEO_EXTENSIONS = ("mp4",)
#: Member extensions that hold media (anything else, e.g. ``txt``, is carried along and ignored).
_MEDIA = re.compile(r"(?:^|\.)(png|jpe?g|mp4|gif|bmp|webp|tiff?|avi|mov|mkv|webm)$")


class VideoTooLong(ValueError):
    """An evaluation video has more frames than ``max_frames``: scores are never computed on a cut
    video, so this stops evaluation (it is a setting to raise, not bad data to skip)."""


@dataclass(frozen=True)
class ClipSampler:
    """Chooses which frames of a video form the clip (images always give ``[0]``).

    Args:
        length: frames per clip.
        stride: step between consecutive clip frames.
        mode: ``"random"`` (training: a random consecutive clip, from the caller's seeded generator),
            ``"first"`` (the first clip) or ``"all"`` (evaluation: the whole video at ``stride``).
        max_frames: the most frames ``mode="all"`` reads; a longer video raises :class:`VideoTooLong`
            rather than being cut.

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
            frames = list(range(0, num_frames, self.stride))
            if len(frames) > self.max_frames:
                raise VideoTooLong(
                    f"a video of {num_frames} frames is longer than the {self.max_frames} frames evaluation "
                    "reads (data.eval_max_frames): videos are scored whole, never cut; raise the limit"
                )
            return frames
        span = (self.length - 1) * self.stride + 1
        if num_frames <= span:
            return list(range(0, num_frames, self.stride))[: self.length]
        start = 0
        if self.mode == "random":
            start = int((rng or np.random.default_rng()).integers(0, num_frames - span + 1))
        return list(range(start, start + span, self.stride))


@dataclass
class DecodedClip:
    """A decoded sample, frames at their original resolution, before resizing.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        masks: ``[N, T, H, W]`` bool (False where absent), or ``[N, T, h, w]`` when decoding was asked
            for a mask size (``decode_sample(mask_size=...)``).
        valid: ``[N, T]`` bool: the frame is annotated (a mask, empty where the object is absent); False
            where the shard stores ``null`` (not annotated).
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


def resize_nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[..., H, W]`` bool masks -> ``[..., h, w]`` with torch's ``nearest-exact`` (the rule the
    resize transform uses for masks, so pre-resized masks equal the transform's)."""
    import torch
    import torch.nn.functional as F

    lead, (h0, w0) = masks.shape[:-2], masks.shape[-2:]
    flat = torch.from_numpy(np.ascontiguousarray(masks).reshape(-1, 1, h0, w0).view(np.uint8))
    resized = F.interpolate(flat, size=size, mode="nearest-exact")
    return resized.reshape(*lead, *size).bool().numpy()


def _decode_error(text: str) -> str:
    """One line of a decoder's message, without decord's ``[time] file.cc:line:`` and ``Check failed``."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    line = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", line)
    line = re.sub(r"^Check failed: .*?\) ", "", line)
    return line.strip()[:200] or "no detail"


def _pixel_limit(pixels: int, max_pixels: int | None, what: str) -> str | None:
    if max_pixels is not None and pixels > max_pixels:
        return f"{what} has {pixels} pixels, over the limit of {max_pixels} (max_pixels)"
    return None


def _to_rgb(image: Any) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a loaded PIL image: 16-bit by the high byte, alpha dropped."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if mode == "I" and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError("32-bit integer image (only 8- and 16-bit images are read)")
        gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        # Palette transparency is only kept by an RGBA conversion (PIL warns otherwise); alpha is dropped.
        image = image.convert("RGBA") if "transparency" in image.info else image
    elif mode == "F":
        raise ValueError("floating-point image (only 8- and 16-bit images are read)")
    return np.array(image.convert("RGB"))


def _decode_image(
    data: bytes, url: str, key: str, ext: str, height: int, width: int, max_pixels: int | None
) -> np.ndarray:
    """``[1, H, W, 3]`` uint8: EXIF orientation applied, any mode converted to RGB.

    The pixel count is checked from the header before anything is decoded, and must match the json's
    (orientation swaps height and width, never the count).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "MPO"))
    except Image.DecompressionBombError as error:
        raise SampleError(url, key, f"{ext} image is too large: {error}") from None
    except Exception as error:  # PIL raises many types for broken files
        raise SampleError(url, key, f"cannot decode {ext} image: {_decode_error(error)}") from None
    with image:
        w0, h0 = image.size
        if problem := _pixel_limit(w0 * h0, max_pixels, f"{ext} image of {w0}x{h0} (width x height)"):
            raise SampleError(url, key, problem)
        if w0 * h0 != height * width:
            raise SampleError(
                url, key, f"media size [{h0}, {w0}] does not match json size [{height}, {width}]"
            )
        try:
            image.load()
            if image.getexif().get(0x0112, 1) not in (0, 1):  # EXIF orientation: the displayed image
                image = ImageOps.exif_transpose(image)
            pixels = _to_rgb(image)
        except Exception as error:  # truncated or corrupt data, unusual modes
            raise SampleError(url, key, f"cannot decode {ext} image: {_decode_error(error)}") from None
    if pixels.shape[:2] != (height, width):
        raise SampleError(
            url,
            key,
            f"media size {list(pixels.shape[:2])} (after EXIF orientation) does not match json size "
            f"[{height}, {width}]",
        )
    return pixels[None]


def _decode_video(
    data: bytes, url: str, key: str, num_frames: int, choose: Callable[[int], list[int]]
) -> tuple[np.ndarray, list[int]]:
    """The clip's frames ``[T, H, W, 3]`` and their indices; the stored frame count must equal the json's."""
    decord = require("decord")
    try:
        # The reader is created here, inside the worker: decord readers must not cross processes.
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        stored = len(reader)
    except Exception as error:  # decord raises DECORDError / RuntimeError with C++ log text
        raise SampleError(
            url, key, f"cannot decode mp4 video: no decodable video frames ({_decode_error(error)})"
        ) from None
    if stored == 0:
        raise SampleError(url, key, "cannot decode mp4 video: it has no video frames")
    if stored != num_frames:
        raise SampleError(url, key, f"video has {stored} frames but json num_frames is {num_frames}")
    indices = choose(num_frames)
    try:
        return reader.get_batch(indices).asnumpy(), indices
    except Exception as error:
        raise SampleError(
            url, key, f"cannot decode mp4 video frames {indices[0]}..{indices[-1]}: {_decode_error(error)}"
        ) from None


def _decode_frames(
    raw: dict[str, Any],
    members: list[str],
    url: str,
    key: str,
    sample: dict[str, Any],
    choose: Callable[[int], list[int]],
    max_pixels: int | None,
) -> tuple[np.ndarray, list[int]]:
    """A video stored as its frame files (``0000.jpg``, ``0001.jpg``, ...; the datasets' own JPEGs, not
    re-encoded): only the clip's frames are decoded. Frame numbers must run 0..T-1 with T = num_frames."""
    numbered = sorted((int(m.split(".", 1)[0]), m) for m in members)
    numbers = [n for n, _ in numbered]
    if numbers != list(range(sample["num_frames"])):
        raise SampleError(
            url,
            key,
            f"video frame members are numbered {numbers[:3]}...{numbers[-1:]} ({len(numbers)} frames) but "
            f"json num_frames is {sample['num_frames']} (expected 0..{sample['num_frames'] - 1})",
        )
    indices = choose(sample["num_frames"])
    height, width = sample["height"], sample["width"]
    frames = [
        _decode_image(raw[numbered[i][1]], url, key, numbered[i][1], height, width, max_pixels)[0]
        for i in indices
    ]
    return np.stack(frames), indices


def _media_members(raw: dict[str, Any]) -> list[str]:
    return [k for k in raw if not k.startswith("__") and _MEDIA.search(k)]


def _shows_v1(rle: Any) -> bool:
    return rle is not None


def _shows_v2(rle: Any) -> bool:
    return rle is not None and rle_has_foreground(rle)


def decode_sample(
    raw: dict[str, Any],
    clip_sampler: ClipSampler,
    rng: np.random.Generator | None = None,
    default_categories: list[dict[str, Any]] | None = None,
    *,
    task: str | None = None,
    modality: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_objects: int | None = None,
    mask_size: Callable[[int, int], tuple[int, int] | None] | None = None,
    whole_video_objects: bool = False,
) -> DecodedClip:
    """Validate and decode one raw WebDataset sample (``{"__key__", "__url__", "json", "png", ...}``).

    Objects that show on no frame of the clip are dropped (nothing to learn or score there): schema 2,
    no non-empty mask (absent or not annotated on every clip frame); schema 1, no non-null mask.
    ``valid`` is True where a frame is annotated (any RLE, an empty one included: the object is absent
    there, a real target) and False where the json has ``null`` (not annotated: schema 1's null, which
    meant absent or not annotated, is read so, as it always was).
    Masks are decoded from the runs their check parsed, in groups of objects (one ``np.repeat`` and one
    resize per group) holding at most 16 Mpx at the source resolution, or one track when a track is
    larger, so with ``mask_size`` the peak memory stays bounded (an SA-1B image is ~1500 x 2250 with ~100 masks: ~4 objects per group).

    Args:
        raw: the sample's members.
        clip_sampler: chooses the video frames.
        rng: generator for random clips.
        default_categories: the index vocabulary (for samples without ``categories`` of their own).
        task, modality: what the index says the samples are (checked; None = not checked).
        max_pixels: largest frame (height x width) read, checked before decoding (None: no limit).
        max_objects: keep at most this many objects, a subset drawn with ``rng`` (the first ones without
            it) before any mask is decoded; None keeps every object.
        mask_size: ``(height, width) -> (h, w)`` the masks are wanted at (nearest-exact, as
            :class:`~x2sam_lightning.data.transforms.ResizePadNormalize` resizes), or None for the source
            resolution.
        whole_video_objects: keep the objects that show on any frame of the video, not only of the clip
            (a chunk of an evaluation video: every chunk then has the video's objects, in one order).

    Raises:
        SampleError: a missing or extra member, a json that breaks the schema or disagrees with the index,
            undecodable media, media whose size or frame count differs from the json, or a bad mask.
    """
    url, key = str(raw.get("__url__", "")), str(raw.get("__key__", ""))
    members = sorted(k for k in raw if not k.startswith("__"))
    if "json" not in raw:
        raise SampleError(url, key, f"missing the 'json' member (members: {members})")
    categories = default_categories or []
    sample = parse_json(raw["json"], url, key)
    # Mask run sums are checked below, for the frames of the clip only (the masks that are decoded).
    sample = validate_sample(
        sample, url=url, key=key, categories=categories, max_pixels=max_pixels, check_runs=False
    )
    for name, expected in (("task", task), ("modality", modality)):
        if expected is not None and sample[name] != expected:
            raise SampleError(
                url, key, f"sample {name} {sample[name]!r} differs from the index's {expected!r}"
            )
    num_frames, height, width = sample["num_frames"], sample["height"], sample["width"]

    media = _media_members(raw)
    frame_members = bool(media) and all(_FRAME.match(m) for m in media)
    if len(media) > 1 and not (frame_members and sample["modality"] == "video"):
        raise SampleError(url, key, f"more than one media member: {sorted(media)}")
    if sample["modality"] == "image":
        ext = media[0] if media else None
        if ext not in IMAGE_EXTENSIONS:
            raise SampleError(
                url, key, f"missing image media (one of {IMAGE_EXTENSIONS}; members: {members})"
            )
        frames, indices = _decode_image(raw[ext], url, key, ext, height, width, max_pixels), [0]
    else:
        if not frame_members and media != ["mp4"]:
            raise SampleError(
                url, key, f"missing video media ('mp4' or frame images 0000.jpg, ...; members: {members})"
            )
        try:
            if frame_members:
                frames, indices = _decode_frames(
                    raw, media, url, key, sample, lambda n: clip_sampler(n, rng), max_pixels
                )
            else:
                frames, indices = _decode_video(
                    raw["mp4"], url, key, num_frames, lambda n: clip_sampler(n, rng)
                )
        except VideoTooLong as error:
            raise VideoTooLong(f"{url} {key}: {error}") from None
        if frames.shape[1:3] != (height, width):
            raise SampleError(
                url, key, f"media size {list(frames.shape[1:3])} does not match json size [{height}, {width}]"
            )

    runs = check_mask_runs(sample, set(indices), url=url, key=key)  # parsed once, decoded from these
    categories = sample.get("categories") or categories
    position = {c["id"]: i for i, c in enumerate(categories)}
    # Schema 2: an empty mask is an object absent there, so an object must show on a clip frame to be a
    # target; schema 1: any non-null mask (its null folded absent into "not annotated").
    shows = _shows_v2 if sample["schema"] >= 2 else _shows_v1
    objects = sample["objects"]
    seen = range(num_frames) if whole_video_objects else indices
    present = [i for i, obj in enumerate(objects) if any(shows(obj["masks"][t]) for t in seen)]
    if max_objects is not None and len(present) > max_objects:
        chosen = range(max_objects) if rng is None else rng.choice(len(present), max_objects, replace=False)
        present = [present[i] for i in sorted(chosen)]
    size = None if mask_size is None else mask_size(height, width)
    out_h, out_w = (height, width) if size is None else size
    n, t = len(present), len(indices)
    valid = np.array([[(i, f) in runs for f in indices] for i in present], dtype=bool).reshape(n, t)
    masks = np.zeros((n, t, out_h, out_w), dtype=bool)
    # Objects are decoded in groups of at most _DECODE_PIXELS source pixels (at least one track), each
    # group in one call and resized at once: vectorised for the usual few objects, bounded memory for
    # SA-1B's ~100 full-resolution masks.
    per_group = max(1, _DECODE_PIXELS // max(1, t * height * width))
    for first in range(0, n, per_group):
        group = present[first : first + per_group]
        where = np.flatnonzero(valid[first : first + per_group].reshape(-1))
        if where.size == 0:
            continue
        keys = [(i, f) for i in group for f in indices]
        decoded = decode_runs([runs[keys[k]] for k in where], height, width)
        if (out_h, out_w) != (height, width):
            decoded = resize_nearest(decoded, (out_h, out_w))
        stack = masks[first : first + len(group)].reshape(-1, out_h, out_w)
        if where.size == len(stack):  # every mask of the group: one plain copy
            stack[...] = decoded
        else:
            stack[where] = decoded
    kept = [objects[i] for i in present]
    # validate_sample guarantees a known category, or none with a vocabulary of at most one (label 0).
    labels = [0 if obj.get("category_id") is None else position[obj["category_id"]] for obj in kept]
    ids = [obj["id"] for obj in kept]
    crowd = [bool(obj.get("iscrowd", False)) for obj in kept]
    return DecodedClip(
        frames=frames,
        masks=masks,
        valid=valid,
        labels=np.asarray(labels, dtype=np.int64),
        object_ids=np.asarray(ids, dtype=np.int64),
        iscrowd=np.asarray(crowd, dtype=bool),
        frame_indices=list(indices),
        sample=sample,
        categories=categories,
        key=key,
        url=url,
    )


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


class FailureGuard:
    """Counts reads in a row that gave no usable sample; past ``limit`` the source is given up on.

    A read is a sample that failed, a shard that failed, or a training epoch in which this reader had no
    shard left to read. A usable sample resets the count.
    """

    def __init__(self, name: str, where: str, limit: int) -> None:
        self.name, self.where, self.limit = name, where, int(limit)
        self.misses = 0

    def miss(self) -> None:
        self.misses += 1
        if self.misses > self.limit:
            raise SourceError(
                self.where,
                f"source {self.name!r}: the last {self.limit} reads (samples, shards or epochs) gave no "
                "usable sample (see the warnings above); giving up instead of looping",
            )

    def hit(self) -> None:
        self.misses = 0


def skip_sample(error: SampleError, stats: SkipStats, guard: FailureGuard) -> None:
    """What ``on_error="skip"`` does with a bad sample, at any step of the data path (decoding or
    building its conversation): one warning, one count in ``samples_skipped``, one miss of the guard."""
    warn_skip(error)
    stats.add("samples_skipped")
    guard.miss()


def reader_info() -> tuple[int, int, int, int]:
    from webdataset.utils import pytorch_worker_info

    return pytorch_worker_info()


def _url_stream(urls: list[str], *, endless: bool, shuffle: bool, seed: int) -> Iterator[list[str]]:
    """The url list of each epoch, reshuffled per epoch with a shared seed.

    Every rank and worker computes the same order, so the position-based split below gives disjoint shards
    at every position of the (possibly endless) stream.
    """
    for epoch in count():
        order = list(urls)
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        yield order
        if not endless:
            return


def iter_raw_samples(
    urls: list[str],
    *,
    train: bool,
    seed: int = 0,
    shuffle_buffer: int = 0,
    on_error: OnError = "raise",
    expected: dict[str, int] | None = None,
    stats: SkipStats | None = None,
    guard: FailureGuard | None = None,
    known_bad: set[str] | None = None,
    remote: RemoteOptions | None = None,
) -> Iterator[dict[str, Any]]:
    """Raw samples of this rank and worker.

    Training: endless, shards reshuffled every epoch, shard-level split by node and worker (position
    ``p`` of the endless url stream goes to rank ``p % world`` and, within it, worker
    ``(p // world) % workers``, as WebDataset's ``split_by_node`` + ``split_by_worker``; with fewer shards
    than readers, readers take turns on the shards of successive epochs), then a seeded shuffle buffer.
    Evaluation: one pass in stored order; shard-level split when there are at least as many shards as
    readers, else every reader reads all shards and keeps every ``readers``-th sample, so each sample is
    read exactly once overall.

    Args:
        urls: the shards.
        train: endless shuffled training stream, or one evaluation pass.
        seed: shard order and shuffle-buffer seed.
        shuffle_buffer: training shuffle buffer (samples).
        on_error: ``"raise"`` or ``"skip"`` (a bad shard is logged, counted and skipped).
        expected: url -> sample count from the index (checked when the shard is read).
        stats: where skipped shards are counted.
        guard: counts failed shards and empty training epochs (see :class:`FailureGuard`).
        known_bad: urls found bad before (skipped without reading; found bad ones are added).
        remote: time-out and retries for remote shards.
    """
    from webdataset.filters import _shuffle

    _check_on_error(on_error)
    if not urls:
        raise SourceError("", "no shard urls to read")
    rank, world, worker, workers = reader_info()
    readers = world * workers
    position_me = rank + world * worker  # webdataset's split_by_node then split_by_worker
    me = rank * workers + worker
    shard_split = train or len(urls) >= readers
    known_bad = set() if known_bad is None else known_bad
    expected = expected or {}

    def shard_samples(url: str, owner: bool) -> Iterator[dict[str, Any]]:
        if url in known_bad:
            return
        try:
            yield from read_shard(url, expected.get(url), remote)
        except ShardError as error:
            if on_error == "raise":
                raise
            known_bad.add(url)
            if owner:  # readers that all read this shard count it once
                warn_skip(error, "shard")
                if stats is not None:
                    stats.add("shards_skipped")
            if guard is not None:
                guard.miss()

    def samples() -> Iterator[dict[str, Any]]:
        for epoch, order in enumerate(_url_stream(urls, endless=train, shuffle=train, seed=seed)):
            if not shard_split:
                kept = (s for i, url in enumerate(order) for s in shard_samples(url, owner=i % readers == me))
                yield from (s for i, s in enumerate(kept) if i % readers == me)
                continue
            mine = [u for i, u in enumerate(order) if (epoch * len(order) + i) % readers == position_me]
            if train and guard is not None and all(u in known_bad for u in mine):
                guard.miss()  # nothing to read this epoch: an empty or all-bad source ends, not spins
            for url in mine:
                yield from shard_samples(url, owner=True)

    stream: Iterable[dict[str, Any]] = samples()
    if train and shuffle_buffer > 1:
        rng = random.Random(f"{seed}-{rank}-{worker}")
        stream = _shuffle(stream, bufsize=shuffle_buffer, initial=min(100, shuffle_buffer), rng=rng)
    yield from stream


def open_source(
    source: ShardSource, *, train: bool, seed: int = 0, shuffle_buffer: int = 0, on_error: OnError = "raise"
) -> tuple[Iterator[dict[str, Any]], FailureGuard, np.random.Generator]:
    """This rank's and worker's raw samples of ``source`` (its shards, sizes, skip counts and remote
    options), the guard that bounds its failures in a row, and the reader's generator from ``seed``."""
    rank, _, worker, _ = reader_info()
    guard = FailureGuard(source.name, source.where, source.max_consecutive_failures)
    raw = iter_raw_samples(
        source.urls,
        train=train,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        on_error=on_error,
        expected=source.shard_sizes,
        stats=source.stats,
        guard=guard,
        known_bad=source.known_bad_shards,
        remote=source.remote,
    )
    return raw, guard, np.random.default_rng([seed, rank, worker])


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
    derives its own generator from it, so runs are reproducible for a fixed number of readers. Skips are
    counted in ``source.stats``; ``source.max_consecutive_failures`` bounds the reads in a row without a
    usable sample (then :class:`SourceError`), ``source.max_pixels`` the frame size.
    """
    _check_on_error(on_error)
    raw, guard, rng = open_source(
        source, train=train, seed=seed, shuffle_buffer=shuffle_buffer, on_error=on_error
    )
    for sample in raw:
        try:
            out = decode_source_sample(source, sample, transform, clip_sampler, rng, train=train)
        except SampleError as error:
            if on_error == "raise":
                raise
            skip_sample(error, source.stats, guard)
            continue
        guard.hit()
        yield out


def decode_source_sample(
    source: ShardSource,
    raw: dict[str, Any],
    transform: Callable[[DecodedClip, np.random.Generator], Any],
    clip_sampler: ClipSampler,
    rng: np.random.Generator,
    *,
    train: bool,
    whole_video_objects: bool = False,
) -> Any:
    """One raw sample of ``source`` decoded (checked against the source's index) and transformed.

    ``rng`` draws the clip start, the ``max_objects`` subset (training) and the transform's flips;
    ``whole_video_objects`` as for :func:`decode_sample`.

    Raises:
        SampleError: as :func:`decode_sample`.
    """
    clip = decode_sample(
        raw,
        clip_sampler,
        rng,
        default_categories=source.categories,
        task=None if source.task == "unknown" else source.task,
        modality=source.declared_modality,
        max_pixels=source.max_pixels,
        max_objects=source.max_objects if train else None,
        mask_size=getattr(transform, "mask_size", None),
        whole_video_objects=whole_video_objects,
    )
    out = transform(clip, rng)
    out.source = source.name
    return out
