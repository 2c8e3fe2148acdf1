"""Stage 2: ``X2SAMJoint``, the whole model trained on every task at once (paper section 3.3).

Loss: chat samples L_ar (next-token cross-entropy on the answers); segmentation samples
L_ar + L_mask + L_cls (the set criterion on every decoding instance, with the conditions as classes).
Optimisation: parameter groups with their own learning rates (the paper: mask encoder 1e-5, the rest
1e-4), AdamW, warm-up then cosine; modality-aware gradient accumulation and clipping by the module
(manual optimisation, ``lightning/accumulation.py``: ``model.accumulation``).

Evaluation generates each reply and scores its masks (``lightning/evaluation.py``); a video read in chunks
(``data.eval_chunk_frames``) is streamed through the mask memory and scored after its last chunk by the
same code (``lightning/x2sam_video_scoring.py``), so a video of any length is scored on every annotated
frame.

Checkpoints hold only what training changes (the frozen base weights of the vision-language model stay
in its local folder) plus an ``x2sam_stage2`` record: the base folder and the digest of its config, and
the model config when the CLI built the module, so a checkpoint names what rebuilds it. Loading checks
that every trainable weight is there, nothing unknown is, and the base model is the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from x2sam_lightning.data.templates import task_kind
from x2sam_lightning.data.video_chunks import STREAM_KEY
from x2sam_lightning.lightning.accumulation import ACCUMULATION_KEY, AccumulatedTraining, ModalityAccumulation
from x2sam_lightning.lightning.checkpoint_files import CheckpointError
from x2sam_lightning.lightning.checkpoints import STAGE1_PARTS, load_stage1_into
from x2sam_lightning.lightning.data_stats import log_skip_stats
from x2sam_lightning.lightning.deferred import DeferredParts, Part
from x2sam_lightning.lightning.evaluation import Evaluator, build_metrics
from x2sam_lightning.lightning.optim import param_groups
from x2sam_lightning.lightning.video_evaluation import StreamingVideoEvaluator
from x2sam_lightning.lightning.x2sam_video_scoring import X2SAMVideoScoring
from x2sam_lightning.metrics.factory import TaskMetricCollection, to_floats
from x2sam_lightning.models.criterion import num_masks_across_processes
from x2sam_lightning.models.region_sampler import RegionSampler
from x2sam_lightning.models.segmentor import Segmentor
from x2sam_lightning.models.vl_backbone import VLBackbone
from x2sam_lightning.models.x2sam import X2SAM, DecodeInstance, instance_targets
from x2sam_lightning.types import SegBatch

log = logging.getLogger(__name__)
STAGE2_FORMAT = "x2sam_stage2"


class X2SAMJoint(DeferredParts, AccumulatedTraining, L.LightningModule):
    """Stage-2 LightningModule.

    Args:
        segmentor: mask encoder + pixel decoder + mask decoder (decoder with ``condition_dim`` and the
            cosine class head).
        vl_backbone: the Qwen3-VL wrapper (tokenizer, LoRA, frozen parts).
            Both built, or as builders called in ``configure_model`` (``lightning/deferred.py``): then
            ``net`` and ``evaluator`` exist from there on.
        region_sampler: the parameter-free visual-prompt sampler.
        criterion: ``SetCriterion`` over decoding instances (its ``class_loss`` decides probabilities).
        optimizer: partial optimiser called with parameter groups.
        scheduler: partial scheduler called with ``(optimizer, total_steps=...)``, stepped every step.
        metrics: ``{task: {member: metric partial}}`` (``conf/model/metrics``); each evaluated source gets
            its own collection (vocabulary arguments filled from the source's categories).
        stage1_checkpoint: a stage-1 checkpoint to initialise ``stage1_parts`` of the segmentor from when
            a fit starts, in ``configure_model`` once the segmentor is built (the CLI drops it when a fit
            resumes: the restored checkpoint holds those weights).
        stage1_parts: which segmentor parts to take from it.
        lr_overrides: ``{parameter-name prefix: lr}`` (e.g. ``{net.segmentor.mask_encoder: 1e-5}``).
        weight_decay: AdamW weight decay (not for norms, biases, embeddings).
        ar_weight: weight of L_ar in the total loss.
        projector_depth: layers of the MLLM and region projectors.
        max_new_tokens: generation length in evaluation.
        top_k: detections kept per image in evaluation.
        eval_seed: seed of the region sampler's points in evaluation (reproducible scores).
        target_copies: queries trained on each per-condition target (1: plain Hungarian matching).
        per_condition_eos_coef: no-object class weight of ``per_condition`` instances (one target each:
            referring, reasoning, GCG); None: the criterion's ``eos_coef``, as for ``set`` instances.
        condition_pooling: ``"span"`` (the authors') or ``"inner"`` (see :class:`X2SAM`).
        video_llm_frames: the most frames of a clip the LLM reads, spread evenly (None: all; see
            :class:`X2SAM`).
        object_mask_threshold, overlap_threshold: panoptic inference's class-probability and overlap
            thresholds (Mask2Former: 0.8 and 0.8).
        accumulation: per-modality gradient accumulation and clipping (manual optimisation, see
            ``lightning/accumulation.py``); default: images step every batch, videos every 4, no clipping.
    """

    deferred_parts = ("segmentor", "vl_backbone")

    def __init__(
        self,
        segmentor: Segmentor | Part,
        vl_backbone: VLBackbone | Part,
        region_sampler: RegionSampler,
        criterion: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        metrics: Mapping[str, Mapping[str, Callable[..., Any]]] | None = None,
        stage1_checkpoint: str | None = None,
        stage1_parts: Sequence[str] = STAGE1_PARTS,
        lr_overrides: Mapping[str, float] | None = None,
        weight_decay: float = 0.05,
        ar_weight: float = 1.0,
        projector_depth: int = 2,
        max_new_tokens: int = 64,
        top_k: int = 100,
        eval_seed: int = 0,
        target_copies: int = 1,
        per_condition_eos_coef: float | None = None,
        condition_pooling: str = "span",
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        accumulation: ModalityAccumulation | None = None,
        video_llm_frames: int | None = None,
    ) -> None:
        super().__init__()
        # Plain containers (not Hydra's): hparams go into checkpoints, which load with weights_only=True.
        stage1_parts = [str(part) for part in stage1_parts]
        lr_overrides = {str(k): float(v) for k, v in lr_overrides.items()} if lr_overrides else None
        self.save_hyperparameters(
            ignore=[
                "segmentor",
                "vl_backbone",
                "region_sampler",
                "criterion",
                "optimizer",
                "scheduler",
                "metrics",
                "accumulation",
            ]
        )
        # Modality-aware accumulation steps, clips and schedules itself (lightning/accumulation.py).
        self.automatic_optimization = False
        self.accumulation = accumulation or ModalityAccumulation()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # Parameter-free, built with the module; unregistered until it joins ``net`` in assemble.
        object.__setattr__(self, "_region_sampler", region_sampler)
        self.criterion = criterion
        self.metric_partials = {task: dict(members) for task, members in (metrics or {}).items()}
        self.eval_metrics = nn.ModuleDict()
        self.model_config: dict[str, Any] | None = None  # set by the CLI: recorded in checkpoints
        # Frozen base weights are not saved: Lightning must not insist on them when loading.
        self.strict_loading = False
        self._evaluated: dict[str, list[str]] = {"val": [], "test": []}
        self._templates: dict[tuple[str, str], set[str]] = {}  # (stage, source) -> wordings evaluated
        self._video_evaluators: dict[tuple[str, str], StreamingVideoEvaluator] = {}  # chunked videos
        self._stage1_loaded = False
        self._take_parts(segmentor=segmentor, vl_backbone=vl_backbone)

    def assemble(self, segmentor: Segmentor, vl_backbone: VLBackbone) -> None:
        hp = self.hparams
        region_sampler = self.__dict__.pop("_region_sampler")
        self.net = X2SAM(
            segmentor,
            vl_backbone,
            region_sampler,
            hp.projector_depth,
            hp.condition_pooling,
            hp.video_llm_frames,
        )
        self.evaluator = Evaluator(
            vl_backbone.tokenizer,
            getattr(self.criterion, "class_loss", "ce"),
            hp.top_k,
            object_mask_threshold=hp.object_mask_threshold,
            overlap_threshold=hp.overlap_threshold,
        )

    # -- fit set-up ------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Build the deferred parts (once), then at the start of a fit initialise the segmentor from the
        stage-1 checkpoint (once: a later ``test`` of the same module keeps the trained weights)."""
        super().configure_model()
        path = self.hparams.stage1_checkpoint
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and path and not self._stage1_loaded:
            self._stage1_loaded = True
            if any(p.is_meta or hasattr(p, "ds_id") for p in self.net.segmentor.parameters()):
                raise ValueError(
                    "the stage-1 hand-off loads into materialised parameters; this strategy built the "
                    "segmentor empty or partitioned (DeepSpeed ZeRO-3): start stage 2 with trainer=ddp or "
                    "trainer=fsdp, or from a stage-2 checkpoint (ckpt_path)"
                )
            report = load_stage1_into(self.net.segmentor, path, self.hparams.stage1_parts)
            log.info(
                "initialised %s from stage-1 checkpoint %s (new in stage 2: %d tensors; dropped: %s)",
                ", ".join(report.loaded),
                path,
                len(report.stage2_only),
                report.stage1_only,
            )

    # -- training --------------------------------------------------------------------------------------

    def training_loss(self, batch: SegBatch) -> Tensor:
        """The batch's loss, logged; ``training_step`` hands it to the accumulation (backward, step)."""
        out = self.net(batch)
        size = batch.batch_size
        loss = out.lm_loss * self.hparams.ar_weight if out.lm_loss is not None else None
        if out.lm_loss is not None:
            self.log("train/lm_loss", out.lm_loss, batch_size=size)
        if out.seg is not None:
            targets = instance_targets(out.instances, batch, self.hparams.target_copies)
            losses = self.criterion(out.seg, targets, self._no_object_weights(out.instances))
            seg_loss = self.criterion.weighted(losses)
            loss = seg_loss if loss is None else loss + seg_loss
            self.log("train/seg_loss", seg_loss, batch_size=size)
            for name, value in losses.items():
                if name.count("_") == 1:  # final-layer terms only
                    self.log(f"train/{name}", value, batch_size=size)
        elif task_kind(batch.tasks[0]) != "chat":
            # Every rank draws the same source; one whose expressions all refer to nothing has no <SEG>
            # while the others wait in the criterion's mask-count all-reduce: take part in it.
            num_masks_across_processes([], self.device)
        if loss is None:
            raise ValueError(f"batch of {batch.source!r} ({batch.tasks[0]}) has nothing to learn: no answer")
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _no_object_weights(self, instances: list[DecodeInstance]) -> list[float] | None:
        """Each instance's no-object weight: a single-target (``per_condition``) instance may weight its
        unmatched queries apart from a ``set`` instance, whose many targets leave fewer of them."""
        single = self.hparams.per_condition_eos_coef
        if single is None:
            return None
        return [
            float(single) if inst.own is not None else float(self.criterion.eos_coef) for inst in instances
        ]

    # -- evaluation ------------------------------------------------------------------------------------

    def _source_name(self, stage: str, dataloader_idx: int, batch: SegBatch) -> str:
        datamodule = getattr(self._trainer, "datamodule", None)
        names = getattr(datamodule, f"{stage}_source_names", None)
        return names[dataloader_idx] if names else batch.source

    def source_metrics(self, task: str, source: Any | None) -> TaskMetricCollection:
        """A fresh metric collection for one evaluated source: its ``variant`` picks the benchmark's
        rules (``task:variant`` in ``model.metrics``), its categories fill the vocabulary arguments."""
        variant = getattr(source, "variant", None)
        key = f"{task}:{variant}" if variant else task
        if key not in self.metric_partials:
            raise KeyError(
                f"no metrics configured for task {key!r} (model.metrics has {sorted(self.metric_partials)})"
            )
        return build_metrics(key, self.metric_partials[key], getattr(source, "categories", None) or [])

    def _collection(self, stage: str, source: str, task: str) -> TaskMetricCollection:
        key = f"{stage}__{source}"
        if key not in self.eval_metrics:
            datamodule = getattr(self._trainer, "datamodule", None)
            sources = getattr(datamodule, f"{stage}_sources", {}) or {}
            self.eval_metrics[key] = self.source_metrics(task, sources.get(source)).to(self.device)
            self._evaluated[stage].append(source)
        return self.eval_metrics[key]

    def _create_collections(self, stage: str) -> None:
        """Every source's collection before the first batch, in the datamodule's order: under DDP a rank
        that draws no batch of a source must still take part in that source's metric sync."""
        datamodule = getattr(self.trainer, "datamodule", None)
        sources = getattr(datamodule, f"{stage}_sources", None) or {}
        for name in getattr(datamodule, f"{stage}_source_names", None) or []:
            self._collection(stage, name, sources[name].task)

    def _evaluate(self, batch: SegBatch, stage: str, dataloader_idx: int) -> None:
        """Score a batch: whole clips at once; a chunk of a video read in chunks (``data.eval_chunk_frames``)
        through the video's stream (``lightning/x2sam_video_scoring.py``), scored after its last chunk."""
        source = self._source_name(stage, dataloader_idx, batch)
        metrics = self._collection(stage, source, batch.tasks[0])
        self._templates.setdefault((stage, source), set()).update(c.template for c in batch.conversations)
        if batch.meta and STREAM_KEY in batch.meta[0]:
            self._video_evaluator(stage, source, metrics).update(batch)
            return
        generator = torch.Generator().manual_seed(self.hparams.eval_seed)
        out, replies = self.net.generate(batch, self.hparams.max_new_tokens, generator)
        self.evaluator(batch, out, replies, metrics)

    def _video_evaluator(
        self, stage: str, source: str, metrics: TaskMetricCollection
    ) -> StreamingVideoEvaluator:
        """The source's streamed-video evaluator: the LLM on a video's first chunk, every chunk through the
        memory as it comes (one chunk batch, one decoder chunk)."""
        key = (stage, source)
        if key not in self._video_evaluators:
            hp = self.hparams
            seam = X2SAMVideoScoring(self.net, self.evaluator, metrics, hp.max_new_tokens, hp.eval_seed)
            self._video_evaluators[key] = StreamingVideoEvaluator(
                self.net.segmentor, seam.scorer, seam.inputs, chunk_frames=None
            )
        return self._video_evaluators[key]

    def validation_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def evaluated_templates(self, stage: str) -> dict[str, list[str]]:
        """Source -> the template ids its evaluation used (one fixed wording per task: reproducible)."""
        return {src: sorted(ids) for (st, src), ids in self._templates.items() if st == stage}

    def _log_metrics(self, stage: str) -> None:
        log.info("%s templates: %s", stage, self.evaluated_templates(stage))
        for key in [k for k in self._video_evaluators if k[0] == stage]:
            self._video_evaluators.pop(key).reset()  # a video whose last chunk never came: not scored
        for source in self._evaluated[stage]:
            collection = self.eval_metrics[f"{stage}__{source}"]
            for name, value in to_floats(collection.compute()).items():
                self.log(f"{stage}/{source}/{name}", value, sync_dist=False)
            collection.reset()

    def on_validation_epoch_start(self) -> None:
        self._create_collections("val")

    def on_test_epoch_start(self) -> None:
        self._create_collections("test")

    def on_validation_epoch_end(self) -> None:
        log_skip_stats(self)
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        log_skip_stats(self)
        self._log_metrics("test")

    def evaluated_tasks(self, stage: str) -> dict[str, str]:
        """Source name -> task of every source ``stage`` (``"val"`` or ``"test"``) scored."""
        datamodule = getattr(self.trainer, "datamodule", None)
        sources = getattr(datamodule, f"{stage}_sources", {}) or {}
        return {s: sources[s].task if s in sources else "unknown" for s in self._evaluated[stage]}

    def test_tasks(self) -> dict[str, str]:
        """The results table's rows: source name -> task of what ``test`` scored."""
        return self.evaluated_tasks("test")

    def predict_step(self, batch: SegBatch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Reply and masks per sample (see ``inference.writer``)."""
        from x2sam_lightning.models.x2sam_postprocess import reply_predictions

        generator = torch.Generator().manual_seed(self.hparams.eval_seed)
        out, replies = self.net.generate(batch, self.hparams.max_new_tokens, generator)
        return reply_predictions(
            batch, out, replies, self.net.vl_backbone.tokenizer, self.evaluator.class_loss
        )

    # -- optimisation ----------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        keywords = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in keywords:
            raise ValueError("the optimizer config must set lr (e.g. model.optimizer.lr=1e-4)")
        groups = param_groups(
            self, float(keywords["lr"]), self.hparams.weight_decay, self.hparams.lr_overrides
        )
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -----------------------------------------------------------------------------------

    def _frozen_base_keys(self) -> set[str]:
        """State-dict keys of the vision-language model's frozen weights (they stay in its folder)."""
        prefix = "net.vl_backbone."
        trainable = {f"{prefix}{k}" for k in self.net.vl_backbone.trainable_state_dict()}
        return {f"{prefix}{k}" for k in self.net.vl_backbone.state_dict()} - trainable

    def checkpoint_keys(self) -> set[str]:
        """What a checkpoint of this module must hold: everything but the frozen base weights."""
        return set(self.state_dict()) - self._frozen_base_keys()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        frozen = self._frozen_base_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        backbone: VLBackbone = self.net.vl_backbone
        checkpoint[STAGE2_FORMAT] = {
            "version": 1,
            "base_model": backbone.pretrained_path,
            "base_digest": backbone.base_digest,
            "model_config": self.model_config,
        }
        checkpoint[ACCUMULATION_KEY] = self.accumulation.state_dict(self)

    def load_trained(self, checkpoint: Mapping[str, Any]) -> None:
        """A stage-2 checkpoint's weights into this module outside a Trainer (predictor, benchmarks),
        checked as on resume; the frozen base weights stay those of the base folder."""
        self.on_load_checkpoint(dict(checkpoint))
        self.load_state_dict(checkpoint["state_dict"], strict=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = (self._trainer is not None and self.trainer.ckpt_path) or "(given checkpoint)"
        record = checkpoint.get(STAGE2_FORMAT)
        if record is None:
            raise CheckpointError(path, "not a stage-2 (X2SAMJoint) checkpoint: no 'x2sam_stage2' record")
        backbone: VLBackbone = self.net.vl_backbone
        if record["base_digest"] != backbone.base_digest:
            raise CheckpointError(
                path,
                f"the checkpoint was trained on the base model at {record['base_model']} (config digest "
                f"{record['base_digest'][:12]}), this model loads {backbone.pretrained_path} "
                f"({backbone.base_digest[:12]}): another base model",
            )
        saved = set(checkpoint["state_dict"])
        missing, unexpected = sorted(self.checkpoint_keys() - saved), sorted(saved - set(self.state_dict()))
        if missing or unexpected:
            raise CheckpointError(
                path,
                f"the checkpoint does not fit this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
            )
        if ACCUMULATION_KEY in checkpoint:
            self.accumulation.load_state_dict(checkpoint[ACCUMULATION_KEY])
