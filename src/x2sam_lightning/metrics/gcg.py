"""GCG metrics (METEOR, CIDEr, class-agnostic mask AP50, mIoU, recall) as one torchmetrics ``Metric``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from x2sam_lightning.imports import java_available
from x2sam_lightning.metrics.functional.gcg import _gcg_image_update, caption_scores, coco_average_precision
from x2sam_lightning.metrics.phrase_similarity import LexicalPhraseSimilarity, PhraseSimilarity

_REF_SEP = "\x1e"  # joins the reference captions of one image in its byte state


def _to_bytes(text: str) -> Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def _split_bytes(data: Tensor, lengths: Tensor) -> list[str]:
    raw = data.cpu().numpy().tobytes()
    out, start = [], 0
    for n in lengths.tolist():
        out.append(raw[start : start + n].decode("utf-8"))
        start += n
    return out


def _cat(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(state, list):
        return dim_zero_cat(state) if state else torch.zeros(0, dtype=dtype)
    return state


class GCGMetric(Metric):
    """Grounded conversation generation metrics with GLaMM's rules (``eval/gcg/evaluate.py``).

    See :mod:`x2sam_lightning.metrics.functional.gcg` for each rule. Mask statistics are summed per image
    at ``update``; AP keeps one score and one match flag per predicted mask; captions are held as UTF-8
    bytes in tensor states so they gather across processes, and METEOR / CIDEr run once at ``compute``
    (they are corpus-level). Values as the scorers return them (fractions; CIDEr may exceed 1).

    Args:
        similarity: phrase similarity for recall (default: :class:`LexicalPhraseSimilarity`, offline and
            not GLaMM's BERT; use :class:`~x2sam_lightning.metrics.phrase_similarity.BertPhraseSimilarity`
            for the official number).
        iou_threshold: recall's mask IoU threshold (GLaMM: 0.5).
        text_threshold: recall's phrase similarity threshold (GLaMM: 0.5).
        captions: compute METEOR and CIDEr (needs Java for pycocoevalcap's tokeniser and METEOR).
        on_missing_java: ``"raise"`` (at construction) or ``"nan"`` (warn; METEOR and CIDEr are NaN).
        caption_max_chars: cut predicted and reference captions to this many characters before scoring
            (VideoGLaMM's ``eval_gcg_metrics.py::eval_caption_quality`` cuts at 2000; GLaMM does not cut).

    Video GCG (VideoGLaMM ``eval_gcg_metrics.py``) uses the same mIoU / recall rules on ``(T, H, W)`` tracks
    (IoU over all frames together) and the same caption scorers: pass video masks and
    ``caption_max_chars=2000``; its AP50 is not part of the video benchmark.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        similarity: PhraseSimilarity | None = None,
        iou_threshold: float = 0.5,
        text_threshold: float = 0.5,
        captions: bool = True,
        on_missing_java: Literal["raise", "nan"] = "raise",
        caption_max_chars: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.similarity = similarity if similarity is not None else LexicalPhraseSimilarity()
        self.iou_threshold = iou_threshold
        self.text_threshold = text_threshold
        self.captions = captions
        self.caption_max_chars = caption_max_chars
        self._java = java_available()
        if captions and not self._java:
            message = "GCG METEOR and CIDEr need Java on PATH (pycocoevalcap runs Java programs)"
            if on_missing_java == "raise":
                raise RuntimeError(
                    f"{message}; install a JRE or pass on_missing_java='nan' or captions=False"
                )
            warnings.warn(f"{message}: they will be NaN", stacklevel=2)
        for name in ("miou_sum", "image_count", "recall_tp", "recall_gt", "num_gt"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("ap_scores", "ap_matched", "ap_image", "ap_rank", "caption_bytes", "caption_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("reference_bytes", default=[], dist_reduce_fx="cat")
        self.add_state("reference_lengths", default=[], dist_reduce_fx="cat")
        self._next_image = 0

    def update(
        self,
        pred_masks: Sequence[Tensor],
        target_masks: Sequence[Tensor],
        pred_phrases: Sequence[Sequence[str]],
        target_phrases: Sequence[Sequence[str]],
        pred_captions: Sequence[str] | None = None,
        target_captions: Sequence[str | Sequence[str]] | None = None,
        pred_scores: Sequence[Tensor] | None = None,
        image_ids: Sequence[int] | None = None,
    ) -> None:
        """Add a batch of images (or videos).

        Args:
            pred_masks: per image ``(P_i, H, W)`` (video: ``(P_i, T, H, W)``) predicted masks, one per
                predicted phrase, in order.
            target_masks: per image ``(G_i, H, W)`` ground-truth masks, one per ground-truth phrase.
            pred_phrases, target_phrases: per image, the phrases of the masks.
            pred_captions: per image, the generated caption (needed when ``captions=True``).
            target_captions: per image, the reference caption or captions.
            pred_scores: per image ``(P_i,)`` mask scores for AP (GLaMM: 1.0 for all, the default).
            image_ids: per image an integer id: pycocotools breaks AP score ties by sorted image id; give ids
                for a result independent of how images are split over processes. Default: arrival order.
        """
        n = len(pred_masks)
        if not (len(target_masks) == len(pred_phrases) == len(target_phrases) == n):
            raise ValueError(
                "pred_masks, target_masks, pred_phrases and target_phrases need one entry per image"
            )
        missing = pred_captions is None or target_captions is None
        if self.captions and (missing or n != len(pred_captions) or n != len(target_captions)):
            raise ValueError("captions=True needs pred_captions and target_captions, one per image")
        if image_ids is None:
            image_ids = range(self._next_image, self._next_image + n)
            self._next_image += n
        device = self.miou_sum.device
        for i in range(n):
            stats = _gcg_image_update(
                pred_masks[i],
                target_masks[i],
                pred_phrases[i],
                target_phrases[i],
                self.similarity,
                None if pred_scores is None else pred_scores[i],
                self.iou_threshold,
                self.text_threshold,
            )
            self.miou_sum += stats["miou"]
            self.image_count += 1
            self.recall_tp += stats["recall_tp"]
            self.recall_gt += stats["recall_gt"]
            self.num_gt += stats["num_gt"]
            kept = len(stats["ap_scores"])
            self.ap_scores.append(torch.as_tensor(stats["ap_scores"], dtype=torch.float64, device=device))
            self.ap_matched.append(torch.as_tensor(stats["ap_matched"], dtype=torch.uint8, device=device))
            self.ap_image.append(torch.full((kept,), int(image_ids[i]), dtype=torch.int64, device=device))
            self.ap_rank.append(torch.arange(kept, dtype=torch.int64, device=device))
            if self.captions:
                refs = target_captions[i]
                refs = _REF_SEP.join([refs] if isinstance(refs, str) else list(refs))
                for text, data, lengths in (
                    (pred_captions[i], self.caption_bytes, self.caption_lengths),
                    (refs, self.reference_bytes, self.reference_lengths),
                ):
                    encoded = _to_bytes(text).to(device)
                    data.append(encoded)
                    lengths.append(torch.tensor([len(encoded)], dtype=torch.int64, device=device))

    def compute(self) -> dict[str, Tensor]:
        """``{"miou", "recall", "ap50"}`` and, with captions, ``{"meteor", "cider"}`` (float64 scalars)."""
        out = self._mask_results()
        if self.captions:
            if self._java:
                preds, refs = self._caption_lists()
                if self.caption_max_chars is not None:
                    cut = self.caption_max_chars
                    preds, refs = [p[:cut] for p in preds], [[r[:cut] for r in rs] for rs in refs]
                scores = caption_scores(preds, refs)
            else:
                scores = {"meteor": float("nan"), "cider": float("nan")}
            out.update({k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()})
        return {k: v.to(self.miou_sum.device) for k, v in out.items()}

    def _mask_results(self) -> dict[str, Tensor]:
        """mIoU, recall (0 when empty, as GLaMM) and AP50 (-1 without ground truth, as pycocotools)."""
        ap = coco_average_precision(
            _cat(self.ap_scores, torch.float64).cpu().numpy(),
            _cat(self.ap_matched, torch.uint8).cpu().numpy().astype(bool),
            _cat(self.ap_image, torch.int64).cpu().numpy(),
            _cat(self.ap_rank, torch.int64).cpu().numpy(),
            int(self.num_gt.item()),
        )
        zero = torch.zeros((), dtype=torch.float64)  # GLaMM's value for an empty set
        return {
            "miou": (self.miou_sum / self.image_count).cpu() if self.image_count > 0 else zero,
            "recall": (self.recall_tp / self.recall_gt).cpu() if self.recall_gt > 0 else zero.clone(),
            "ap50": torch.tensor(ap, dtype=torch.float64),
        }

    def _caption_lists(self) -> tuple[list[str], list[list[str]]]:
        """Predicted captions and reference lists of the (synced) states, in state order."""
        preds = _split_bytes(_cat(self.caption_bytes, torch.uint8), _cat(self.caption_lengths, torch.int64))
        refs = _split_bytes(
            _cat(self.reference_bytes, torch.uint8), _cat(self.reference_lengths, torch.int64)
        )
        return preds, [r.split(_REF_SEP) for r in refs]

    def reset(self) -> None:
        super().reset()
        self._next_image = 0
