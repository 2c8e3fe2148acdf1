"""Trivial baselines of the stage-2 image tasks, scored through the model's own evaluation path.

Each baseline is a stand-in for :meth:`X2SAM.generate`: it returns an ``X2SAMOutput`` (decoding instances
with mask logits at the input size) and the reply tokens, built from what a model could know without
reading the instruction (or, for the referring tasks, without reading the image's text at all), so the
:class:`~x2sam_lightning.lightning.evaluation.Evaluator` scores them exactly as it scores the model:

- referring / reasoning: "predict every shape": the union of all objects for every expression;
- generic / open-vocabulary: every object segmented perfectly, all labelled with the first category;
- GCG: the constant caption "A <p>shape</p> on a background." with the union of all objects;
- interactive: the visual prompt itself as the mask;
- visual grounded: every object detected for every prompted category with the same score;
- chat: the most frequent answer of the training split.

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


class Baseline:
    """Callable like ``X2SAM.generate(batch)`` for one trivial baseline per task kind.

    Args:
        net: the model (for its tokenizer and token ids only).
        chat_answer: the answer the chat baseline always gives.
    """

    def __init__(self, net: Any, chat_answer: str = "Yes.") -> None:
        self.net, self.chat_answer = net, chat_answer
        self.tokenizer = net.vl_backbone.tokenizer

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
                    queries.append(_logits(_union(batch, b))[None])
                    scores.append(torch.tensor([[BIG, -BIG]]))
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
            elif kind == "intseg" and k:
                regions = conversation.regions
                probs = torch.full((k, k + 1), -BIG)
                probs[torch.arange(k), torch.arange(k)] = BIG
                instances.append(DecodeInstance(b, 0, [(b, c) for c in range(k)]))
                queries.append(_logits(regions))
                scores.append(probs)
        if kind == "chat":
            replies = [
                self.tokenizer(self.chat_answer, add_special_tokens=False)["input_ids"]
            ] * batch.batch_size
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
        queries = [_logits(_union(batch, b))[None] for b in range(batch.batch_size)]
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
