"""The order in which training reads one source's samples: a pure function of a counter.

Exact resume and worker-count independence need every sample's place in the training stream to be
computable, not remembered: the ``k``-th sample a source gives (its *position*, counted over the whole
run) is found by arithmetic from ``k``, the shard sizes and the seed, with no iterator state.

- Pass ``p = k // N`` (``N`` samples in the source) is one pass over every sample; each pass visits the
  shards in its own seeded order (``seed, source, p``) and each shard's samples in stored order.
- Shuffling: the pass is cut into windows of ``window`` consecutive samples and each window is permuted
  with its own seeded permutation (``seed, source, p, window``). This plays the part of WebDataset's
  shuffle buffer (samples from about ``window / shard size + 1`` neighbouring shards mix) but needs no
  buffer state: sample ``k`` is known without reading samples ``0 .. k - 1``.

So a source's stream position is a single integer, the same on every rank and worker.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

#: Keeps the shard-order and window-permutation generators apart.
_SHARDS, _WINDOW = 0, 1


class SampleOrder:
    """Position ``k`` of one source's endless training stream -> ``(shard url, sample index in it)``.

    Args:
        urls: the source's shards.
        sizes: samples in each shard (0 for a shard left out, e.g. found bad at start-up).
        seed: the stream seed (the mixing seed and the source's place in the mix).
        window: samples permuted together (0 or 1: stored order within each pass's shard order).
        shuffle_shards: visit the shards in a new seeded order each pass (training); False keeps the
            listed order.

    Raises:
        ValueError: no samples at all, or sizes that do not match the urls.
    """

    def __init__(
        self,
        urls: Sequence[str],
        sizes: Sequence[int],
        seed: int,
        window: int = 0,
        shuffle_shards: bool = True,
    ) -> None:
        if len(urls) != len(sizes):
            raise ValueError(f"{len(urls)} shard urls but {len(sizes)} shard sizes")
        if any(int(n) < 0 for n in sizes):
            raise ValueError(f"shard sizes must be >= 0, got {list(sizes)}")
        kept = [(str(u), int(n)) for u, n in zip(urls, sizes) if int(n) > 0]
        if not kept:
            raise ValueError("a source needs at least one shard with samples")
        self.urls = [u for u, _ in kept]
        self.sizes = [n for _, n in kept]
        self.num_samples = sum(self.sizes)
        self.seed = [int(s) for s in np.atleast_1d(seed)]
        self.window = max(1, min(int(window), self.num_samples))
        self.shuffle_shards = bool(shuffle_shards)
        # Per-instance caches (a method-level lru_cache would share one cache across instances).
        self._pass = lru_cache(maxsize=4)(self._pass_layout)
        self._permutation = lru_cache(maxsize=64)(self._window_permutation)

    def _pass_layout(self, pass_: int) -> tuple[list[int], list[int]]:
        """Shard indices in the order pass ``pass_`` visits them, and the cumulative sample counts."""
        order = list(range(len(self.urls)))
        if self.shuffle_shards and len(order) > 1:
            order = np.random.default_rng([*self.seed, _SHARDS, pass_]).permutation(len(order)).tolist()
        ends = np.cumsum([self.sizes[i] for i in order]).tolist()
        return order, ends

    def _window_permutation(self, pass_: int, window: int, length: int) -> list[int]:
        return np.random.default_rng([*self.seed, _WINDOW, pass_, window]).permutation(length).tolist()

    def locate(self, position: int) -> tuple[str, int]:
        """``(url, index of the sample in that shard)`` of stream position ``position`` (>= 0)."""
        if position < 0:
            raise ValueError(f"stream positions start at 0, got {position}")
        pass_, i = divmod(int(position), self.num_samples)
        if self.window > 1:
            w, j = divmod(i, self.window)
            start = w * self.window
            length = min(self.window, self.num_samples - start)
            i = start + self._permutation(pass_, w, length)[j]
        order, ends = self._pass(pass_)
        slot = bisect.bisect_right(ends, i)
        before = ends[slot - 1] if slot else 0
        shard = order[slot]
        return self.urls[shard], i - before

    def window_of(self, position: int) -> tuple[int, int]:
        """``(first, end)`` stream positions of the window holding ``position`` (read together when
        shards can only be read in order)."""
        pass_, i = divmod(int(position), self.num_samples)
        start = (i // self.window) * self.window
        base = pass_ * self.num_samples
        return base + start, base + min(start + self.window, self.num_samples)
