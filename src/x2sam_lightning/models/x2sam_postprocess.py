"""From decoding instances to task predictions: per-condition masks, panoptic / semantic / instance maps,
visual-grounding detections (Mask2Former's inference rules, with the conditions as the classes).

Every function works on one instance's outputs: ``logits [Q, K+1]`` over its conditions (+ no-object) and
``mask_logits [Q, T, h, w]`` at stride 4; :func:`resize_masks` brings mask logits to the evaluation size
(the padded input, cropped to the content, resized to the requested size). :func:`reply_predictions`
turns a generated batch into what ``predict`` writes and the Python predictor returns: the reply and one
scored mask per segmented condition (none for a reply without ``<SEG>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from x2sam_lightning.models.postprocess import class_probabilities
from x2sam_lightning.models.x2sam import X2SAMOutput
from x2sam_lightning.special_tokens import P_END, P_START
from x2sam_lightning.types import SegBatch


def resize_masks(
    mask_logits: Tensor,
    padded_size: tuple[int, int],
    content_size: tuple[int, int],
    out_size: tuple[int, int],
) -> Tensor:
    """``[N, T, h, w]`` logits -> ``[N, T, H, W]`` logits at ``out_size`` (content cropped from the padding)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros(0, mask_logits.shape[1], *out_size)
    masks = F.interpolate(mask_logits.float(), size=padded_size, mode="bilinear", align_corners=False)
    h, w = content_size
    return F.interpolate(masks[..., :h, :w], size=out_size, mode="bilinear", align_corners=False)


def best_query(logits: Tensor, column: int, class_loss: Literal["ce", "focal"] = "ce") -> tuple[int, float]:
    """The query most confident in condition ``column`` and its probability."""
    probs = class_probabilities(logits, class_loss)[:, column]
    index = int(probs.argmax())
    return index, float(probs[index])


def panoptic_inference(
    logits: Tensor,
    mask_logits: Tensor,
    is_thing: Sequence[bool],
    class_loss: Literal["ce", "focal"] = "ce",
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[Tensor, list[dict]]:
    """Mask2Former's panoptic inference with the conditions as classes.

    Args:
        logits: ``[Q, K+1]``.
        mask_logits: ``[Q, T, H, W]`` at the evaluation size.
        is_thing: per condition, whether it is a thing class (stuff segments of one class are merged).
        object_mask_threshold: minimum class probability of a kept query.
        overlap_threshold: a query's segment is kept if the pixels it won number at least this share of
            its mask's (Mask2Former's rule).

    Returns:
        ``segment ids [T, H, W]`` (0 = void) and ``segments [{"id", "label", "isthing", "score"}]`` where
        ``label`` is the condition index.
    """
    probs = class_probabilities(logits, class_loss)
    scores, labels = probs.max(-1)
    if class_loss == "ce":
        # A query is an object only if its best class beats no-object (Mask2Former's label != K rule).
        full = logits.float().softmax(-1)
        keep = (full.argmax(-1) != logits.shape[-1] - 1) & (scores > object_mask_threshold)
    else:
        keep = scores > object_mask_threshold
    mask_probs = mask_logits.float().sigmoid()
    t, h, w = mask_probs.shape[1:]
    segment_map = torch.zeros(t, h, w, dtype=torch.long, device=mask_logits.device)
    segments: list[dict] = []
    if not bool(keep.any()):
        return segment_map, segments
    scores, labels, mask_probs = scores[keep], labels[keep], mask_probs[keep]
    weighted = scores[:, None, None, None] * mask_probs
    winner = weighted.argmax(0)
    stuff_ids: dict[int, int] = {}
    for q in range(scores.shape[0]):
        label = int(labels[q])
        # Mask2Former's rule: the pixels the query won against its own mask; it paints the won pixels
        # that are also inside its mask.
        area, original = int((winner == q).sum()), int((mask_probs[q] >= 0.5).sum())
        won = (winner == q) & (mask_probs[q] >= 0.5)
        if area == 0 or original == 0 or not bool(won.any()) or area / original < overlap_threshold:
            continue
        thing = bool(is_thing[label])
        if not thing and label in stuff_ids:
            segment_map[won] = stuff_ids[label]
            continue
        segment_id = len(segments) + 1
        segment_map[won] = segment_id
        segments.append({"id": segment_id, "label": label, "isthing": thing, "score": float(scores[q])})
        if not thing:
            stuff_ids[label] = segment_id
    return segment_map, segments


def semantic_inference(
    logits: Tensor, mask_logits: Tensor, class_loss: Literal["ce", "focal"] = "ce"
) -> Tensor:
    """Mask2Former's semantic inference: per pixel ``argmax_k sum_q p_q(k) sigmoid(m_q)`` -> ``[T, H, W]``."""
    probs = class_probabilities(logits, class_loss)
    return torch.einsum("qk,qthw->kthw", probs, mask_logits.float().sigmoid()).argmax(0)


def instance_detections(
    logits: Tensor, mask_logits: Tensor, top_k: int = 100, class_loss: Literal["ce", "focal"] = "ce"
) -> dict[str, Tensor]:
    """Mask2Former's instance inference over the query x class grid: the ``top_k`` (query, class) pairs by
    class probability, each scored by probability x mask quality.

    Returns:
        ``scores [N]``, ``labels [N]`` (condition index), ``masks [N, T, H, W]`` bool.
    """
    probs = class_probabilities(logits, class_loss)  # [Q, K]
    q, k = probs.shape
    flat = probs.flatten()
    top = flat.topk(min(top_k, flat.numel())).indices
    queries, labels = top // k, top % k
    masks = mask_logits[queries] > 0
    mask_probs = mask_logits[queries].float().sigmoid()
    quality = (mask_probs * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    return {"scores": flat[top] * quality, "labels": labels, "masks": masks}


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
    """Per sample ``{"key", "source", "task", "prompt_type", "template", "reply", "scores" [K], "labels"
    [K], "masks" [K, T, H0, W0], "conditions" [K]}`` at the source resolution; ``labels`` index the
    conditions of the sequence. ``prompt_type`` and ``template`` come from the sample's conversation
    (None / ``""`` without one): evaluation yields a prompted sample once per prompt type, and they tell
    those predictions of one key apart."""
    padded = tuple(batch.pixel_values.shape[-2:])
    results = []
    for b in range(batch.batch_size):
        conversation = batch.conversations[b] if batch.conversations else None
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
                "prompt_type": conversation.prompt_type if conversation is not None else None,
                "template": conversation.template if conversation is not None else "",
                "reply": tokenizer.decode(replies[b], skip_special_tokens=False),
                "scores": torch.tensor(scores),
                "labels": torch.tensor(labels, dtype=torch.long),
                "masks": torch.stack(masks) if masks else torch.zeros(0, t, *original, dtype=torch.bool),
                "conditions": names,
            }
        )
    return results
