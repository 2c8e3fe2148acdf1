"""Evaluation videos read from the shard a chunk of frames at a time (any length, bounded memory).

``SegDataModule(eval_chunk_frames=c)`` makes each evaluation video a run of consecutive batches of one
video each, ``c`` frames per batch (the last one shorter). Each chunk decodes only its frames and their
masks (:func:`~x2sam_lightning.data.shards.decode_sample` with the chunk's frame indices); the video's
compressed bytes stay with the raw sample until its last chunk. The chunk's place in its video is in
``SegBatch.meta[0]["stream"]``::

    {"video": key, "start": first frame, "num_frames": frames of the whole video, "last": bool}

so a LightningModule carries its mask memory and its metric sums from one batch to the next
(``lightning/video_evaluation.py``) and scores the video once its last chunk is in. There is no
``eval_max_frames`` limit on this path: nothing is cut, and nothing holds the whole video.

Every chunk holds the objects of the whole video (those that show on any of its frames), in the order the
whole clip has them, absent ones with empty masks: a chunk's targets line up with the video's, and so do
the object indices of a stage-2 conversation built on the first chunk (``EvalBatchStream`` gives every
chunk that conversation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from x2sam_lightning.data.errors import SampleError
from x2sam_lightning.data.schema import parse_json
from x2sam_lightning.data.shards import (
    OnError,
    decode_source_sample,
    open_source,
    skip_sample,
)
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.types import SegSample

#: ``SegBatch.meta[b]`` key of a chunk's place in its video.
STREAM_KEY = "stream"


@dataclass(frozen=True)
class ChunkFrames:
    """A clip sampler (``(num_frames, rng) -> indices``) that picks frames ``[start, stop)``."""

    start: int
    stop: int

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> list[int]:
        return list(range(self.start, min(self.stop, num_frames)))


def iter_video_chunks(
    source: ShardSource,
    transform: Any,
    chunk_frames: int,
    on_error: OnError = "raise",
) -> Iterator[SegSample]:
    """Every sample of ``source`` for this reader; videos as consecutive chunks of ``chunk_frames`` frames
    (images as they are), each with its :data:`STREAM_KEY` meta.

    A bad sample raises (``on_error="raise"``) or, skipped, is dropped from the chunk where it failed on
    (a consumer sees a video without its last chunk, then the next video's first: it drops the open one).
    """
    if chunk_frames < 1:
        raise ValueError(f"eval_chunk_frames must be >= 1, got {chunk_frames}")
    raw_samples, guard, rng = open_source(source, train=False, on_error=on_error)
    for raw in raw_samples:
        try:
            sample = parse_json(
                raw.get("json", b"{}"), str(raw.get("__url__", "")), str(raw.get("__key__", ""))
            )
            total = int(sample.get("num_frames", 1)) if isinstance(sample, dict) else 1
            for start in range(0, max(total, 1), chunk_frames):
                frames = ChunkFrames(start, start + chunk_frames)
                out = decode_source_sample(
                    source, raw, transform, frames, rng, train=False, whole_video_objects=True
                )
                out.meta[STREAM_KEY] = {
                    "video": out.key,
                    "start": start,
                    "num_frames": total,
                    "last": start + chunk_frames >= total,
                }
                yield out
        except SampleError as error:
            if on_error == "raise":
                raise
            skip_sample(error, source.stats, guard)
            continue
        guard.hit()
