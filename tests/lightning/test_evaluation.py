"""Scoring stage-2 predictions: the referring rules (no-target included), chat answers, metric set-up."""

from __future__ import annotations

import numpy as np
import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.evaluation import Evaluator, build_metrics
from x2sam_lightning.metrics.chat_accuracy import ChatAccuracy, normalize_answer
from x2sam_lightning.models.x2sam import DecodeInstance, X2SAMOutput
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets


def _referring_batch() -> SegBatch:
    masks = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:10, 2:10] = True
    targets = TrackTargets(
        masks,
        torch.zeros(1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.bool),
        torch.arange(1),
        torch.zeros(1, dtype=torch.bool),
    )
    conversations = [
        Conversation([{"role": "user", "content": "<image><p>the circle</p>"}], "per_condition", [[0]], [-1]),
        Conversation([{"role": "user", "content": "<image><p>the star</p>"}], "per_condition", [[]], [-1]),
    ]
    return SegBatch(
        torch.zeros(2, 1, 3, 16, 16),
        [targets, targets],
        torch.tensor([[16, 16]] * 2),
        torch.tensor([[16, 16]] * 2),
        ["a", "b"],
        ["img_refseg"] * 2,
        "refs",
        conversations=conversations,
    )


def _output(hit: bool) -> X2SAMOutput:
    """Sample 0 answered with one <SEG> whose best query is the ground truth (or misses it); sample 1
    (no-target) answered without <SEG>."""
    logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]])  # query 0 is the condition, query 1 no-object
    masks = torch.full((1, 2, 1, 4, 4), -10.0)
    if hit:
        masks[0, 0] = 10.0  # the whole image
    return X2SAMOutput(
        lm_logits=torch.zeros(2, 1, 1),
        lm_loss=None,
        input_ids=torch.zeros(2, 8, dtype=torch.long),
        condition_spans=[[(0, 1)], [(0, 1)]],
        instances=[DecodeInstance(0, 5, [(0, 0)], own=0)],
        seg={"pred_logits": logits, "pred_masks": masks},
    )


def test_no_target_expressions_score_under_grefcoco_rules():
    cfg = compose_config("joint_image", ["model.stage1_checkpoint=null"])
    metrics = build_metrics("img_refseg", instantiate(cfg.model.metrics)["img_refseg:grefcoco"], [])
    evaluator = Evaluator(tokenizer=None)
    evaluator(_referring_batch(), _output(hit=True), [[], []], metrics)
    result = {k: float(v) for k, v in metrics.compute().items() if v.numel() == 1}
    # The no-target expression answered with no mask counts as correct (N-acc 1); the target one is
    # segmented by a whole-image mask: IoU 64/256 (the no-target one adds nothing to cIoU).
    assert result["n_acc"] == 1.0 and result["t_acc"] == 1.0
    assert abs(result["ciou"] - 64 / 256) < 1e-6
    metrics.reset()
    evaluator(_referring_batch(), _output(hit=False), [[], []], metrics)
    result = {k: float(v) for k, v in metrics.compute().items() if v.numel() == 1}
    assert result["ciou"] == 0.0 and result["n_acc"] == 1.0


def test_vocabulary_arguments_come_from_the_source():
    cfg = compose_config("joint_image", ["model.stage1_checkpoint=null"])
    categories = [{"id": 1, "name": "sky", "isthing": False}, {"id": 7, "name": "car", "isthing": True}]
    metrics = build_metrics("img_genseg", instantiate(cfg.model.metrics)["img_genseg"], categories)
    assert metrics["panoptic"].categories == [7, 1] and metrics["semantic"].num_classes == 2
    vgd = build_metrics("img_vgdseg", instantiate(cfg.model.metrics)["img_vgdseg"], [])
    assert set(vgd.prefixes.values()) == {"point/", "box/"}


def test_chat_accuracy_normalises_answers():
    assert normalize_answer("Three.") == normalize_answer("3") == "3"
    assert normalize_answer("The triangle is Blue!") == "triangle is blue"
    metric = ChatAccuracy()
    metric.update(["Three.", "red", "No"], ["3", "Blue.", "no."])
    assert abs(float(metric.compute()["accuracy"]) - 2 / 3) < 1e-9


def test_masks_are_scored_at_the_source_resolution_when_the_batch_carries_it():
    """A 30x50 image seen by the model at 16x16 (content 10x16): the ground truth at 30x50, with a
    one-pixel line the model input cannot hold, is what the prediction is scored against, as
    pycocotools scores the same full-image prediction at the original size."""
    from pycocotools import mask as mask_utils

    original = torch.zeros(1, 1, 30, 50, dtype=torch.bool)
    original[0, 0, 4:20, 6:31] = True
    original[0, 0, 25, 3:47] = True  # thin: lost by the resize to the model input
    small = torch.nn.functional.interpolate(original.float(), size=(10, 16), mode="nearest-exact").bool()
    batch = _referring_batch()
    targets = TrackTargets(
        torch.nn.functional.pad(small, (0, 0, 0, 6)),
        torch.zeros(1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.bool),
        torch.arange(1),
        torch.zeros(1, dtype=torch.bool),
        original_masks=original,
    )
    batch.targets = [targets, targets]
    batch.image_sizes = torch.tensor([[10, 16]] * 2)
    batch.original_sizes = torch.tensor([[30, 50]] * 2)
    cfg = compose_config("joint_image", ["model.stage1_checkpoint=null"])
    metrics = build_metrics("img_refseg", instantiate(cfg.model.metrics)["img_refseg:grefcoco"], [])
    Evaluator(tokenizer=None)(batch, _output(hit=True), [[], []], metrics)
    full = np.asfortranarray(np.ones((30, 50, 1), dtype=np.uint8))
    gt = np.asfortranarray(original[0, 0].numpy()[..., None].astype(np.uint8))
    iou = mask_utils.iou(mask_utils.encode(full), mask_utils.encode(gt), [0])[0, 0]
    at_input_size = float(small.sum()) / (10 * 16)
    assert abs(float(metrics.compute()["ciou"]) - iou) < 1e-6
    assert abs(iou - at_input_size) > 0.01


def test_ignore_regions_are_left_out_of_prediction_and_target():
    """ReasonSeg's ignore region (an iscrowd object) counts for neither side, as LISA's ignore label."""
    batch = _referring_batch()
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:10, 2:10] = True
    masks[1, 0, 12:16, :] = True  # the ignore region: 64 pixels the whole-image prediction covers
    target = TrackTargets(
        masks,
        torch.zeros(2, dtype=torch.long),
        torch.ones(2, 1, dtype=torch.bool),
        torch.arange(2),
        torch.tensor([False, True]),
    )
    batch.targets = [target, target]
    cfg = compose_config("joint_image", ["model.stage1_checkpoint=null"])
    metrics = build_metrics("img_refseg", instantiate(cfg.model.metrics)["img_refseg:grefcoco"], [])
    Evaluator(tokenizer=None)(batch, _output(hit=True), [[], []], metrics)
    assert abs(float(metrics.compute()["ciou"]) - 64 / (256 - 64)) < 1e-6
