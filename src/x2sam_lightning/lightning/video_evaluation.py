"""Evaluation of whole videos of any length, streamed chunk by chunk through the mask memory.

A video reaches a LightningModule either as consecutive chunk batches (``data.eval_chunk_frames``: the
loader reads it from the shard a chunk at a time, ``data/video_chunks.py``) or, without it, whole in one
batch; either way :class:`StreamingVideoEvaluator` runs it through the model ``chunk_frames`` frames at a
time (:class:`~x2sam_lightning.models.streaming.StreamingDecoder`: the bank of at most ``K`` frames and
the request's decode inputs carried from chunk to chunk), hands every chunk's per-frame predictions to the
video's *scorer*, which folds them into sums and drops them, and asks the scorer for the video's result
after its last frame. Every stored (annotated) frame is scored; nothing is cut.

The seam for both stages:

- ``inputs(chunk) -> DecodeInputs | None`` (optional): the decode inputs of a video, called on its first
  chunk (stage 2: its ``<SEG>`` instances' language inputs, from the LLM run on the video's conversation;
  None: the reply segments nothing, so no frame goes through the decoder);
- ``scorer(chunk) -> VideoScorer``: what a video's score keeps, made after ``inputs`` (stage 1:
  :class:`TrackAPScorer`, the YouTube-VIS track statistics, class-agnostic; stage 2:
  ``lightning/x2sam_video_scoring.py``, the video's tracks on its annotated frames, scored by the
  whole-clip ``Evaluator`` after the last chunk).

A video is keyed by its key and, for prompted stage-2 tasks, the conversation's prompt type (each prompt
type is its own stream of the same frames).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from x2sam_lightning.data.video_chunks import STREAM_KEY
from x2sam_lightning.metrics.streaming_tracks import TrackOverlaps
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.models.streaming import DecodeInputs, FrameOutput, StreamingDecoder
from x2sam_lightning.models.x2sam_postprocess import resize_masks
from x2sam_lightning.types import SegBatch, TrackTargets

log = logging.getLogger(__name__)


@dataclass
class VideoChunk:
    """Consecutive frames of one evaluation video with their ground truth.

    Attributes:
        video: the video's key.
        start: index of the chunk's first frame in the video.
        last: the video ends with this chunk.
        pixel_values: ``[t, 3, S, S]`` model input.
        targets: the objects present in these frames (``masks [N, t, S, S]``, ``original_masks``
            ``[N, t, H0, W0]`` when the stream carries them).
        image_size: ``(h, w)`` content inside the padded input; original_size: ``(H0, W0)``.
        batch: the batch it came from; sample: its index there.
    """

    video: str
    start: int
    last: bool
    pixel_values: Tensor
    targets: TrackTargets
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    batch: SegBatch
    sample: int

    @property
    def num_frames(self) -> int:
        return int(self.pixel_values.shape[0])

    def scoring_targets(self) -> tuple[Tensor, tuple[int, int]]:
        """Ground truth ``[N, t, h, w]`` where it is scored (the source resolution when carried, else
        the content at the model input size) and that size."""
        if self.targets.original_masks is not None:
            return self.targets.original_masks, self.original_size
        h, w = self.image_size
        return self.targets.masks[..., :h, :w], (h, w)


def _slice_targets(targets: TrackTargets, start: int, stop: int) -> TrackTargets:
    original = targets.original_masks
    return TrackTargets(
        masks=targets.masks[:, start:stop],
        labels=targets.labels,
        valid=targets.valid[:, start:stop],
        object_ids=targets.object_ids,
        iscrowd=targets.iscrowd,
        original_masks=None if original is None else original[:, start:stop],
    )


def video_chunks(batch: SegBatch, chunk_frames: int | None) -> Iterator[VideoChunk]:
    """The batch's videos as chunks of at most ``chunk_frames`` frames (None: the batch's), in order.

    A batch of a chunked stream (``meta[b]["stream"]``) continues its video; any other batch holds whole
    videos (each one starts and ends in it).
    """
    num_frames = batch.num_frames
    chunk_frames = chunk_frames or max(num_frames, 1)
    for b in range(batch.batch_size):
        stream = batch.meta[b].get(STREAM_KEY) if b < len(batch.meta) else None
        key = stream["video"] if stream else batch.keys[b]
        prompt_type = batch.conversations[b].prompt_type if b < len(batch.conversations) else None
        key = key if prompt_type is None else f"{key} ({prompt_type} prompts)"
        offset, ends = (int(stream["start"]), bool(stream["last"])) if stream else (0, True)
        for start in range(0, num_frames, chunk_frames):
            stop = min(num_frames, start + chunk_frames)
            yield VideoChunk(
                video=key,
                start=offset + start,
                last=ends and stop == num_frames,
                pixel_values=batch.pixel_values[b, start:stop],
                targets=_slice_targets(batch.targets[b], start, stop),
                image_size=tuple(int(v) for v in batch.image_sizes[b]),
                original_size=tuple(int(v) for v in batch.original_sizes[b]),
                batch=batch,
                sample=b,
            )


class VideoScorer(Protocol):
    """What one video's score keeps between its chunks (``frames`` is empty when nothing is decoded)."""

    def add(self, chunk: VideoChunk, frames: list[FrameOutput]) -> None: ...

    def finish(self) -> None: ...


@dataclass
class _OpenVideo:
    """A video between its first and last chunk: its decoder (None: nothing to decode), its scorer and
    the frame the next chunk must start at."""

    stream: StreamingDecoder | None
    scorer: VideoScorer
    next_frame: int = 0


class StreamingVideoEvaluator:
    """Streams evaluation videos through a segmentor chunk by chunk and scores every frame.

    Args:
        segmentor: the model's segmentor (a mask memory makes it track; without one frames are independent).
        scorer: makes a video's scorer from its first chunk.
        inputs: the video's decode inputs from its first chunk (stage 2; None from it: nothing to decode);
            None: stage 1.
        chunk_frames: frames run through the model at once (None: a batch's frames, as they come).
    """

    def __init__(
        self,
        segmentor: Segmentor,
        scorer: Callable[[VideoChunk], VideoScorer],
        inputs: Callable[[VideoChunk], DecodeInputs | None] | None = None,
        chunk_frames: int | None = 8,
    ) -> None:
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.segmentor, self.scorer, self.inputs = segmentor, scorer, inputs
        self.chunk_frames = None if chunk_frames is None else int(chunk_frames)
        self.open: dict[str, _OpenVideo] = {}
        self.dropped = 0

    @torch.no_grad()
    def update(self, batch: SegBatch) -> None:
        """Run the batch's chunks; score each video whose last frame this batch holds."""
        for chunk in video_chunks(batch, self.chunk_frames):
            if chunk.start == 0:
                if chunk.video in self.open:  # its end never came (a skipped chunk): not scored
                    self._drop(chunk.video)
                if self.inputs is None:
                    stream = StreamingDecoder(self.segmentor)
                else:
                    inputs = self.inputs(chunk)
                    stream = None if inputs is None else StreamingDecoder(self.segmentor, inputs)
                self.open[chunk.video] = _OpenVideo(stream, self.scorer(chunk))
            elif chunk.video not in self.open:
                raise ValueError(
                    f"evaluation video {chunk.video}: a chunk at frame {chunk.start} arrived without the "
                    "video's first frames (chunks of a video must come in order, from frame 0)"
                )
            video = self.open[chunk.video]
            if video.next_frame != chunk.start:
                raise ValueError(
                    f"evaluation video {chunk.video}: frames {video.next_frame}.. were expected, got a chunk "
                    f"starting at {chunk.start}"
                )
            frames = [] if video.stream is None else video.stream.step(chunk.pixel_values)
            video.next_frame += chunk.num_frames
            video.scorer.add(chunk, frames)
            if chunk.last:
                del self.open[chunk.video]
                video.scorer.finish()

    def _drop(self, video: str) -> None:
        log.warning("evaluation video %s ended before its last frame (a skipped chunk?): not scored", video)
        self.open.pop(video, None)
        self.dropped += 1

    def reset(self) -> None:
        """Forget unfinished videos (end of an evaluation epoch)."""
        for video in list(self.open):
            self._drop(video)


class TrackAPScorer:
    """Stage 1's video score: the class-agnostic YouTube-VIS track AP of every query's track.

    The predicted tracks are the decoder's queries over the whole video (a query keeps its object through
    the memory); their detection scores are those of ``instance_postprocess`` on the whole video (class
    probability of the mean logits times mask quality), from sums (:class:`TrackOverlaps`).

    Args:
        metric: where the finished video goes.
        num_queries: the decoder's ``Q``.
        top_k: detections kept per video.
        class_loss: how the class logits were trained.
        video_key: the video's id in the metric.
    """

    def __init__(
        self,
        metric: YouTubeVISAveragePrecision,
        num_queries: int,
        top_k: int = 100,
        class_loss: Literal["ce", "focal"] = "ce",
        video_key: int = 0,
    ) -> None:
        self.metric, self.video_key = metric, video_key
        self.overlaps = TrackOverlaps(num_queries, top_k, class_loss)

    def add(self, chunk: VideoChunk, frames: list[FrameOutput]) -> None:
        logits = torch.stack([f.pred_logits[0] for f in frames])  # [t, Q, C+1]
        masks = torch.stack([f.pred_masks[0] for f in frames], 1)  # [Q, t, h, w]
        gt, size = chunk.scoring_targets()
        padded = tuple(chunk.pixel_values.shape[-2:])
        masks = resize_masks(masks, padded, chunk.image_size, size)
        targets = chunk.targets
        labels = torch.zeros_like(targets.labels)  # class-agnostic
        self.overlaps.add(logits, masks, gt, targets.object_ids, labels, targets.iscrowd)

    def finish(self) -> None:
        self.metric.update_statistics(self.overlaps.statistics(self.video_key))


def track_ap_scorer(
    metric: YouTubeVISAveragePrecision, num_queries: int, top_k: int = 100, class_loss: str = "ce"
) -> Callable[[VideoChunk], TrackAPScorer]:
    """A :class:`StreamingVideoEvaluator` ``scorer`` feeding ``metric`` (videos numbered in order)."""
    counter = {"next": 0}

    def make(chunk: VideoChunk) -> TrackAPScorer:
        counter["next"] += 1
        return TrackAPScorer(metric, num_queries, top_k, class_loss, video_key=counter["next"])  # type: ignore[arg-type]

    return make


__all__ = [
    "StreamingVideoEvaluator",
    "TrackAPScorer",
    "VideoChunk",
    "VideoScorer",
    "track_ap_scorer",
    "video_chunks",
]
