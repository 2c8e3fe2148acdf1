"""Temperature-balanced mixing of many sources into batches of one source and one clip length.

Source choice (the authors' dataset-balanced resampling, PAPER_NOTES.md): with ``f_d = n_d / sum(n)`` the
share of source ``d``, its repeat factor is ``r_d = max(1, sqrt(t / f_d))`` (``t = 0.1``) and the source of
each batch is drawn with probability proportional to ``n_d * r_d`` (times an optional per-source weight).

Determinism and resume: the source of global batch ``i`` is drawn from a generator seeded with
``(seed, i)`` (counter-based), so the sequence is identical on every rank (all ranks take the same
modality at the same step), independent of the global seed, of the number of DataLoader workers (worker
``w`` of ``W`` builds global batches ``w, w + W, ...``, which the DataLoader returns in order) and
resumable exactly from the number of batches drawn (:class:`MixedBatchLoader` counts the batches the
training loop actually consumed and is a Lightning "stateful" loader, so the count goes into checkpoints).

Conversations (stage 2, ``conversations=True``): each sample gets the
:class:`~x2sam_lightning.types.Conversation` of its source's task (``ShardSource.task``) after the resize
transform. Training draws wordings, choices and prompts from a generator seeded with ``(seed, batch
index, slot in the batch)``, counter-based like the source schedule, so a resumed run builds the same
conversation for the same sample at the same step; evaluation seeds it from the sample key (fixed
templates and prompts) and yields prompted tasks once per prompt type (``EVAL_PROMPT_TYPES``). A sample
whose conversation cannot be built (a :class:`~x2sam_lightning.data.conversations.ConversationError`) is
a bad sample like any other: ``on_error`` raises or skips and counts it, and a per-source
:class:`~x2sam_lightning.data.shards.FailureGuard` (beside the reader's, which counts a sample as usable
once it decodes) raises a ``SourceError`` when ``max_consecutive_failures`` of them go by without a batch
(training) or a usable sample (evaluation) in between, instead of reading forever.

Seam for the full mixer (stage 2): the sample streams inside each source restart after a resume, on a
fresh seeded shard order (derived from the resume point, so the first samples are not simply repeated);
exact sample-level resume needs per-worker shard offsets. Modality-aware gradient accumulation needs only
``SegBatch.modality`` and :meth:`SourceSchedule.source_at`, which the LightningModule can query ahead.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import count
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.conversations import EVAL_PROMPT_TYPES, build_conversation, eval_generator
from x2sam_lightning.data.errors import SampleError
from x2sam_lightning.data.grouping import LengthGrouper
from x2sam_lightning.data.shards import ClipSampler, FailureGuard, OnError, iter_source, skip_sample
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.types import SegBatch, SegSample

log = logging.getLogger(__name__)

#: Batches' worth of later samples a training clip waits for others of its length before it leaves in a
#: smaller batch (data/grouping.py; only a rare clip length ever waits that long).
MAX_WAIT_BATCHES = 4

#: Stream id mixed into the training conversation seed (keeps it apart from the schedule's draws).
_CONVERSATION_STREAM = 1


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


class MixedBatchStream(IterableDataset):
    """Endless stream of :class:`SegBatch`, each from one source (mixed by temperature) and one ``T``.

    Args:
        sources: name -> ShardSource.
        batch_size: samples per image batch.
        video_batch_size: samples per video batch (videos are heavier).
        image_size: model input side (resize longest side, pad to square).
        clip_length: frames per training clip; clip_stride: step between them.
        temperature: balancing temperature ``t``.
        seed: mixing seed (source choice, shard order, shuffle buffers, clip starts).
        shuffle_buffer: samples in each source's shuffle buffer (0 or 1 = no shuffle).
        hflip_prob: horizontal flip probability (see ResizePadNormalize; keep 0 for referring data).
        on_error: ``"raise"`` or ``"skip"`` (warn and skip bad samples; a sample whose conversation
            cannot be built is such a sample too).
        start_batch: global batch index to start from (resume).
        conversations: build each sample's Conversation (stage 2); off for stage 1.
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
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("MixedBatchStream needs at least one source")
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
        self.start_batch = int(start_batch)
        self.conversations = bool(conversations)

    def batch_size_for(self, name: str) -> int:
        """Modality-aware batching: ``video_batch_size`` (the base batch) for a video source,
        ``batch_size`` (base x image multiplier) for an image source."""
        return self.video_batch_size if self.sources[name].modality == "video" else self.batch_size

    def modalities(self, start: int, count: int) -> list[str]:
        """Modality of global batches ``start .. start + count - 1`` (look-ahead; nothing is read)."""
        return [self.sources[name].modality for name in self.schedule.take(start, count)]

    def _guard(self, name: str) -> FailureGuard:
        source = self.sources[name]
        return FailureGuard(name, source.where, source.max_consecutive_failures)

    def __iter__(self) -> Iterator[SegBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        resume_point = self.start_batch
        streams: dict[str, Iterator[SegSample]] = {}
        guards: dict[str, FailureGuard] = {}
        groupers: dict[str, LengthGrouper] = {}
        # Worker w builds global batches w, w + W, ...; the DataLoader hands them out in that order.
        first = self.start_batch + worker
        for index in count(first, workers):
            name = self.schedule.source_at(index)
            if name not in streams:
                stream_seed = int(
                    np.random.SeedSequence(
                        [self.seed, list(self.sources).index(name), resume_point]
                    ).generate_state(1)[0]
                )
                streams[name] = iter_source(
                    self.sources[name],
                    self.transform,
                    self.clip_sampler,
                    train=True,
                    seed=stream_seed,
                    shuffle_buffer=self.shuffle_buffer,
                    on_error=self.on_error,
                )
                guards[name] = self._guard(name)
                size = self.batch_size_for(name)
                groupers[name] = LengthGrouper(size, max_wait=MAX_WAIT_BATCHES * size)
            batch = self._fill(name, index, streams[name], groupers[name], guards[name])
            # Kept in this worker's copy: a re-iterated persistent worker continues where it stopped
            # (its next index is start_batch + worker again).
            self.start_batch = index + workers - worker
            yield batch

    def _fill(
        self,
        name: str,
        index: int,
        stream: Iterator[SegSample],
        grouper: LengthGrouper,
        guard: FailureGuard,
    ) -> SegBatch:
        """Temporal-aware grouping (``data/grouping.py``): read samples until a batch of one clip length
        is ready."""
        while True:
            group = grouper.add(next(stream))
            if group is None:
                continue
            if not self.conversations or self._converse(name, index, group, guard):
                return collate_samples(group)
            grouper.put_back(group)  # one sample was dropped: the others wait for a replacement

    def _converse(self, name: str, index: int, group: list[SegSample], guard: FailureGuard) -> bool:
        """Build the conversations of a full group (global batch ``index``); False if one was dropped.

        Only a full batch counts as a hit of ``guard``: the samples that did converse are built again
        (with new slots) once the group refills, so counting them would let one good sample among bad
        ones reset the guard for ever.
        """
        source = self.sources[name]
        for slot, sample in enumerate(group):
            rng = np.random.default_rng([self.seed, _CONVERSATION_STREAM, index, slot])
            try:
                sample.conversation = build_conversation(sample, source.task, rng, train=True)
            except SampleError as error:
                if self.on_error == "raise":
                    raise
                del group[slot]
                skip_sample(error, source.stats, guard)
                return False
        guard.hit()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"batches_drawn": self.start_batch, "seed": self.seed, "sources": list(self.sources)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (
            list(state.get("sources", self.sources)) != list(self.sources)
            or state.get("seed", self.seed) != self.seed
        ):
            log.warning(
                "resuming the mixed stream with different sources or seed (%s, seed %s -> %s, seed %s): the "
                "source sequence will differ from the interrupted run",
                state.get("sources"),
                state.get("seed"),
                list(self.sources),
                self.seed,
            )
        self.start_batch = int(state["batches_drawn"])


def _identity(batch: SegBatch) -> SegBatch:
    return batch


class MixedBatchLoader(DataLoader):
    """DataLoader over a :class:`MixedBatchStream` that counts the batches the training step consumed.

    Lightning saves ``state_dict()`` of a loader that has one (a "stateful" loader) in the checkpoint and
    calls ``load_state_dict`` before iterating on resume, so the source sequence continues where the
    interrupted run stopped. Lightning fetches one batch ahead of the step, so the count of batches
    *fetched* overshoots by the prefetched batch: :meth:`mark_consumed` (called by
    ``SegDataModule.on_before_batch_transfer`` for each training batch that reaches the step) gives the
    exact count; without it the fetched count is saved.

    The stream is endless and meant to be iterated once (training length = ``max_steps``). If it is
    iterated again with persistent workers, each worker continues from its own position; batches that
    were prefetched but not consumed are then skipped.
    """

    def __init__(self, dataset: MixedBatchStream, num_workers: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("persistent_workers", num_workers > 0)
        super().__init__(dataset, batch_size=None, collate_fn=_identity, num_workers=num_workers, **kwargs)
        self.batches_fetched = dataset.start_batch
        self.batches_consumed: int | None = None
        self._origin = dataset.start_batch  # global index of this loader's first batch

    def __iter__(self) -> Iterator[SegBatch]:
        for batch in super().__iter__():
            self.batches_fetched += 1
            yield batch

    def mark_consumed(self) -> None:
        """Record that the next batch in order reached the training step."""
        self.batches_consumed = (self._origin if self.batches_consumed is None else self.batches_consumed) + 1

    @property
    def batches_drawn(self) -> int:
        """Batches consumed by the step (when tracked), else batches fetched."""
        return self.batches_fetched if self.batches_consumed is None else self.batches_consumed

    def state_dict(self) -> dict[str, Any]:
        return {**self.dataset.state_dict(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.batches_fetched = self._origin = self.dataset.start_batch
        self.batches_consumed = None
        # Persistent workers hold a copy of the dataset from before the load: start fresh ones.
        self._iterator = None


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
    ) -> None:
        super().__init__()
        self.source = source
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
    return DataLoader(dataset, batch_size=None, collate_fn=_identity, num_workers=num_workers, **kwargs)


__all__ = [
    "EvalBatchStream",
    "MixedBatchLoader",
    "MixedBatchStream",
    "SourceSchedule",
    "eval_loader",
    "repeat_factors",
    "source_probabilities",
]
