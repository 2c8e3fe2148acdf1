"""Scoring stage-2 predictions on videos: every video kind feeds its track metric (J&F, DAVIS J&F, VPQ,
video AP, mVC) with whole tracks, on the frames annotated for every object."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.evaluation import Evaluator, build_metrics
from x2sam_lightning.models.x2sam import DecodeInstance, X2SAMOutput
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets

T, S = 10, 16  # VPQ windows up to 8 frames, mVC8 needs more than 8


@pytest.fixture(scope="module")
def metric_partials():
    return instantiate(compose_config("joint_image", ["model.stage1_checkpoint=null"]).model.metrics)


def _tracks() -> torch.Tensor:
    """Two objects over the clip: object 0 moves right and is absent on frame 2; object 1 stays."""
    masks = torch.zeros(2, T, S, S, dtype=torch.bool)
    for t in range(T):
        if t != 2:
            masks[0, t, 2:6, 1 + t : 5 + t] = True
        masks[1, t, 9:14, 9:14] = True
    return masks


def _batch(task: str, conversation: Conversation, annotated: torch.Tensor | None = None) -> SegBatch:
    masks = _tracks()
    valid = torch.ones(2, T, dtype=torch.bool) if annotated is None else annotated
    targets = TrackTargets(
        masks, torch.tensor([0, 1]), valid, torch.arange(2), torch.zeros(2, dtype=torch.bool)
    )
    return SegBatch(
        torch.zeros(1, T, 3, S, S),
        [targets],
        torch.tensor([[S, S]]),
        torch.tensor([[S, S]]),
        ["clip"],
        [task],
        "videos",
        categories=[
            [{"id": 1, "name": "circle", "isthing": True}, {"id": 2, "name": "square", "isthing": True}]
        ],
        conversations=[conversation],
    )


def _logits(masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks, 10.0, -10.0)


def _set_output(pred_masks: torch.Tensor, num_conditions: int) -> X2SAMOutput:
    """One ``set`` instance whose query q is confident in condition q (the rest no-object)."""
    q = pred_masks.shape[0]
    logits = torch.full((1, q, num_conditions + 1), -5.0)
    for k in range(q):
        logits[0, k, k if k < num_conditions else num_conditions] = 5.0
    return X2SAMOutput(
        lm_logits=torch.zeros(1, 1, 1),
        lm_loss=None,
        input_ids=torch.zeros(1, 8, dtype=torch.long),
        condition_spans=[[(0, 1)] * num_conditions],
        instances=[DecodeInstance(0, 7, [(0, k) for k in range(num_conditions)], own=None)],
        seg={"pred_logits": logits, "pred_masks": _logits(pred_masks)[None]},
    )


def _values(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.compute().items() if v.numel() == 1}


def test_video_referring_scores_tracks_with_jf(metric_partials):
    conversation = Conversation(
        [{"role": "user", "content": "<video><p>the moving one</p>"}], "per_condition", [[0]], [-1]
    )
    metrics = build_metrics("vid_refseg", metric_partials["vid_refseg"], [])
    evaluator = Evaluator(tokenizer=None)

    def score(pred: torch.Tensor, annotated=None) -> float:
        metrics.reset()
        out = X2SAMOutput(
            lm_logits=torch.zeros(1, 1, 1),
            lm_loss=None,
            input_ids=torch.zeros(1, 8, dtype=torch.long),
            condition_spans=[[(0, 1)]],
            instances=[DecodeInstance(0, 5, [(0, 0)], own=0)],
            seg={"pred_logits": torch.tensor([[[5.0, -5.0]]]), "pred_masks": _logits(pred)[None, None]},
        )
        evaluator(_batch("vid_refseg", conversation, annotated), out, [[]], metrics)
        return _values(metrics)["J&F"]

    track = _tracks()[0]
    assert score(track) == pytest.approx(1.0)
    # A mask on the frame where the object is absent is penalised (an empty target is a real target:
    # J = F = 0 there, 1 on the other nine frames) ...
    wrong = track.clone()
    wrong[2, 2:6, 3:7] = True
    assert score(wrong) == pytest.approx(0.9)
    # ... unless that frame is not annotated: it is left out of scoring.
    annotated = torch.ones(2, T, dtype=torch.bool)
    annotated[:, 2] = False
    assert score(wrong, annotated) == pytest.approx(1.0)


def test_object_segmentation_scores_each_prompted_track_with_davis_jf(metric_partials):
    conversation = Conversation(
        [{"role": "user", "content": "<video><p><region></p><p><region></p>"}],
        "set",
        [[0], [1]],
        [-1, -1],
        prompt_type="mask",
    )
    metrics = build_metrics("vid_objseg", metric_partials["vid_objseg"], [])
    evaluator = Evaluator(tokenizer=None)
    tracks = _tracks()
    evaluator(_batch("vid_objseg", conversation), _set_output(tracks, 2), [[]], metrics)
    assert _values(metrics)["J&F-Mean"] == pytest.approx(1.0)
    metrics.reset()
    evaluator(_batch("vid_objseg", conversation), _set_output(tracks.flip(0), 2), [[]], metrics)
    assert _values(metrics)["J&F-Mean"] < 0.1


def test_video_generic_segmentation_feeds_vpq_video_ap_miou_and_mvc(metric_partials):
    conversation = Conversation(
        [{"role": "user", "content": "<video><p>circle</p><p>square</p>"}], "set", [[0], [1]], [0, 1]
    )
    categories = _batch("vid_genseg", conversation).categories[0]
    metrics = build_metrics("vid_genseg", metric_partials["vid_genseg"], categories)
    evaluator = Evaluator(tokenizer=None, object_mask_threshold=0.2)
    evaluator(_batch("vid_genseg", conversation), _set_output(_tracks(), 2), [[]], metrics)
    values = {name: _values(metric) for name, metric in metrics.items(keep_base=True, copy_state=False)}
    assert values["vpq"]["vpq"] == pytest.approx(1.0)
    assert values["instance"]["AP"] == pytest.approx(1.0)
    assert values["semantic"]["miou"] == pytest.approx(1.0)
    assert values["consistency"]["mvc8"] == pytest.approx(1.0)
