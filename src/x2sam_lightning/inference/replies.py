"""Generated replies as predictions: the text, and one scored mask per ``<SEG>`` of the reply.

``predict`` writes these (``inference.writer``); the Python predictor returns them. A reply with no
``<SEG>`` gives no masks. Each mask belongs to the condition it segments (``per_condition`` tasks: the
condition before the ``<SEG>``; ``set`` tasks: every prompted condition, each with its best query).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from x2sam_lightning.models.x2sam import X2SAMOutput
from x2sam_lightning.models.x2sam_postprocess import best_query, resize_masks
from x2sam_lightning.special_tokens import P_END, P_START
from x2sam_lightning.types import SegBatch


def _condition_text(tokenizer: Any, ids: Tensor, span: tuple[int, int]) -> str:
    text = tokenizer.decode(ids[span[0] : span[1] + 1].tolist(), skip_special_tokens=False)
    return " ".join(text.replace(P_START, "").replace(P_END, "").split())


def reply_predictions(
    batch: SegBatch,
    out: X2SAMOutput,
    replies: list[list[int]],
    tokenizer: Any,
    class_loss: Literal["ce", "focal"] = "ce",
) -> list[dict[str, Any]]:
    """Per sample ``{"key", "source", "task", "reply", "scores" [K], "labels" [K], "masks" [K, T, H0, W0],
    "conditions" [K]}`` at the source resolution; ``labels`` index the conditions of the sequence."""
    padded = tuple(batch.pixel_values.shape[-2:])
    results = []
    for b in range(batch.batch_size):
        content = tuple(int(v) for v in batch.image_sizes[b])
        original = tuple(int(v) for v in batch.original_sizes[b])
        scores, labels, masks, names = [], [], [], []
        for i, inst in enumerate(out.instances):
            if inst.sample != b:
                continue
            columns = [inst.own] if inst.own is not None else range(len(inst.conditions))
            logits = out.seg["pred_logits"][i]
            resized = resize_masks(out.seg["pred_masks"][i], padded, content, original)
            for column in columns:
                query, score = best_query(logits, column, class_loss)
                _, k = inst.conditions[column]
                scores.append(score)
                labels.append(k)
                masks.append(resized[query] > 0)
                names.append(_condition_text(tokenizer, out.input_ids[b], out.condition_spans[b][k]))
        t = batch.num_frames
        results.append(
            {
                "key": batch.keys[b],
                "source": batch.source,
                "task": batch.tasks[b],
                "reply": tokenizer.decode(replies[b], skip_special_tokens=False),
                "scores": torch.tensor(scores),
                "labels": torch.tensor(labels, dtype=torch.long),
                "masks": torch.stack(masks) if masks else torch.zeros(0, t, *original, dtype=torch.bool),
                "conditions": names,
            }
        )
    return results
