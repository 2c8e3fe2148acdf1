"""Temperature-balanced mixing of many sources into batches of one source and one clip length.

Source choice (the authors' dataset-balanced resampling, PAPER_NOTES.md): with ``f_d = n_d / sum(n)`` the
share of source ``d``, its repeat factor is ``r_d = max(1, sqrt(t / f_d))`` (``t = 0.1``) and the source of
each batch is drawn with probability proportional to ``n_d * r_d`` (times an optional per-source weight).

Determinism and resume: the source of global batch ``i`` is drawn from a generator seeded with
``(seed, i)`` (counter-based), so the sequence is identical on every rank (all ranks take the same
modality at the same step) and independent of the global seed. Which samples a global batch holds is
planned from counters too (:mod:`~x2sam_lightning.data.batch_plan`: each source's stream position,
:mod:`~x2sam_lightning.data.sample_order`: position -> shard and sample), identically in every reader, so
it does not depend on the number of DataLoader workers (worker ``w`` of ``W`` builds global batches
``w, w + W, ...``, which the DataLoader returns in order) and a rank's share is a fixed slice of the
global batch. :class:`MixedBatchLoader` counts the batches the training loop actually consumed and saves
the plan there in the checkpoint (a Lightning "stateful" loader), so a resumed run continues with
exactly the samples of the uninterrupted one.

Conversations (stage 2, ``conversations=True``): each sample gets the
:class:`~x2sam_lightning.types.Conversation` of its source's task (``ShardSource.task``) after the resize
transform. Training draws wordings, choices and prompts from a generator seeded with ``(seed, global
batch index, slot in the global batch)``, counter-based like the source schedule, so a resumed run builds the same
conversation for the same sample at the same step; evaluation seeds it from the sample key (fixed
templates and prompts) and yields prompted tasks once per prompt type (``EVAL_PROMPT_TYPES``). A sample
whose conversation cannot be built (a :class:`~x2sam_lightning.data.conversations.ConversationError`) is
a bad sample like any other: ``on_error`` raises or skips and counts it (a training batch is then
smaller), and a per-source :class:`~x2sam_lightning.data.shards.FailureGuard` raises a ``SourceError`` when
``max_consecutive_failures`` bad samples or shards go by without a usable sample in between, instead of
reading forever.

Modality-aware gradient accumulation needs only ``SegBatch.modality`` and
:meth:`SourceSchedule.source_at`, which the LightningModule can query ahead.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from x2sam_lightning.data.batch_plan import BatchPlanner, PlannedBatch
from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.conversations import EVAL_PROMPT_TYPES, build_conversation, eval_generator
from x2sam_lightning.data.errors import SampleError, ShardError, SourceError, warn_skip
from x2sam_lightning.data.remote import RemoteOptions, is_remote
from x2sam_lightning.data.sample_access import SampleAccess
from x2sam_lightning.data.sample_order import SampleOrder
from x2sam_lightning.data.shards import (
    ClipSampler,
    FailureGuard,
    OnError,
    decode_source_sample,
    iter_source,
    reader_info,
    skip_sample,
)
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.tars import local_shard_table, read_shard
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.data.video_chunks import STREAM_KEY, iter_video_chunks
from x2sam_lightning.data.worker_lifetime import with_parent_death
from x2sam_lightning.types import SegBatch, SegSample

log = logging.getLogger(__name__)

#: Global batches' worth of later samples a training clip waits for others of its length before it leaves
#: in a smaller batch (only a rare clip length ever waits that long; see ``BatchPlanner``).
MAX_WAIT_BATCHES = 4

#: Stream ids mixed into the training seeds (keep conversations and per-sample draws apart).
_CONVERSATION_STREAM, _SAMPLE_STREAM = 1, 2


def repeat_factors(sizes: Mapping[str, int], temperature: float = 0.1) -> dict[str, float]:
    """``r_d = max(1, sqrt(t / f_d))`` with ``f_d = n_d / sum(n)``.

    Raises:
        ValueError: if a size is not positive or the temperature is negative.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    bad = {k: v for k, v in sizes.items() if v <= 0}
    if bad or not sizes:
        raise ValueError(f"every source needs a positive number of samples, got {dict(sizes)}")
    total = sum(sizes.values())
    return {name: max(1.0, math.sqrt(temperature / (n / total))) for name, n in sizes.items()}


def source_probabilities(
    sizes: Mapping[str, int], temperature: float = 0.1, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Probability of drawing each source for a batch: ``n_d * r_d * weight_d``, normalised."""
    factors = repeat_factors(sizes, temperature)
    mass = {
        name: n * factors[name] * (1.0 if weights is None else weights.get(name, 1.0))
        for name, n in sizes.items()
    }
    total = sum(mass.values())
    if total <= 0:
        raise ValueError(f"source weights leave nothing to draw: {dict(weights or {})}")
    return {name: m / total for name, m in mass.items()}


class SourceSchedule:
    """The source of every global batch index, drawn from a counter-based seeded generator.

    Args:
        probabilities: source name -> probability (see :func:`source_probabilities`).
        seed: mixing seed (from config; the same on every rank; independent of the global seed).
    """

    def __init__(self, probabilities: Mapping[str, float], seed: int = 0) -> None:
        self.names = list(probabilities)
        self.cdf = np.cumsum([probabilities[n] for n in self.names])
        self.cdf /= self.cdf[-1]
        self.seed = int(seed)

    def source_at(self, index: int) -> str:
        """Source of global batch ``index`` (random access: resume needs no replay)."""
        u = np.random.default_rng([self.seed, int(index)]).random()
        return self.names[min(int(np.searchsorted(self.cdf, u, side="right")), len(self.names) - 1)]

    def take(self, start: int, n: int) -> list[str]:
        return [self.source_at(i) for i in range(start, start + n)]


class SkippedBatch:
    """Stands in for global batch ``index`` when every sample of this rank's share was bad
    (``on_error="skip"``): the loader drops it, so batch indices stay aligned with the plan."""

    def __init__(self, index: int) -> None:
        self.index = int(index)


class MixedBatchStream(IterableDataset):
    """Endless stream of :class:`SegBatch`, each from one source (mixed by temperature) and one ``T``.

    Every reader plans every global batch (:class:`~x2sam_lightning.data.batch_plan.BatchPlanner`) and
    builds its own: DataLoader worker ``w`` of ``W`` builds batches ``start + w, start + w + W, ...`` (the
    DataLoader returns them in order) and, of each, this rank's slice. Samples are read by stream position
    (:class:`~x2sam_lightning.data.sample_access.SampleAccess`), so neither the worker count nor the
    world size changes which samples a global batch holds; a sample's clip start, object subset and flip
    come from a generator seeded with ``(seed, source, position)``, its conversation from ``(seed, batch
    index, slot in the global batch)``.

    Args:
        sources: name -> ShardSource.
        batch_size: samples per image batch (per rank).
        video_batch_size: samples per video batch (per rank; videos are heavier).
        image_size: model input side (resize longest side, pad to square).
        clip_length: frames per training clip; clip_stride: step between them.
        temperature: balancing temperature ``t``.
        seed: mixing seed (source choice, shard order, shuffle windows, clip starts).
        shuffle_buffer: samples shuffled together in each source's stream (0 or 1 = no shuffle).
        hflip_prob: horizontal flip probability (see ResizePadNormalize; keep 0 for referring data).
        on_error: ``"raise"`` or ``"skip"`` (warn and skip bad samples; a sample whose conversation
            cannot be built is such a sample too; the batch is then smaller).
        start_batch: global batch index to start from (resume without a saved plan: replayed from 0).
        conversations: build each sample's Conversation (stage 2); off for stage 1.
        rank, world_size: this process's place in the process group (None: from ``torch.distributed`` or
            the ``RANK`` / ``WORLD_SIZE`` environment, as WebDataset reads them).
    """

    def __init__(
        self,
        sources: Mapping[str, ShardSource],
        *,
        batch_size: int = 8,
        video_batch_size: int = 1,
        image_size: int = 128,
        clip_length: int = 8,
        clip_stride: int = 1,
        temperature: float = 0.1,
        seed: int = 0,
        shuffle_buffer: int = 500,
        hflip_prob: float = 0.0,
        on_error: OnError = "raise",
        start_batch: int = 0,
        conversations: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("MixedBatchStream needs at least one source")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.sources = dict(sources)
        self.batch_size, self.video_batch_size = int(batch_size), int(video_batch_size)
        self.transform = ResizePadNormalize(image_size, hflip_prob=hflip_prob)
        self.clip_sampler = ClipSampler(clip_length, clip_stride, mode="random")
        self.seed, self.shuffle_buffer, self.on_error = int(seed), int(shuffle_buffer), on_error
        self.probabilities = source_probabilities(
            {n: s.num_samples for n, s in self.sources.items()},
            temperature,
            {n: s.weight for n, s in self.sources.items()},
        )
        self.schedule = SourceSchedule(self.probabilities, self.seed)
        if rank is None or world_size is None:
            found_rank, found_world, _, _ = reader_info()
            rank = found_rank if rank is None else rank
            world_size = found_world if world_size is None else world_size
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size} processes")
        self.start_batch = int(start_batch)
        self.plan_state: dict[str, Any] | None = None  # the planner at start_batch (a resume), if known
        self.conversations = bool(conversations)
        self.shard_sizes: dict[str, list[int]] | None = None  # set by prepare()

    def batch_size_for(self, name: str) -> int:
        """Modality-aware batching: ``video_batch_size`` (the base batch) for a video source,
        ``batch_size`` (base x image multiplier) for an image source."""
        return self.video_batch_size if self.sources[name].modality == "video" else self.batch_size

    @property
    def global_batch_sizes(self) -> dict[str, int]:
        """Source -> samples in one global batch (all ranks)."""
        return {name: self.world_size * self.batch_size_for(name) for name in self.sources}

    def mean_global_batch(self) -> float:
        """Expected samples in a global batch under the mixing probabilities."""
        sizes = self.global_batch_sizes
        return sum(p * sizes[name] for name, p in self.probabilities.items())

    # -- set-up --------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Every source's shard sizes, once, in the process that builds the DataLoader (workers inherit
        them): from the index, or by reading the shards of a source given only ``urls``. There a bad
        shard raises (``on_error="raise"``) or is left out, logged and counted (``"skip"``); a source
        left without a readable shard is a :class:`SourceError` at start-up."""
        if self.shard_sizes is not None:
            return
        sizes: dict[str, list[int]] = {}
        for name, source in self.sources.items():
            urls = source.urls
            if not urls:
                raise SourceError(source.where, f"source {name!r} has no shard urls")
            known = source.shard_sizes
            if known:
                sizes[name] = [known[url] for url in urls]
                continue
            counts = []
            for url in urls:
                try:
                    counts.append(_count_samples(url, source.remote))
                except ShardError as error:
                    if self.on_error == "raise":
                        raise
                    warn_skip(error, "shard")
                    source.stats.add("shards_skipped")
                    counts.append(0)
            if not any(counts):
                raise SourceError(
                    source.where, f"source {name!r}: no readable shard (all {len(urls)} skipped, see above)"
                )
            sizes[name] = counts
        self.shard_sizes = sizes

    def orders(self) -> dict[str, SampleOrder]:
        """Each source's :class:`SampleOrder` (seeded with the mixing seed and the source's place)."""
        self.prepare()
        assert self.shard_sizes is not None
        return {
            name: SampleOrder(
                source.urls, self.shard_sizes[name], seed=[self.seed, i], window=self.shuffle_buffer
            )
            for i, (name, source) in enumerate(self.sources.items())
        }

    def accesses(self) -> dict[str, SampleAccess]:
        """A reader's random access to every source's training stream."""
        return {
            name: SampleAccess(order, self.sources[name].shard_sizes, remote=self.sources[name].remote)
            for name, order in self.orders().items()
        }

    def planner(self, accesses: Mapping[str, SampleAccess]) -> BatchPlanner:
        """A planner at this stream's start (``plan_state``, or replayed up to ``start_batch``); video
        sources read each sample's json through ``accesses`` to learn its clip length."""
        planner = BatchPlanner(
            self.schedule.source_at,
            self.global_batch_sizes,
            {
                name: self._clip_length_reader(accesses[name])
                for name, source in self.sources.items()
                if source.modality == "video"
            },
            max_wait_batches=MAX_WAIT_BATCHES,
            world_size=self.world_size,
        )
        if self.plan_state is not None:
            planner.load_state_dict(self.plan_state)
        planner.advance_to(self.start_batch)
        return planner

    def _clip_length_reader(self, access: SampleAccess) -> Callable[[int], int]:
        sampler = self.clip_sampler

        def clip_length(position: int) -> int:
            # T = frames of the clip cut from a video of num_frames (the same for every clip start). A
            # sample that cannot say is planned at the full length; decoding it then finds the defect.
            try:
                frames = json.loads(access.get(position, exts=("json",))["json"])["num_frames"]
                if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0:
                    return len(sampler(frames, np.random.default_rng(0)))
            except (SampleError, ValueError, KeyError, TypeError):
                pass
            return sampler.length

        return clip_length

    # -- iteration -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SegBatch | SkippedBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        accesses = self.accesses()
        planner = self.planner(accesses)
        guards = {name: self._guard(name) for name in self.sources}
        first = planner.index
        try:
            while True:
                planned = planner.next()
                if (planned.index - first) % workers == worker:
                    yield self._build(planned, accesses[planned.source], guards[planned.source])
        finally:
            for access in accesses.values():
                access.close()

    def modalities(self, start: int, count: int) -> list[str]:
        """Modality of global batches ``start .. start + count - 1`` (look-ahead; nothing is read)."""
        return [self.sources[name].modality for name in self.schedule.take(start, count)]

    def _guard(self, name: str) -> FailureGuard:
        source = self.sources[name]
        return FailureGuard(name, source.where, source.max_consecutive_failures)

    def _build(
        self, planned: PlannedBatch, access: SampleAccess, guard: FailureGuard
    ) -> SegBatch | SkippedBatch:
        """This rank's share of a planned global batch, decoded; bad samples raise or are left out."""
        name = planned.source
        source = self.sources[name]
        index = self.list_index(name)
        positions = planned.rank_slice(self.rank, self.world_size)
        first_slot = self.rank * len(positions)
        samples: list[SegSample] = []
        for slot, position in enumerate(positions, start=first_slot):
            try:
                raw = access.get(position)
            except ShardError as error:
                if self.on_error == "raise":
                    raise
                # Each position is decoded by one reader: the one holding a shard's first sample in this
                # pass reports the shard (once per pass over the source).
                if access.order.locate(position)[1] == 0:
                    warn_skip(error, "shard")
                    source.stats.add("shards_skipped")
                guard.miss()
                continue
            rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, index, position])
            try:
                sample = decode_source_sample(source, raw, self.transform, self.clip_sampler, rng, train=True)
                if self.conversations:
                    rng = np.random.default_rng([self.seed, _CONVERSATION_STREAM, planned.index, slot])
                    sample.conversation = build_conversation(sample, source.task, rng, train=True)
            except SampleError as error:
                if self.on_error == "raise":
                    raise
                skip_sample(error, source.stats, guard)
                continue
            guard.hit()
            samples.append(sample)
        return collate_samples(samples) if samples else SkippedBatch(planned.index)

    def list_index(self, name: str) -> int:
        return list(self.sources).index(name)

    # -- state ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches_drawn": self.start_batch,
            "seed": self.seed,
            "sources": list(self.sources),
            "world_size": self.world_size,
            "global_batch_sizes": self.global_batch_sizes,
            "shuffle_buffer": self.shuffle_buffer,
            "plan": self.plan_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Start from a saved position. With other sources, seed or shuffle window the source sequence or
        the samples differ from the interrupted run (a warning says so); with another world size the
        per-source sample sequences continue (positions count samples), in global batches of the new size."""
        changed = {
            key: (state.get(key), value)
            for key, value in (
                ("sources", list(self.sources)),
                ("seed", self.seed),
                ("shuffle_buffer", self.shuffle_buffer),
                ("world_size", self.world_size),
                ("global_batch_sizes", self.global_batch_sizes),
            )
            if key in state and state[key] != value
        }
        if changed:
            log.warning(
                "resuming the mixed stream with changed settings (saved -> now: %s): %s",
                changed,
                "the batches continue each source's sample sequence in the new batch sizes"
                if set(changed) <= {"world_size", "global_batch_sizes"}
                else "the source or sample sequence will differ from the interrupted run",
            )
        self.start_batch = int(state["batches_drawn"])
        plan = state.get("plan")
        self.plan_state = dict(plan) if plan is not None else None


def _count_samples(url: str, remote: RemoteOptions | None = None) -> int:
    """Samples in a shard (headers only for a local one; a streamed one is read through)."""
    if not is_remote(url):
        table = local_shard_table(url)
        if table is not None:
            return len(table.samples)
    return sum(1 for _ in read_shard(url, remote=remote))


def _identity(batch: SegBatch) -> SegBatch:
    return batch


class MixedBatchLoader(DataLoader):
    """DataLoader over a :class:`MixedBatchStream`: epochs of a fixed number of batches, exact resume.

    **Epochs.** The stream is endless; an epoch is ``epoch_samples`` samples (default: the sum of the
    sources' sizes), made into ``len(loader) = max(1, round(epoch_samples / m))`` global batches with ``m``
    the expected samples of a global batch under the mixing probabilities, so Lightning shows real totals
    and ends epochs where the data says. The DataLoader iterator (and its workers) lives across epochs:
    each epoch takes the next ``len(loader)`` batches of the same stream.

    **Resume.** Lightning saves ``state_dict()`` of a loader that has one (a "stateful" loader) in the
    checkpoint and calls ``load_state_dict`` before iterating on resume. The state is the number of
    batches the training step consumed and the planner's state there (each source's next stream position
    and the positions waiting for a batch of their clip length): nothing about workers, which only ever
    build batches from the plan. Lightning fetches one batch ahead of the step and workers prefetch more:
    :meth:`mark_consumed` (called by ``SegDataModule.on_before_batch_transfer`` for each training batch
    that reaches the step) gives the exact count; without it the fetched count is saved.

    Args:
        dataset: the stream.
        num_workers: DataLoader workers.
        epoch_samples: samples in an epoch (None: the sum of the sources' ``num_samples``).
    """

    def __init__(
        self, dataset: MixedBatchStream, num_workers: int = 0, epoch_samples: int | None = None, **kwargs: Any
    ) -> None:
        # One DataLoader iterator serves every epoch: workers persist without persistent_workers.
        kwargs.setdefault("persistent_workers", False)
        super().__init__(
            dataset,
            batch_size=None,
            collate_fn=_identity,
            num_workers=num_workers,
            **with_parent_death(kwargs),
        )
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {epoch_samples}")
        self.epoch_samples = (
            int(epoch_samples)
            if epoch_samples is not None
            else sum(s.num_samples for s in dataset.sources.values())
        )
        self._reset()

    def _reset(self) -> None:
        dataset: MixedBatchStream = self.dataset  # type: ignore[assignment]
        self._batches: Iterator[SegBatch | SkippedBatch] | None = None
        self._next_index = dataset.start_batch  # global index of the next item __iter__ takes
        self._pulled = dataset.start_batch  # global index of the next item of _batches
        self._ahead: deque[tuple[int, SegBatch | SkippedBatch]] = deque()  # pulled by upcoming_modalities
        self._epoch_end = dataset.start_batch  # global index where the current epoch ends
        self._in_flight: deque[int] = deque()  # indices handed out, not yet marked consumed
        self.batches_fetched = dataset.start_batch
        self.batches_consumed: int | None = None
        self._replica: BatchPlanner | None = None  # the plan in this process, for state and counts
        self._replica_accesses: dict[str, SampleAccess] = {}

    def __len__(self) -> int:
        dataset: MixedBatchStream = self.dataset  # type: ignore[assignment]
        return max(1, round(self.epoch_samples / dataset.mean_global_batch()))

    def __iter__(self) -> Iterator[SegBatch]:
        """The batches of one epoch: up to the next multiple of ``len(self)`` (a resumed epoch is shorter;
        an epoch whose batches were all skipped, ``on_error="skip"``, runs on into the next)."""
        if self._batches is None:
            self.dataset.prepare()  # type: ignore[attr-defined]
            self._batches = super().__iter__()
            self._next_index = self._pulled = self.dataset.start_batch  # type: ignore[attr-defined]
            self._ahead.clear()
        length = len(self)
        self._epoch_end = (self._next_index // length + 1) * length
        yielded = False
        while True:
            if self._next_index >= self._epoch_end:
                if yielded:
                    break
                # Every batch of the epoch was skipped: an empty epoch joins the next.
                self._epoch_end += length
            index, item = self._take()
            self._next_index = index + 1
            self.batches_fetched = self._next_index
            if isinstance(item, SkippedBatch):
                continue
            self._in_flight.append(index)
            yielded = True
            yield item

    def _take(self) -> tuple[int, SegBatch | SkippedBatch]:
        """The next global batch and its index: one pulled ahead, else the next of the workers."""
        if self._ahead:
            return self._ahead.popleft()
        assert self._batches is not None
        item = next(self._batches)
        self._pulled += 1
        return self._pulled - 1, item

    def upcoming_modalities(self, count: int) -> list[str]:
        """Modalities of the next ``count`` batches the training step will get after the one it holds,
        up to the end of the epoch: handed out and not yet consumed (Lightning fetches one ahead), then
        those still to come. A batch this process skips (``SkippedBatch``: every sample of its share
        bad) never reaches the step, so it is left out; to know, the batches are pulled from the
        workers (kept for ``__iter__``, which hands them out in order)."""
        dataset: MixedBatchStream = self.dataset  # type: ignore[assignment]
        indices = [i for i in self._in_flight if i >= self.batches_drawn][:count]
        for index, item in self._ahead:
            if len(indices) >= count or index >= self._epoch_end:
                break
            if not isinstance(item, SkippedBatch):
                indices.append(index)
        while len(indices) < count and self._batches is not None and self._pulled < self._epoch_end:
            index, item = self._pulled, next(self._batches)
            self._pulled += 1
            self._ahead.append((index, item))
            if not isinstance(item, SkippedBatch):
                indices.append(index)
        return [dataset.modalities(index, 1)[0] for index in indices]

    def mark_consumed(self) -> None:
        """Record that the oldest batch handed out reached the training step."""
        if self._in_flight:
            self.batches_consumed = self._in_flight.popleft() + 1

    @property
    def batches_drawn(self) -> int:
        """Global batches consumed by the step (when tracked), else fetched."""
        return self.batches_fetched if self.batches_consumed is None else self.batches_consumed

    def _plan_at(self, index: int) -> BatchPlanner:
        """This process's copy of the plan, advanced to batch ``index`` (planning only: nothing decoded)."""
        dataset: MixedBatchStream = self.dataset  # type: ignore[assignment]
        if self._replica is None or self._replica.index > index:
            for access in self._replica_accesses.values():
                access.close()
            self._replica_accesses = dataset.accesses()
            self._replica = dataset.planner(self._replica_accesses)
        self._replica.advance_to(index)
        return self._replica

    def samples_seen(self) -> dict[str, int]:
        """Source -> samples of the global batches consumed so far (all ranks), for logs and progress."""
        return dict(self._plan_at(self.batches_drawn).samples)

    def state_dict(self) -> dict[str, Any]:
        drawn = self.batches_drawn
        return {
            **self.dataset.state_dict(),  # type: ignore[attr-defined]
            "batches_drawn": drawn,
            "plan": self._plan_at(drawn).state_dict(),
            "epoch_batches": len(self),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]
        for access in self._replica_accesses.values():
            access.close()
        # Workers hold a copy of the dataset from before the load: the next epoch starts fresh ones.
        self._iterator = None
        self._reset()


class EvalBatchStream(IterableDataset):
    """One finite, ordered pass over one source as :class:`SegBatch` es (grouped by ``T``).

    Args:
        source: the ShardSource.
        batch_size, video_batch_size: samples per image / video batch.
        image_size: model input side.
        clip: which frames of each video to use (default: whole video up to 64 frames).
        on_error: ``"raise"`` (default; an evaluation must not silently drop samples) or ``"skip"`` (a
            sample whose conversation cannot be built is skipped whole, every prompt type, and counted once).
        conversations: build each sample's Conversation (stage 2). Samples of a task in
            ``EVAL_PROMPT_TYPES`` are then yielded once per prompt type, in batches of one prompt type.
        chunk_frames: read a video source's videos ``chunk_frames`` frames at a time, each chunk its own
            batch, in order, with its place in the video in ``meta[0]["stream"]`` (``data.video_chunks``;
            ``clip`` then does not apply); None: whole videos, one sample each.
    """

    def __init__(
        self,
        source: ShardSource,
        *,
        batch_size: int = 8,
        video_batch_size: int = 1,
        image_size: int = 128,
        clip: ClipSampler | None = None,
        on_error: OnError = "raise",
        conversations: bool = False,
        chunk_frames: int | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.chunk_frames = chunk_frames if source.modality == "video" else None
        self.batch_size = video_batch_size if source.modality == "video" else batch_size
        self.transform = ResizePadNormalize(image_size, keep_original=True)
        self.clip = clip or ClipSampler(mode="all", max_frames=64)
        self.on_error = on_error
        self.conversations = bool(conversations)

    def _variants(self, sample: SegSample, guard: FailureGuard) -> list[SegSample]:
        """The sample, or one copy per evaluation prompt type, each with its conversation; none when a
        conversation cannot be built and ``on_error="skip"``."""
        if not self.conversations:
            return [sample]
        task = self.source.task
        variants = []
        try:
            for prompt_type in EVAL_PROMPT_TYPES.get(task, (None,)):
                rng = eval_generator(sample.key, prompt_type)
                conversation = build_conversation(sample, task, rng, train=False, prompt_type=prompt_type)
                variants.append(replace(sample, conversation=conversation))
        except SampleError as error:
            if self.on_error == "raise":
                raise
            skip_sample(error, self.source.stats, guard)
            return []
        guard.hit()
        return variants

    def __iter__(self) -> Iterator[SegBatch]:
        bucket: dict[tuple[int, str | None], list[SegSample]] = defaultdict(list)
        source = self.source
        guard = FailureGuard(source.name, source.where, source.max_consecutive_failures)
        if self.chunk_frames is not None:  # a video's chunks, one batch each, in order
            # Stage 2: a video's conversations are built on its first chunk (the conditions and prompts
            # the LLM reads there) and every later chunk carries them.
            first: list[SegSample] = []
            for chunk in iter_video_chunks(source, self.transform, self.chunk_frames, self.on_error):
                if chunk.meta[STREAM_KEY]["start"] == 0 or not self.conversations:
                    first = variants = self._variants(chunk, guard)
                else:
                    variants = [replace(chunk, conversation=v.conversation) for v in first]
                for sample in variants:
                    yield collate_samples([sample])
            return
        for decoded in iter_source(source, self.transform, self.clip, train=False, on_error=self.on_error):
            for sample in self._variants(decoded, guard):
                prompt_type = sample.conversation.prompt_type if sample.conversation else None
                group = bucket[(sample.pixel_values.shape[0], prompt_type)]
                group.append(sample)
                if len(group) == self.batch_size:
                    yield collate_samples(group)
                    group.clear()
        for group in bucket.values():
            if group:
                yield collate_samples(group)


def eval_loader(dataset: EvalBatchStream, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """A plain DataLoader over an EvalBatchStream (batches are built in the workers)."""
    kwargs.setdefault("persistent_workers", num_workers > 0)
    return DataLoader(
        dataset, batch_size=None, collate_fn=_identity, num_workers=num_workers, **with_parent_death(kwargs)
    )


__all__ = [
    "EvalBatchStream",
    "MixedBatchLoader",
    "MixedBatchStream",
    "SourceSchedule",
    "eval_loader",
    "repeat_factors",
    "source_probabilities",
]
