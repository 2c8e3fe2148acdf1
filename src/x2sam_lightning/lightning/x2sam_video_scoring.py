"""Stage 2's score of a streamed video: its tracks kept chunk by chunk, scored whole by :class:`Evaluator`.

``X2SAMJoint`` evaluates a video read in chunks (``data.eval_chunk_frames``) with
:class:`~x2sam_lightning.lightning.video_evaluation.StreamingVideoEvaluator` and this seam:

- :meth:`X2SAMVideoScoring.inputs`, on the video's first chunk: ``X2SAM.generate`` answers the video's
  conversation (built on that chunk by the reader, ``data/mixing.py``) and the reply's ``<SEG>``
  instances give the decode inputs (:func:`~x2sam_lightning.models.streaming.generate_decode_inputs`, as
  the video predictor does). The LLM reads the first chunk's frames (``video_llm_frames`` spread over
  it, as the whole-clip path spreads them over the clip): the reader then holds one chunk at a time, and
  a video of at most one chunk gets exactly what the whole clip gets;
- :class:`VideoTracks`: every chunk goes through the ``StreamingDecoder`` with those inputs, carrying the
  memory; the tracks keep, per instance, the class logits summed over every frame (a track's logits are
  their mean over the video, as ``Segmentor.decode`` makes them) and, on the annotated frames only, the
  queries' mask logits at the decoder's stride 4 and the ground truth at the scoring size. After the
  last chunk they are the whole clip's outputs on its annotated frames, and ``Evaluator`` scores them
  with the task's own function and metrics.

Why mask logits rather than binary masks: which query is a condition's best, which queries panoptic
inference keeps, and how Mask2Former weighs soft masks into segments, semantic maps and detection
scores all depend on the video's mean class logits, known only after the last frame; stride-4 logits on
annotated frames are the least that reproduces the whole clip's scores (``I x Q x (S/4)^2`` floats per
annotated frame, on the CPU; the model's activations and its other frames leave with their chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from x2sam_lightning.lightning.evaluation import Evaluator
from x2sam_lightning.lightning.video_evaluation import VideoChunk
from x2sam_lightning.metrics.factory import TaskMetricCollection
from x2sam_lightning.models.streaming import DecodeInputs, FrameOutput, generate_decode_inputs
from x2sam_lightning.models.x2sam import X2SAMOutput
from x2sam_lightning.types import SegBatch, TrackTargets


class VideoTracks:
    """One video's stage-2 predictions and ground truth on its annotated frames, until its last chunk.

    Args:
        first: the video's first chunk (its sample's conversation, sizes and categories).
        out, replies: the LLM's pass on the first chunk (its masks are not kept).
        score: ``(batch, out, replies) -> None``: scores the assembled video (the whole-clip ``Evaluator``).
    """

    def __init__(
        self,
        first: VideoChunk,
        out: X2SAMOutput,
        replies: list[list[int]],
        score: Callable[[SegBatch, X2SAMOutput, list[list[int]]], None],
    ) -> None:
        self.first, self.replies, self.score = first, replies, score
        self.out = replace(out, lm_logits=out.lm_logits.new_zeros(0), seg=None)
        self.logit_sum: Tensor | None = None  # [I, Q, C+1] over every frame
        self.num_frames = 0
        self.masks: list[Tensor] = []  # per annotated frame [I, Q, h, w]
        self.mask_size: tuple[int, int] = (0, 0)
        self.truth: list[tuple[Tensor, Tensor]] = []  # per chunk, its annotated frames' masks and valid

    def add(self, chunk: VideoChunk, frames: list[FrameOutput]) -> None:
        keep = chunk.targets.annotated_frames().cpu()
        if frames:
            logits = torch.stack([f.pred_logits for f in frames]).sum(0)
            self.logit_sum = logits if self.logit_sum is None else self.logit_sum + logits
            self.masks += [f.pred_masks.cpu() for f, k in zip(frames, keep.tolist(), strict=True) if k]
            self.mask_size = tuple(frames[0].pred_masks.shape[-2:])
        self.num_frames += chunk.num_frames
        gt, _ = chunk.scoring_targets()
        index = torch.nonzero(keep).flatten()
        self.truth.append((gt.cpu()[:, index], chunk.targets.valid.cpu()[:, index]))

    def finish(self) -> None:
        """Score the video: the whole-clip outputs and ground truth on its annotated frames."""
        first, b = self.first, self.first.sample
        gt = torch.cat([masks for masks, _ in self.truth], 1)  # [N, F, h, w] at the scoring size
        objects = first.targets
        # The scoring size is the view's "original" size; ``masks`` (read only for its device) is it too.
        targets = TrackTargets(
            gt, objects.labels.cpu(), torch.cat([valid for _, valid in self.truth], 1),
            objects.object_ids.cpu(), objects.iscrowd.cpu(), original_masks=gt,
        )  # fmt: skip
        frames, side = gt.shape[1], int(first.pixel_values.shape[-1])
        batch = first.batch
        view = SegBatch(
            # The padded input's size is all the scoring reads of the pixels: a view of one zero.
            pixel_values=torch.zeros(()).expand(1, frames, 3, side, side),
            targets=[targets],
            image_sizes=torch.tensor([first.image_size]),
            original_sizes=torch.tensor([tuple(gt.shape[-2:])]),
            keys=[batch.keys[b]],
            tasks=[batch.tasks[b]],
            source=batch.source,
            categories=[batch.categories[b]] if batch.categories else [],
            meta=[batch.meta[b]] if batch.meta else [],
            conversations=[batch.conversations[b]],
        )
        out = self.out
        if self.logit_sum is not None:
            logits = (self.logit_sum / self.num_frames).cpu()
            empty = logits.new_zeros(*logits.shape[:2], 0, *self.mask_size)
            masks = torch.stack(self.masks, 2) if self.masks else empty
            out = replace(out, seg={"pred_logits": logits, "pred_masks": masks})
        self.score(view, out, self.replies)


class X2SAMVideoScoring:
    """The stage-2 seam of ``StreamingVideoEvaluator`` for one evaluated source.

    Args:
        net: the ``X2SAM``.
        evaluator: the whole-clip scorer.
        metrics: the source's metric collection.
        max_new_tokens: reply length limit.
        seed: the region sampler's seed (as the whole-clip path's ``eval_seed``).
    """

    def __init__(
        self, net: Any, evaluator: Evaluator, metrics: TaskMetricCollection, max_new_tokens: int, seed: int
    ) -> None:
        self.net, self.evaluator, self.metrics = net, evaluator, metrics
        self.max_new_tokens, self.seed = int(max_new_tokens), int(seed)
        self._replies: dict[str, tuple[X2SAMOutput, list[list[int]]]] = {}

    def inputs(self, chunk: VideoChunk) -> DecodeInputs | None:
        """Run the LLM on the video's first chunk; its ``<SEG>`` instances' decode inputs."""
        if chunk.batch.batch_size != 1:
            raise ValueError(
                f"a streamed video's chunk is a batch of one sample, got {chunk.batch.batch_size}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        out, replies, inputs = generate_decode_inputs(self.net, chunk.batch, self.max_new_tokens, generator)
        self._replies[chunk.video] = (out, replies)
        return inputs

    def scorer(self, chunk: VideoChunk) -> VideoTracks:
        out, replies = self._replies.pop(chunk.video)
        return VideoTracks(chunk, out, replies, self._score)

    def _score(self, batch: SegBatch, out: X2SAMOutput, replies: list[list[int]]) -> None:
        self.evaluator(batch, out, replies, self.metrics)
