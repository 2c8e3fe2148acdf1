"""Scoring stage-2 predictions: one function per kind of task feeds that task's metrics.

Evaluation follows the benchmarks' protocol: the reply is *generated* from the user turns (greedy), the
masks come from the ``<SEG>`` tokens of that reply (:meth:`X2SAM.generate`), and a reply without the
``<SEG>`` a condition needs yields an empty mask rather than an error. Masks are scored at the source
media's resolution, as the official scorers do: evaluation streams carry the ground truth at that size
(``TrackTargets.original_masks``) and predicted logits are resized to it (content cropped from the
padding, bilinear, then thresholded). A batch without original masks is scored inside the un-padded
content at the model input size.

Videos are scored as tracks: every output is ``[.., T, H, W]`` and a video metric (J&F, VPQ, mVC, video AP,
V-VGD AP) gets the frames annotated for every object of the sample
(:meth:`~x2sam_lightning.types.TrackTargets.annotated_frames`; schema 2's ``null``), as the official scorers
see only annotated frames. Images are ``T = 1``: the same code, frame 0. A video read in chunks is
scored by the same functions once its last chunk is in, on a batch of its annotated frames
(``lightning/x2sam_video_scoring.py``); what a kind reads of a video beyond those frames is only the
class logits, the mean over every frame.

Each task's metrics form a :class:`~x2sam_lightning.metrics.factory.TaskMetricCollection` built from
``conf/model/metrics`` (one member per name; visual-prompt tasks have one member per prompt type, chosen
by ``Conversation.prompt_type``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from x2sam_lightning.data.templates import task_kind
from x2sam_lightning.metrics.chat_accuracy import ChatAccuracy
from x2sam_lightning.metrics.factory import TaskMetricCollection, collection_from_partials
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU
from x2sam_lightning.models.x2sam import X2SAMOutput
from x2sam_lightning.models.x2sam_postprocess import (
    best_query,
    instance_detections,
    panoptic_inference,
    resize_masks,
    semantic_inference,
)
from x2sam_lightning.special_tokens import P_END, P_START, SEG
from x2sam_lightning.types import SegBatch

ClassLoss = Literal["ce", "focal"]


def build_metrics(
    task: str, members: Mapping[str, Callable[..., Metric]], categories: list[dict[str, Any]]
) -> TaskMetricCollection:
    """Instantiate a task's metric partials, filling the arguments a vocabulary decides (``things`` /
    ``stuffs`` category ids, ``num_classes``) from the source's ``categories``."""
    vocabulary = {
        "things": [c["id"] for c in categories if c.get("isthing", True)],
        "stuffs": [c["id"] for c in categories if not c.get("isthing", True)],
        "num_classes": len(categories),
    }
    kwargs = {}
    for name, partial in members.items():
        accepted = inspect.signature(getattr(partial, "func", partial)).parameters
        kwargs[name] = {k: v for k, v in vocabulary.items() if k in accepted}
    return collection_from_partials(task, members, **kwargs)


class Evaluator:
    """Updates metrics from one evaluated batch.

    Args:
        tokenizer: decodes generated replies (captions, chat answers).
        class_loss: how class logits are turned into probabilities.
        top_k: detections kept per condition set (instance AP, VGD AP).
        object_mask_threshold, overlap_threshold: panoptic inference's thresholds (see
            :func:`~x2sam_lightning.models.x2sam_postprocess.panoptic_inference`).
    """

    def __init__(
        self,
        tokenizer: Any,
        class_loss: ClassLoss = "ce",
        top_k: int = 100,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
    ) -> None:
        self.tokenizer, self.class_loss, self.top_k = tokenizer, class_loss, top_k
        self.panoptic_thresholds = {
            "object_mask_threshold": float(object_mask_threshold),
            "overlap_threshold": float(overlap_threshold),
        }
        self.kinds: dict[str, Callable[..., None]] = {
            "genseg": self.generic,
            "ovseg": self.generic,
            "refseg": self.referring,
            "reaseg": self.referring,
            "gcgseg": self.gcg,
            "intseg": self.interactive,
            "objseg": self.interactive,
            "vgdseg": self.visual_grounding,
            "chat": self.chat,
        }

    def __call__(
        self, batch: SegBatch, out: X2SAMOutput, replies: list[list[int]], metrics: TaskMetricCollection
    ) -> None:
        kind = task_kind(batch.tasks[0])
        if kind not in self.kinds:
            raise KeyError(f"no evaluator for task {batch.tasks[0]!r}; known kinds: {sorted(self.kinds)}")
        self.kinds[kind](batch, out, replies, metrics)

    # -- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _scoring_size(batch: SegBatch, b: int) -> tuple[int, int]:
        """Where sample ``b`` is scored: its source resolution when the batch carries the ground truth
        there, else its content size at the model input."""
        sizes = batch.image_sizes if batch.targets[b].original_masks is None else batch.original_sizes
        h, w = (int(v) for v in sizes[b])
        return h, w

    def _instance_masks(
        self, batch: SegBatch, out: X2SAMOutput, index: int, queries: list[int] | None = None
    ) -> Tensor:
        """Mask logits ``[Q, T, h, w]`` of instance ``index`` (only ``queries`` when given: resizing every
        query to a large source resolution is wasted work) at the sample's scoring size."""
        b = out.instances[index].sample
        logits = out.seg["pred_masks"][index]
        if queries is not None:
            logits = logits[torch.as_tensor(queries, dtype=torch.long, device=logits.device)]
        content = tuple(int(v) for v in batch.image_sizes[b])
        padded = tuple(batch.pixel_values.shape[-2:])
        return resize_masks(logits, padded, content, self._scoring_size(batch, b))

    def _targets(self, batch: SegBatch, b: int) -> Tensor:
        """Ground-truth masks ``[N, T, h, w]`` of sample ``b`` at its scoring size."""
        target = batch.targets[b]
        if target.original_masks is not None:
            return target.original_masks
        h, w = (int(v) for v in batch.image_sizes[b])
        return target.masks[..., :h, :w]

    @staticmethod
    def _frames(batch: SegBatch, b: int) -> Tensor:
        """Indices of the frames sample ``b`` is scored on: frame 0 of an image; the frames of a video
        annotated for every object (all of them in fully annotated data)."""
        if not batch.tasks[b].startswith("vid_"):
            return torch.zeros(1, dtype=torch.long)
        return torch.nonzero(batch.targets[b].annotated_frames().cpu()).flatten()

    def _scored(self, batch: SegBatch, b: int, masks: Tensor) -> Tensor:
        """``masks [..., T, h, w]`` on the scored frames: ``[..., h, w]`` for an image (its one frame),
        ``[..., F, h, w]`` for a video (a track over its annotated frames)."""
        picked = masks.index_select(-3, self._frames(batch, b).to(masks.device))
        return picked if batch.tasks[b].startswith("vid_") else picked.squeeze(-3)

    def _own_masks(self, batch: SegBatch, out: X2SAMOutput) -> dict[tuple[int, int], Tensor]:
        """``(sample, condition) -> mask [T, h, w]`` of every per-condition instance (best query)."""
        found = {}
        for i, inst in enumerate(out.instances):
            if inst.own is None:
                continue
            query, _ = best_query(out.seg["pred_logits"][i], inst.own, self.class_loss)
            found[inst.conditions[inst.own]] = self._instance_masks(batch, out, i, [query])[0] > 0
        return found

    def _set_instance(self, out: X2SAMOutput, b: int) -> int | None:
        return next(
            (i for i, inst in enumerate(out.instances) if inst.sample == b and inst.own is None), None
        )

    @staticmethod
    def _prompt_logits(out: X2SAMOutput, index: int, k: int) -> Tensor:
        """Logits of a set instance over the prompt's ``k`` conditions (+ no-object): a generated reply
        may hold ``<p>..</p>`` spans of its own before the ``<SEG>``; they are not classes of the task."""
        logits = out.seg["pred_logits"][index]
        return torch.cat([logits[:, :k], logits[:, -1:]], -1)

    def _union(self, batch: SegBatch, b: int, objects: list[int]) -> Tensor:
        masks = self._targets(batch, b)
        if not objects:
            return torch.zeros_like(masks[0]) if masks.shape[0] else masks.new_zeros(masks.shape[1:])
        return masks[torch.as_tensor(objects, device=masks.device)].any(0)

    def _empty(self, batch: SegBatch, b: int) -> Tensor:
        h, w = self._scoring_size(batch, b)
        return torch.zeros(batch.num_frames, h, w, dtype=torch.bool, device=batch.pixel_values.device)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @staticmethod
    def _member(metrics: TaskMetricCollection, prompt_type: str | None) -> Metric:
        if prompt_type is not None and prompt_type in metrics:
            return metrics[prompt_type]
        if len(metrics) != 1:
            raise KeyError(
                f"{metrics.task}: prompt type {prompt_type!r} matches none of {list(metrics.keys())}"
            )
        return next(iter(metrics.values()))

    # -- kinds -----------------------------------------------------------------------------------------

    def generic(
        self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection
    ) -> None:
        """Panoptic, semantic and instance outputs of the one ``set`` instance per sample; on videos the
        same per frame, a query being one track over the clip (tube ids for VPQ, tracks for video AP)."""
        for b, conversation in enumerate(batch.conversations):
            categories = batch.categories[b]
            to_category = torch.as_tensor(conversation.condition_labels, dtype=torch.long)
            target = batch.targets[b]
            frames = self._frames(batch, b)
            gt_masks = self._targets(batch, b)[:, frames.to(target.masks.device)].cpu()  # [N, F, h, w]
            shape = gt_masks.shape[-2:] if gt_masks.shape[0] else self._empty(batch, b).shape[-2:]
            gt_ids = torch.zeros(len(frames), *shape, dtype=torch.long)
            gt_semantic = torch.full((len(frames), *shape), 255, dtype=torch.long)
            gt_segments = []
            for n in range(len(target)):
                gt_ids[gt_masks[n]] = n + 1
                gt_semantic[gt_masks[n]] = int(target.labels[n])
                gt_segments.append(
                    {
                        "id": n + 1,
                        "category_id": categories[int(target.labels[n])]["id"],
                        "iscrowd": int(target.iscrowd[n]),
                    }
                )
            index = self._set_instance(out, b)
            if index is None:
                # No <SEG> in the reply: no segment, no detection, and every labelled pixel wrong.
                pred_ids, pred_segments = torch.zeros_like(gt_ids), []
                pred_semantic = (gt_semantic + 1) % max(len(categories), 1)
                detections = {"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                detections["masks"] = torch.zeros(0, *gt_ids.shape, dtype=torch.bool)
            else:
                k = len(conversation.condition_labels)
                logits = self._prompt_logits(out, index, k)
                masks = self._instance_masks(batch, out, index)
                masks = masks[:, frames.to(masks.device)]
                is_thing = [bool(categories[int(c)].get("isthing", True)) for c in to_category]
                ids, segments = panoptic_inference(
                    logits, masks, is_thing, self.class_loss, **self.panoptic_thresholds
                )
                pred_ids = ids.cpu()
                pred_segments = [
                    {"id": s["id"], "category_id": categories[int(to_category[s["label"]])]["id"]}
                    for s in segments
                ]
                pred_semantic = to_category[semantic_inference(logits, masks, self.class_loss).cpu()]
                detections = instance_detections(logits, masks, self.top_k, self.class_loss)
                detections = {
                    "scores": detections["scores"].cpu(),
                    "labels": to_category[detections["labels"].cpu()],
                    "masks": detections["masks"].cpu(),
                }
            gt_labels, gt_iscrowd = target.labels.cpu(), target.iscrowd.cpu()
            for name, metric in metrics.items(keep_base=True, copy_state=False):
                kind = type(metric).__name__
                if kind == "PanopticQuality":
                    metric.update(pred_ids[0], gt_ids[0], pred_segments, gt_segments)
                elif kind == "VideoPanopticQuality":
                    metric.update(pred_ids, gt_ids, pred_segments, gt_segments)
                elif kind in ("MeanIoU", "VideoConsistency"):
                    metric.update(pred_semantic, gt_semantic)
                elif kind == "MaskAP":
                    metric.update(
                        [{**detections, "masks": detections["masks"][:, 0]}],
                        [{"masks": gt_masks[:, 0], "labels": gt_labels, "iscrowd": gt_iscrowd.long()}],
                    )
                elif kind == "YouTubeVISAveragePrecision":
                    metric.update(
                        detections["masks"],
                        detections["scores"],
                        detections["labels"],
                        gt_masks,
                        gt_labels,
                        gt_iscrowd,
                    )
                else:
                    raise TypeError(
                        f"{metrics.task}: generic segmentation cannot feed metric {name!r} ({kind})"
                    )

    def referring(
        self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection
    ) -> None:
        """One mask per condition of the prompt: the best query of its ``<SEG>``; none -> empty.

        Pixels of the sample's ``iscrowd`` objects (ReasonSeg's "ignore" regions) are left out of both the
        prediction and the target, as the benchmark's scorer (LISA, ignore label 255) leaves them out.
        A video's expressions are one update (J&F averages expressions; videos may differ in length).
        """
        own = self._own_masks(batch, out)
        preds, targets, said_none = [], [], []
        for b, conversation in enumerate(batch.conversations):
            crowd = torch.nonzero(batch.targets[b].iscrowd).flatten().tolist()
            keep = ~self._union(batch, b, crowd) if crowd else None
            frames = self._frames(batch, b).to(batch.targets[b].masks.device)
            sample_preds, sample_targets = [], []
            for k, objects in enumerate(conversation.condition_objects):
                pred = own.get((b, k))
                said_none.append(pred is None)
                pred = self._empty(batch, b) if pred is None else pred
                target = self._union(batch, b, objects)
                if keep is not None:
                    pred, target = pred & keep, target & keep
                sample_preds.append(pred[frames.to(pred.device)])
                sample_targets.append(target[frames])
            if batch.tasks[b].startswith("vid_") and sample_preds:
                pred, target = torch.stack(sample_preds).cpu(), torch.stack(sample_targets).cpu()
                for metric in metrics.values():
                    metric.update(pred, target.long())
            else:
                preds += sample_preds
                targets += sample_targets
        if not preds:
            return
        pred, target = torch.stack(preds).cpu(), torch.stack(targets).cpu()
        for metric in metrics.values():
            if isinstance(metric, GRefCOCOIoU):
                empty_target = ~target.flatten(1).any(1)
                metric.update(pred, target, torch.tensor(said_none), empty_target)
            else:
                metric.update(pred, target.long())

    def gcg(self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection) -> None:
        """Caption, phrases and their masks from the generated reply against the reference answer."""
        own = self._own_masks(batch, out)
        pred_masks, target_masks, pred_phrases, target_phrases, pred_captions, target_captions = (
            [] for _ in range(6)
        )
        for b, conversation in enumerate(batch.conversations):
            reply = self._text(replies[b])
            spans = [(k, s) for k, s in enumerate(out.condition_spans[b]) if s[0] >= out.reply_starts[b]]
            phrases = [
                _strip_markers(self._text(out.input_ids[b, s[0] : s[1] + 1].tolist())) for _, s in spans
            ]
            masks = [own.get((b, k), self._empty(batch, b)) for k, _ in spans]
            # The reply generation writes is the last one (earlier turns are context).
            reference = [m["content"] for m in conversation.messages if m["role"] == "assistant"][-1]
            ref_phrases = _phrases(reference)
            empty = self._scored(batch, b, self._empty(batch, b)[None])[:0].cpu()
            pred_masks.append(self._scored(batch, b, torch.stack(masks)).cpu() if masks else empty)
            targets = [self._union(batch, b, objs) for objs in conversation.condition_objects]
            target_masks.append(self._scored(batch, b, torch.stack(targets)).cpu() if targets else empty)
            pred_phrases.append(phrases)
            target_phrases.append(ref_phrases)
            pred_captions.append(_strip_markers(reply))
            target_captions.append(_strip_markers(reference))
        for metric in metrics.values():
            metric.update(
                pred_masks, target_masks, pred_phrases, target_phrases, pred_captions, target_captions
            )

    def interactive(
        self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection
    ) -> None:
        """One mask per visual prompt: the query most confident in that region's condition (interactive
        segmentation; on videos, object segmentation: the query's track over the clip)."""
        for b, conversation in enumerate(batch.conversations):
            index = self._set_instance(out, b)
            conditions = range(len(conversation.condition_objects))
            if not conditions:
                continue
            if index is None:
                preds = self._empty(batch, b)[None].expand(len(conditions), -1, -1, -1)
            else:
                logits = self._prompt_logits(out, index, len(conversation.condition_objects))
                queries = [best_query(logits, k, self.class_loss)[0] for k in conditions]
                preds = self._instance_masks(batch, out, index, queries) > 0
            targets = torch.stack(
                [self._union(batch, b, objects) for objects in conversation.condition_objects]
            )
            metric = self._member(metrics, conversation.prompt_type)
            metric.update(self._scored(batch, b, preds).cpu(), self._scored(batch, b, targets).long().cpu())

    def visual_grounding(
        self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection
    ) -> None:
        """Detections of each prompted region's category against every instance of the image (of the
        video: tracks over its annotated frames, their mask quality too, as generic segmentation's)."""
        for b, conversation in enumerate(batch.conversations):
            target = batch.targets[b]
            to_category = torch.as_tensor(conversation.condition_labels, dtype=torch.long)
            index = self._set_instance(out, b)
            gt = self._scored(batch, b, self._targets(batch, b)).cpu()
            if index is None:
                masks, scores, labels = (
                    torch.zeros(0, *gt.shape[1:], dtype=torch.bool),
                    torch.zeros(0),
                    torch.zeros(0).long(),
                )
            else:
                det = instance_detections(
                    self._prompt_logits(out, index, len(conversation.condition_labels)),
                    self._scored(batch, b, self._instance_masks(batch, out, index)),
                    self.top_k,
                    self.class_loss,
                )
                masks, scores, labels = (
                    det["masks"].cpu(),
                    det["scores"].cpu(),
                    to_category[det["labels"].cpu()],
                )
            metric = self._member(metrics, conversation.prompt_type)
            metric.update(masks, scores, labels, gt, target.labels.cpu(), target.iscrowd.cpu())

    def chat(self, batch: SegBatch, out: X2SAMOutput, replies: list, metrics: TaskMetricCollection) -> None:
        answers = [self.tokenizer.decode(r, skip_special_tokens=True) for r in replies]
        references = [c.answer or "" for c in batch.conversations]
        for metric in metrics.values():
            if not isinstance(metric, ChatAccuracy):
                raise TypeError(f"{metrics.task}: chat cannot feed {type(metric).__name__}")
            metric.update(answers, references)


def _strip_markers(text: str) -> str:
    for marker in (P_START, P_END, SEG, "<|im_end|>", "<|endoftext|>"):
        text = text.replace(marker, "")
    return " ".join(text.split())


def _phrases(text: str) -> list[str]:
    parts, phrases = text.split(P_START)[1:], []
    for part in parts:
        if P_END in part:
            phrases.append(" ".join(part.split(P_END)[0].split()))
    return phrases
