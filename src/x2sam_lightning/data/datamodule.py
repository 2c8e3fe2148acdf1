"""``SegDataModule``: mixed training stream and per-source evaluation loaders over WebDataset shards.

Built by Hydra (``conf/data``): ``train_sources`` / ``val_sources`` are dicts of
:class:`~x2sam_lightning.data.sources.ShardSource` nodes, each with its own ``_target_``.

Every loader yields :class:`~x2sam_lightning.types.SegBatch` with uint8 frames. Moving a batch to the device
is ``batch.to(device)``, which also makes its pixels the model input there (resized, normalised, padded:
once, on the device); this module's ``transfer_batch_to_device`` does that for SegBatch. Lightning prefers a
DataModule's batch hooks over the LightningModule's (with a warning when both override one), so a
LightningModule used with this DataModule needs no ``transfer_batch_to_device`` and must not rely on its
own ``on_before_batch_transfer`` (this one counts consumed training batches for exact resume).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from x2sam_lightning.data.mixing import EvalBatchStream, MixedBatchLoader, MixedBatchStream, eval_loader
from x2sam_lightning.data.shards import ClipSampler, OnError
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import ensure_synthetic
from x2sam_lightning.types import SegBatch

log = logging.getLogger(__name__)


def _enabled(sources: Mapping[str, ShardSource | None] | None) -> dict[str, ShardSource]:
    return {name: source for name, source in (sources or {}).items() if source is not None}


class SegDataModule(pl.LightningDataModule):
    """Segmentation data: an endless temperature-mixed training stream, finite one-pass evaluation.

    Args:
        train_sources: name -> ShardSource for training (mixed by temperature); a None value is skipped.
        val_sources: name -> ShardSource for validation (one loader each, in dict order).
        test_sources: name -> ShardSource for testing (defaults to ``val_sources``).
        batch_size: the base batch: samples per video batch (the paper: 1 per device).
        image_batch_multiplier: image batches hold ``batch_size x image_batch_multiplier`` samples (the
            paper: 4). With the per-modality accumulation of the LightningModule
            (``lightning/accumulation.py``: 1 step for images, 4 for videos) both modalities then feed
            the same number of samples to an optimiser step.
        num_workers: DataLoader workers (persistent when > 0).
        image_size: model input side (longest side resized to it, padded to a square).
        clip_length: frames per training clip.
        clip_stride: step between training clip frames (evaluation reads every stored frame).
        eval_max_frames: evaluation reads whole videos; a longer one stops it with
            :class:`~x2sam_lightning.data.shards.VideoTooLong` (never scored on a cut video). Not used
            with ``eval_chunk_frames``.
        eval_chunk_frames: read evaluation videos this many frames at a time, each chunk a batch of its
            own with its place in the video in ``meta[0]["stream"]`` (``data/video_chunks.py``): videos of
            any length, bounded memory, for a module that streams them (stage 1). None: whole videos.
        temperature: mixing temperature ``t`` (repeat factor ``max(1, sqrt(t / f_d))``).
        seed: mixing / shuffling seed (independent of the global seed; identical on every rank).
        shuffle_buffer: per-source training shuffle buffer (samples).
        hflip_prob: training horizontal-flip probability (pixels and masks only; 0 for referring data).
        on_error: ``"raise"`` or ``"skip"`` for bad training samples and shards (docs/data.md, "Bad input").
        pin_memory: DataLoader ``pin_memory``.
        synthetic: ``{"root": ..., **generate_synthetic kwargs}``: generate the synthetic sets there in
            ``prepare_data`` unless they already exist with the same settings.
        conversations: build each sample's :class:`~x2sam_lightning.types.Conversation` from its source's
            task (stage 2; ``SegBatch.conversations``). Off for stage 1.
        eval_on_error: the same for evaluation; ``"raise"`` by default, since a skipped sample changes
            the score (``"skip"`` evaluates every good sample exactly once and counts the rest).
        epoch_samples: training samples in an epoch, over all processes (None: the sum of the training
            sources' sizes); the loader makes it a fixed number of batches (see :class:`MixedBatchLoader`).

    Skipped samples and shards are counted per source: :meth:`skip_stats`.
    """

    def __init__(
        self,
        train_sources: Mapping[str, ShardSource] | None = None,
        val_sources: Mapping[str, ShardSource] | None = None,
        test_sources: Mapping[str, ShardSource] | None = None,
        batch_size: int = 8,
        image_batch_multiplier: int = 1,
        num_workers: int = 0,
        image_size: int = 128,
        clip_length: int = 8,
        clip_stride: int = 1,
        eval_max_frames: int = 64,
        temperature: float = 0.1,
        seed: int = 0,
        shuffle_buffer: int = 500,
        hflip_prob: float = 0.0,
        on_error: OnError = "raise",
        pin_memory: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        conversations: bool = False,
        eval_on_error: OnError = "raise",
        epoch_samples: int | None = None,
        eval_chunk_frames: int | None = None,
    ) -> None:
        super().__init__()
        # A source set to null in a config (``train_sources.synthetic_vid: null``) is switched off.
        self.train_sources = _enabled(train_sources)
        self.val_sources = _enabled(val_sources)
        self.test_sources = _enabled(test_sources) if test_sources is not None else dict(self.val_sources)
        if int(batch_size) < 1 or int(image_batch_multiplier) < 1:
            raise ValueError(
                f"batch_size and image_batch_multiplier must be >= 1, got {batch_size} and {image_batch_multiplier}"
            )
        # Concrete sizes of the streams: image batches = base x multiplier, video batches = base.
        self.batch_size = int(batch_size) * int(image_batch_multiplier)
        self.video_batch_size = int(batch_size)
        self.num_workers, self.image_size = int(num_workers), int(image_size)
        self.clip_length, self.clip_stride, self.eval_max_frames = (
            int(clip_length),
            int(clip_stride),
            int(eval_max_frames),
        )
        self.temperature, self.seed, self.shuffle_buffer = float(temperature), int(seed), int(shuffle_buffer)
        self.hflip_prob, self.on_error, self.pin_memory = float(hflip_prob), on_error, bool(pin_memory)
        self.eval_on_error = eval_on_error
        self.synthetic = None if synthetic is None else dict(synthetic)
        if self.synthetic is not None and "root" not in self.synthetic:
            raise ValueError("SegDataModule(synthetic=...) needs a 'root' folder")
        self.conversations = bool(conversations)
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.eval_chunk_frames = None if eval_chunk_frames is None else int(eval_chunk_frames)
        if self.eval_chunk_frames is not None and self.eval_chunk_frames < 1:
            raise ValueError(f"eval_chunk_frames must be >= 1 or None, got {eval_chunk_frames}")
        self._train_loader: MixedBatchLoader | None = None

    def prepare_data(self) -> None:
        """Generate the synthetic data on first use (rank 0 only; a no-op when it is already there)."""
        if self.synthetic is not None:
            options = dict(self.synthetic)
            ensure_synthetic(options.pop("root"), **options)

    def setup(self, stage: str) -> None:
        """Look for every shard the stage reads (:meth:`ShardSource.check_shards`), so a missing or
        unreachable one stops the run (or is dropped, ``missing_shards: skip``) now, not in a worker later."""
        groups = {"fit": (self.train_sources, self.val_sources), "validate": (self.val_sources,)}
        for sources in groups.get(stage, (self.test_sources,)):
            for source in sources.values():
                source.check_shards()

    @property
    def val_source_names(self) -> list[str]:
        """Source name of each validation loader (``dataloader_idx`` -> name)."""
        return list(self.val_sources)

    @property
    def test_source_names(self) -> list[str]:
        return list(self.test_sources)

    def train_dataloader(self) -> MixedBatchLoader:
        if not self.train_sources:
            raise ValueError("SegDataModule has no train_sources")
        # A reloaded loader continues where the previous one stopped (its plan at the consumed batch).
        state = self._train_loader.state_dict() if self._train_loader is not None else None
        trainer = self.trainer  # None outside a Trainer
        stream = MixedBatchStream(
            self.train_sources,
            batch_size=self.batch_size,
            video_batch_size=self.video_batch_size,
            image_size=self.image_size,
            clip_length=self.clip_length,
            clip_stride=self.clip_stride,
            temperature=self.temperature,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            hflip_prob=self.hflip_prob,
            on_error=self.on_error,
            conversations=self.conversations,
            # The process group as Lightning set it up (DataLoader workers cannot ask torch.distributed).
            rank=trainer.global_rank if trainer is not None else None,
            world_size=trainer.world_size if trainer is not None else None,
        )
        log.info("training mix: %s", {k: round(v, 4) for k, v in stream.probabilities.items()})
        self._train_loader = MixedBatchLoader(
            stream, num_workers=self.num_workers, epoch_samples=self.epoch_samples, pin_memory=self.pin_memory
        )
        if state is not None:
            self._train_loader.load_state_dict(state)
        # Lightning warns that the length of a loader over an IterableDataset may be wrong with workers;
        # here it is exact: every worker builds its share of one plan (see MixedBatchLoader).
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        return self._train_loader

    def _eval_loaders(self, sources: Mapping[str, ShardSource]) -> list[DataLoader]:
        # Every stored frame is scored (stride 1): recipes store a video's annotated frames.
        clip = ClipSampler(self.clip_length, 1, mode="all", max_frames=self.eval_max_frames)
        return [
            eval_loader(
                EvalBatchStream(
                    source,
                    batch_size=self.batch_size,
                    video_batch_size=self.video_batch_size,
                    image_size=self.image_size,
                    clip=clip,
                    conversations=self.conversations,
                    on_error=self.eval_on_error,
                    chunk_frames=self.eval_chunk_frames,
                ),
                # More workers than shards would leave workers idle; each worker reads its own shards.
                num_workers=min(self.num_workers, len(source.urls)),
                pin_memory=self.pin_memory,
            )
            for source in sources.values()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        """One finite, ordered loader per validation source (see :attr:`val_source_names`)."""
        return self._eval_loaders(self.val_sources)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sources)

    def predict_dataloader(self) -> list[DataLoader]:
        """``predict`` reads the test sources (whole videos, no shuffling)."""
        return self._eval_loaders(self.test_sources)

    def upcoming_train_modalities(self, count: int) -> list[str]:
        """Modalities of the ``count`` training batches after the one the step holds (fewer at the end of
        the epoch): the LightningModule plans its accumulation windows with them
        (``lightning/accumulation.py``). The source schedule has random access; a planned batch this
        process skips whole (``on_error="skip"``) never reaches the step and is not counted, so the
        loader pulls the coming batches from its workers to know (see
        :meth:`MixedBatchLoader.upcoming_modalities`)."""
        loader = self._train_loader
        if loader is None:
            raise RuntimeError(
                "upcoming_train_modalities needs the training loader: call train_dataloader first"
            )
        return loader.upcoming_modalities(count)

    def skip_stats(self) -> dict[str, dict[str, int]]:
        """Source name -> ``{"samples_skipped", "shards_skipped"}`` so far (``on_error="skip"``), over all
        train / val / test sources, summed over this process's DataLoader workers.

        Log it from the LightningModule, e.g. in ``on_train_epoch_end``:
        ``self.log_dict({f"data/{k}/{n}": v for k, c in self.trainer.datamodule.skip_stats().items()
        for n, v in c.items()}, sync_dist=True, reduce_fx="sum")``.
        """
        sources = {**self.train_sources, **self.val_sources, **self.test_sources}
        return {name: source.stats.as_dict() for name, source in sources.items()}

    def samples_seen(self) -> dict[str, int]:
        """Source -> training samples consumed so far over all processes (empty before training)."""
        return {} if self._train_loader is None else self._train_loader.samples_seen()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count training batches that reach the step (Lightning fetches one ahead; resume needs the
        consumed count, see :class:`MixedBatchLoader`)."""
        trainer = self.trainer
        if trainer is not None and trainer.training and self._train_loader is not None:
            self._train_loader.mark_consumed()
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A SegBatch moves as uint8 frames and becomes model input on ``device`` (:meth:`SegBatch.to`)."""
        if isinstance(batch, SegBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
