"""Trivial baselines of the stage-2 image tasks, scored through the model's own evaluation path.

Each baseline is a stand-in for :meth:`X2SAM.generate`: it returns an ``X2SAMOutput`` (decoding instances
with mask logits at the input size) and the reply tokens, built without reading the instruction's words,
so the :class:`~x2sam_lightning.lightning.evaluation.Evaluator` scores them exactly as it scores the model.
Two families:

``"input"`` (trivial: only what the model is given)
    referring / reasoning: the whole image for every expression; generic / open-vocabulary: the whole
    image as one segment of the first listed category; GCG: the constant caption
    "A <p>shape</p> on a background." with the whole image; interactive: the visual prompt itself as the
    mask; video object segmentation: the first-frame mask on every frame (the object never moves);
    visual grounded: each visual prompt as the one detection of its category (on a video: on every
    frame); chat: the most frequent answer of the training split. A video's "whole image" is every frame.
``"oracle"`` (ground-truth masks, trivial labels: how far mask quality alone goes)
    referring / reasoning: "predict every shape", the union of all objects for every expression (the
    issue's reference point); generic / open-vocabulary: every object segmented perfectly, all labelled
    with the first category; GCG: the constant caption with the union of all objects; visual grounded:
    every object detected for every prompted category with the same score; interactive and chat as above.

These are definitions of this package (no benchmark defines them), used to show the model learns more
than the data's priors.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from x2sam_lightning.data.templates import task_kind
from x2sam_lightning.models.x2sam import DecodeInstance, X2SAMOutput
from x2sam_lightning.types import SegBatch

BIG = 10.0


def _logits(mask: Tensor) -> Tensor:
    return torch.where(mask, BIG, -BIG)


def _pack(
    instances: list[DecodeInstance], queries: list[Tensor], scores: list[Tensor], t: int, size: tuple
) -> dict:
    """Pad per-instance ``[Q_i, T, H, W]`` masks and ``[Q_i, K_i + 1]`` logits into batched outputs."""
    q = max(1, max((m.shape[0] for m in queries), default=1))
    k = max(1, max((s.shape[1] for s in scores), default=1))
    masks = torch.full((len(queries), q, t, *size), -BIG)
    logits = torch.full((len(queries), q, k), -1e4)
    logits[..., -1] = BIG  # padding queries are no-object
    for i, (m, s) in enumerate(zip(queries, scores)):
        masks[i, : m.shape[0]] = m
        logits[i, : s.shape[0], : s.shape[1] - 1] = s[:, :-1]
        logits[i, : s.shape[0], -1] = s[:, -1]
    return {"pred_logits": logits, "pred_masks": masks}


def _union(batch: SegBatch, b: int) -> Tensor:
    masks = batch.targets[b].masks
    return masks.any(0) if masks.shape[0] else torch.zeros(masks.shape[1:], dtype=torch.bool)


def _held(regions: Tensor) -> Tensor:
    """Visual prompts ``[R, T, H, W]`` (drawn on their prompt frame) held on every frame."""
    return regions.any(1, keepdim=True).expand_as(regions)


class Baseline:
    """Callable like ``X2SAM.generate(batch)`` for one trivial baseline per task kind.

    Args:
        net: the model (for its tokenizer and token ids only).
        chat_answer: the answer the chat baseline always gives, or one per chat task id.
        family: ``"input"`` (the model's inputs only) or ``"oracle"`` (ground-truth masks; see above).
    """

    def __init__(self, net: Any, chat_answer: str | dict[str, str] = "Yes.", family: str = "input") -> None:
        if family not in ("input", "oracle"):
            raise ValueError(f"family must be 'input' or 'oracle', got {family!r}")
        self.net, self.chat_answer, self.family = net, chat_answer, family
        self.tokenizer = net.vl_backbone.tokenizer

    def _everything(self, batch: SegBatch, b: int) -> Tensor:
        """What "every shape" is: the union of the objects (oracle) or the whole image (input)."""
        if self.family == "oracle":
            return _union(batch, b)
        return torch.ones(batch.num_frames, *batch.pixel_values.shape[-2:], dtype=torch.bool)

    def __call__(self, batch: SegBatch) -> tuple[X2SAMOutput, list[list[int]]]:
        kind = task_kind(batch.tasks[0])
        size, t = tuple(batch.pixel_values.shape[-2:]), batch.num_frames
        instances, queries, scores, replies, spans = [], [], [], [], []
        ids = torch.zeros(batch.batch_size, 1, dtype=torch.long)
        for b, conversation in enumerate(batch.conversations):
            k = len(conversation.condition_objects)
            spans.append([(0, 0)] * k)
            replies.append([])
            if kind in ("refseg", "reaseg"):
                for c in range(k):
                    instances.append(DecodeInstance(b, 0, [(b, c)], own=0))
                    queries.append(_logits(self._everything(batch, b))[None])
                    scores.append(torch.tensor([[BIG, -BIG]]))
            elif kind in ("genseg", "ovseg") and k and self.family == "input":
                probs = torch.full((1, k + 1), -BIG)
                probs[0, 0] = BIG  # the whole image, "the first category"
                instances.append(DecodeInstance(b, 0, [(b, c) for c in range(k)]))
                queries.append(_logits(self._everything(batch, b))[None])
                scores.append(probs)
            elif kind == "vgdseg" and k and self.family == "input":
                probs = torch.full((k, k + 1), -BIG)
                probs[torch.arange(k), torch.arange(k)] = BIG  # each prompt: one detection of its category
                instances.append(DecodeInstance(b, 0, [(b, c) for c in range(k)]))
                queries.append(_logits(_held(conversation.regions)))
                scores.append(probs)
            elif kind in ("genseg", "ovseg", "vgdseg") and k:
                objects = _logits(batch.targets[b].masks)
                n = objects.shape[0]
                probs = torch.full((n, k + 1), -BIG)
                if kind == "vgdseg":
                    probs[:, :k] = 0.0  # the same score for every prompted category
                else:
                    probs[:, 0] = BIG  # every object "the first category"
                instances.append(DecodeInstance(b, 0, [(b, c) for c in range(k)]))
                queries.append(objects)
                scores.append(probs)
            elif kind in ("intseg", "objseg") and k:
                regions = _held(conversation.regions)
                probs = torch.full((k, k + 1), -BIG)
                probs[torch.arange(k), torch.arange(k)] = BIG
                instances.append(DecodeInstance(b, 0, [(b, c) for c in range(k)]))
                queries.append(_logits(regions))
                scores.append(probs)
        if kind == "chat":
            answer = self.chat_answer
            answer = answer[batch.tasks[0]] if isinstance(answer, dict) else answer
            replies = [self.tokenizer(answer, add_special_tokens=False)["input_ids"]] * batch.batch_size
        out = X2SAMOutput(torch.zeros(1), None, ids, spans, instances)
        if kind == "gcgseg":
            out, replies = self._caption(batch)
        elif instances:
            out.seg = _pack(instances, queries, scores, t, size)
        return out, replies

    def _caption(self, batch: SegBatch) -> tuple[X2SAMOutput, list[list[int]]]:
        reply = self.tokenizer("A <p>shape</p><SEG> on a background.", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([reply] * batch.batch_size)
        spans = self.net.find_conditions(ids)
        instances = [DecodeInstance(b, 0, [(b, 0)], own=0) for b in range(batch.batch_size)]
        queries = [_logits(self._everything(batch, b))[None] for b in range(batch.batch_size)]
        scores = [torch.tensor([[BIG, -BIG]])] * batch.batch_size
        size, t = tuple(batch.pixel_values.shape[-2:]), batch.num_frames
        out = X2SAMOutput(
            torch.zeros(1), None, ids, spans, instances, _pack(instances, queries, scores, t, size)
        )
        out.reply_starts = [0] * batch.batch_size
        return out, [reply] * batch.batch_size


def majority_answer(conversations: list[Any]) -> str:
    """The most frequent assistant reply (the chat baseline's answer, from the training split)."""
    answers = Counter(c.answer for c in conversations if c.answer)
    return answers.most_common(1)[0][0] if answers else "Yes."
