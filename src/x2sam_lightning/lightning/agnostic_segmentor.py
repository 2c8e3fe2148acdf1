"""Stage 1: the class-agnostic segmentor (mask encoder + pixel decoder + mask decoder, no LLM).

The decoder learns to propose object masks (object / no-object) from mask-only data. Its weights are the
initialisation of stage 2's decoder: see :func:`x2sam_lightning.lightning.checkpoints.load_stage1_parts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from x2sam_lightning.lightning.accumulation import ACCUMULATION_KEY, AccumulatedTraining, ModalityAccumulation
from x2sam_lightning.lightning.checkpoints import STAGE1_FORMAT, stage1_metadata
from x2sam_lightning.lightning.data_stats import log_skip_stats
from x2sam_lightning.lightning.deferred import DeferredParts, Part
from x2sam_lightning.lightning.optim import param_groups
from x2sam_lightning.lightning.video_evaluation import StreamingVideoEvaluator, track_ap_scorer
from x2sam_lightning.metrics.mask_ap import MaskAP
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision
from x2sam_lightning.models.postprocess import InstancePostprocess
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.types import SegBatch, TrackTargets

# What the stage-1 validation reports (COCO segm protocol, class-agnostic): key -> MaskAP output.
VAL_METRICS = {"ap50": "map_50", "ap": "map", "ar10": "mar_10", "ar100": "mar_100"}
# On video sources (YouTube-VIS track protocol, class-agnostic): key -> YouTubeVISAveragePrecision output.
VIDEO_METRICS = {"video_ap50": "AP50", "video_ap": "AP", "video_ar10": "AR10"}


def class_agnostic(targets: Sequence[TrackTargets]) -> list[TrackTargets]:
    """Every object becomes class 0 ("object"); crowd regions are kept for the metric's crowd rule."""
    return [replace(t, labels=torch.zeros_like(t.labels)) for t in targets]


class AgnosticSegmentor(DeferredParts, AccumulatedTraining, L.LightningModule):
    """Stage-1 LightningModule.

    Args:
        segmentor: mask encoder + pixel decoder + mask decoder (``num_classes=1`` "object" + no-object),
            built or as a builder called in ``configure_model`` (``lightning/deferred.py``).
        criterion: ``models.criterion.SetCriterion``; its ``weight_dict`` weights the ``loss_*`` terms.
        optimizer: partial optimiser (Hydra ``_partial_: true``) called with parameter groups.
        scheduler: partial scheduler called with ``(optimizer, total_steps=...)``; stepped every step.
        postprocess: raw predictions -> scored binary masks (``top_k`` per sample: AR@100 needs 100).
        metric: the class-agnostic COCO segm metric; copied for validation and test.
        lr_overrides: ``{parameter-name prefix: lr}``, e.g. a lower rate for ``segmentor.mask_encoder``.
        weight_decay: AdamW weight decay for weights (not norms, biases, embeddings).
        accumulation: per-modality gradient accumulation and clipping (manual optimisation, see
            ``lightning/accumulation.py``); default: images step every batch, videos every 4, no clipping.
        video_metric: the class-agnostic video metric of video sources (default: YouTube-VIS track AP);
            copied for validation and test. Videos are scored whole, streamed ``eval_chunk_frames`` frames
            at a time through the mask memory (``lightning/video_evaluation.py``), whatever their length.
        eval_chunk_frames: frames of an evaluation video run through the model at once.
    """

    deferred_parts = ("segmentor",)

    def __init__(
        self,
        segmentor: Segmentor | Part,
        criterion: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        postprocess: InstancePostprocess | None = None,
        metric: MaskAP | None = None,
        lr_overrides: Mapping[str, float] | None = None,
        weight_decay: float = 0.05,
        accumulation: ModalityAccumulation | None = None,
        video_metric: YouTubeVISAveragePrecision | None = None,
        eval_chunk_frames: int = 8,
    ) -> None:
        super().__init__()
        # Built modules and the optimiser/scheduler partials stay out of hparams, and Hydra containers
        # become plain ones: checkpoints then load with torch.load(weights_only=True).
        lr_overrides = {str(k): float(v) for k, v in lr_overrides.items()} if lr_overrides else None
        self.save_hyperparameters(
            ignore=[
                "segmentor",
                "criterion",
                "optimizer",
                "scheduler",
                "postprocess",
                "metric",
                "accumulation",
                "video_metric",
            ]
        )
        # Modality-aware accumulation steps, clips and schedules itself (lightning/accumulation.py).
        self.automatic_optimization = False
        self.accumulation = accumulation or ModalityAccumulation()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.criterion = criterion
        self.postprocess = postprocess or InstancePostprocess()
        metric = metric or MaskAP(class_agnostic=True, max_detection_thresholds=(1, 10, 100))
        self.val_metric, self.test_metric = metric.clone(), metric.clone()
        video_metric = video_metric or YouTubeVISAveragePrecision()
        self.val_video_metric, self.test_video_metric = video_metric.clone(), video_metric.clone()
        self._video_evaluators: dict[int, StreamingVideoEvaluator] = {}
        self._test_sources: dict[str, str] = {}
        self._take_parts(segmentor=segmentor)

    def assemble(self, segmentor: Segmentor) -> None:
        self.segmentor = segmentor

    # -- steps ---------------------------------------------------------------------------------------

    def forward(self, pixel_values: Tensor) -> dict[str, Any]:
        """``pixel_values [B, T, 3, H, W]`` -> ``pred_logits [B, Q, 2]``, ``pred_masks [B, Q, T, h, w]``."""
        return self.segmentor(pixel_values)

    def training_loss(self, batch: SegBatch) -> Tensor:
        """The batch's loss, logged; ``training_step`` hands it to the accumulation (backward, step)."""
        outputs = self(batch.pixel_values)
        losses = self.criterion(outputs, class_agnostic(batch.targets))
        loss = self.criterion.weighted(losses)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        for name, value in losses.items():
            if name.count("_") == 1:  # final-layer terms only; aux terms end in _<layer>
                self.log(f"train/{name}", value, batch_size=batch.batch_size)
        return loss

    def _evaluate(self, batch: SegBatch, metric: MaskAP, video_metric: YouTubeVISAveragePrecision) -> None:
        if batch.modality == "video":
            self._video_evaluator(video_metric).update(batch)
            return
        if batch.num_frames != 1:
            raise ValueError(
                f"stage-1 evaluation scores images (T=1) with the COCO segm protocol; source "
                f"'{batch.source}' ({batch.tasks[0]}) gives clips of T={batch.num_frames}"
            )
        outputs = self(batch.pixel_values)
        # Scored at the source resolution when the stream carries it (evaluation streams do), as the COCO
        # scorer does; else inside the un-padded content at the input size. Class-agnostic: no labels.
        original = all(t.original_masks is not None for t in batch.targets)
        sizes = batch.original_sizes if original else batch.image_sizes
        detections = self._postprocess(outputs, batch, output_sizes=sizes)
        targets = [
            {
                "masks": (t.original_masks if original else t.masks)[t.valid[:, 0], 0, :h, :w],
                "iscrowd": t.iscrowd[t.valid[:, 0]].long(),
            }
            for t, (h, w) in zip(batch.targets, sizes.tolist())
        ]
        preds = [{"masks": det["masks"][:, 0], "scores": det["scores"]} for det in detections]
        metric.update(preds, targets)

    def _video_evaluator(self, metric: YouTubeVISAveragePrecision) -> StreamingVideoEvaluator:
        """The streaming evaluator feeding ``metric`` (one per stage: its open videos are that stage's)."""
        if id(metric) not in self._video_evaluators:
            self._video_evaluators[id(metric)] = StreamingVideoEvaluator(
                self.segmentor,
                track_ap_scorer(
                    metric,
                    self.segmentor.mask_decoder.query_feat.num_embeddings,
                    self.postprocess.top_k,
                    self.postprocess.class_loss,
                ),
                chunk_frames=self.hparams.eval_chunk_frames,
            )
        return self._video_evaluators[id(metric)]

    def validation_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self.val_metric, self.val_video_metric)

    def on_validation_epoch_end(self) -> None:
        log_skip_stats(self)
        self._log_metric(self.val_metric, self.val_video_metric, "val")

    def test_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._test_sources.setdefault(
            batch.source, "agnostic_vid" if batch.modality == "video" else "agnostic_seg"
        )
        self._evaluate(batch, self.test_metric, self.test_video_metric)

    def on_test_epoch_end(self) -> None:
        log_skip_stats(self)
        self._log_metric(self.test_metric, self.test_video_metric, "test")

    def _log_metric(self, metric: MaskAP, video_metric: YouTubeVISAveragePrecision, stage: str) -> None:
        evaluator = self._video_evaluators.get(id(video_metric))
        if evaluator is not None:
            evaluator.reset()
        # Each protocol logs when its sources were evaluated (image sources, video sources or both), decided
        # from the datamodule's sources where there is one: the same on every process (compute syncs).
        modalities = self._evaluated_modalities(stage)
        if modalities is None:
            modalities = {"video"} if video_metric.update_count else set()
            modalities |= {"image"} if metric.update_count or not modalities else set()
        if "image" in modalities:
            values = metric.compute()
            for name, key in VAL_METRICS.items():
                self.log(f"{stage}/{name}", values[key].float(), prog_bar=name == "ap50", sync_dist=False)
        if "video" in modalities:
            values = video_metric.compute()
            for name, key in VIDEO_METRICS.items():
                self.log(
                    f"{stage}/{name}", values[key].float(), prog_bar=name == "video_ap50", sync_dist=False
                )
        metric.reset()
        video_metric.reset()

    def _evaluated_modalities(self, stage: str) -> set[str] | None:
        """Modalities of the sources ``stage`` reads, from the datamodule (None without one)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        sources = getattr(datamodule, "val_sources" if stage == "val" else "test_sources", None)
        if not sources:
            return None
        return {getattr(source, "modality", "image") for source in sources.values()}

    def predict_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Class-agnostic proposals per sample at the source resolution (see ``inference.writer``)."""
        detections = self._postprocess(self(batch.pixel_values), batch, output_sizes=batch.original_sizes)
        return [
            {"key": key, "source": batch.source, "task": task, **det}
            for key, task, det in zip(batch.keys, batch.tasks, detections)
        ]

    def _postprocess(self, outputs: dict[str, Any], batch: SegBatch, output_sizes: Tensor) -> list[dict]:
        return self.postprocess(
            outputs["pred_logits"],
            outputs["pred_masks"],
            image_sizes=batch.image_sizes,
            original_sizes=output_sizes,
            padded_size=tuple(batch.pixel_values.shape[-2:]),
        )

    def test_tasks(self) -> dict[str, str]:
        """The results table's rows: source name -> task of what ``test`` scored."""
        return dict(self._test_sources)

    # -- optimisation and checkpoints ----------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        groups = param_groups(self, self._base_lr(), self.hparams.weight_decay, self.hparams.lr_overrides)
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _base_lr(self) -> float:
        keywords = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in keywords:
            raise ValueError("the optimizer config must set lr (e.g. model.optimizer.lr=1e-4)")
        return float(keywords["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STAGE1_FORMAT] = stage1_metadata(self)
        checkpoint[ACCUMULATION_KEY] = self.accumulation.state_dict(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if ACCUMULATION_KEY in checkpoint:
            self.accumulation.load_state_dict(checkpoint[ACCUMULATION_KEY])
