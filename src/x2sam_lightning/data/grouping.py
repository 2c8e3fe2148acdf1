"""Temporal-aware grouping: batches of one clip length ``T``, never padded with frames.

Within one source, samples wait in one bucket per group key (the clip length ``T`` unless the caller
gives another); a bucket that reaches the batch size is a batch (the training stream,
``MixedBatchStream``; evaluation keeps its own buckets by ``T`` and prompt type, flushed at the end). However clips are cut (a fixed clip
length, a video shorter than one clip, whole videos in evaluation), a batch never mixes lengths, so no
padding frame is ever decoded, encoded or masked out.

A length that stays rare (a few videos shorter than the clip) would hold its samples back for ever, and
their memory with them: once the longest-waiting sample has seen ``max_wait`` later samples arrive, its
bucket leaves as a smaller batch of its own length. Nothing is padded and nothing is dropped; only such a
batch is smaller than the batch size, and at most ``max_wait + 1`` samples ever wait.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from itertools import count

from x2sam_lightning.types import SegSample


def clip_length(sample: SegSample) -> int:
    """The group key of training: the clip's frame count ``T`` (``pixel_values [T, 3, H, W]``)."""
    return int(sample.pixel_values.shape[0])


class LengthGrouper:
    """Buckets of one source's samples by group key, handed out as batches of one key.

    Args:
        batch_size: samples per batch.
        max_wait: later arrivals the longest-waiting sample lets pass before its bucket leaves as a
            smaller batch (None: wait for ever; a finite pass flushes at its end instead).
    """

    def __init__(self, batch_size: int, max_wait: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_wait is not None and max_wait < batch_size:
            raise ValueError(f"max_wait ({max_wait}) must be at least the batch size ({batch_size})")
        self.batch_size, self.max_wait = int(batch_size), max_wait
        # key -> [(arrival number, sample)], in arrival order; dict order = order of first arrival.
        self.buckets: dict[Hashable, list[tuple[int, SegSample]]] = {}
        self._arrivals = count()

    @property
    def pending(self) -> int:
        return sum(len(bucket) for bucket in self.buckets.values())

    def add(self, sample: SegSample, key: Hashable | None = None) -> list[SegSample] | None:
        """Put ``sample`` in the bucket of ``key`` (default: its clip length); return a batch when one
        is ready (the bucket full, or the longest-waiting sample's bucket when it has waited
        ``max_wait`` arrivals), else None."""
        key = clip_length(sample) if key is None else key
        arrival = next(self._arrivals)
        bucket = self.buckets.setdefault(key, [])
        bucket.append((arrival, sample))
        if len(bucket) >= self.batch_size:
            return self._take(key)
        if self.max_wait is not None:
            oldest = min(self.buckets, key=lambda k: self.buckets[k][0][0])
            if arrival - self.buckets[oldest][0][0] >= self.max_wait:
                return self._take(oldest)
        return None

    def put_back(self, samples: list[SegSample], key: Hashable | None = None) -> None:
        """Return a batch's samples to the front of their bucket (a batch that could not be completed,
        e.g. one sample's conversation failed); they keep their place before later arrivals."""
        if not samples:
            return
        key = clip_length(samples[0]) if key is None else key
        first = min((n for n, _ in self.buckets.get(key, [])), default=next(self._arrivals))
        back = [(first - len(samples) + i, s) for i, s in enumerate(samples)]
        self.buckets[key] = back + self.buckets.get(key, [])

    def flush(self) -> Iterator[list[SegSample]]:
        """The under-full buckets, in order of first arrival (the end of a finite pass)."""
        for key in list(self.buckets):
            yield self._take(key)

    def _take(self, key: Hashable) -> list[SegSample]:
        bucket = self.buckets.pop(key)
        batch, rest = bucket[: self.batch_size], bucket[self.batch_size :]
        if rest:
            self.buckets[key] = rest
        return [sample for _, sample in batch]


__all__ = ["LengthGrouper", "clip_length"]
