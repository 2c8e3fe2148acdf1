"""SetCriterion against hand-computed values (point_grid = target size reads every pixel exactly)."""

import math

import pytest
import torch

from x2sam_lightning.models.criterion import SetCriterion, weighted_sum
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.types import TrackTargets

# One 2x2 prediction and its target: BCE and dice written out pixel by pixel.
LOGITS = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
TARGET = torch.tensor([[True, False], [False, True]])
BCE = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(-3))) / 4
_P = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.0, 3.0)]
DICE = 1 - (2 * (_P[0] + _P[3]) + 1) / (sum(_P) + 2 + 1)


def _targets(masks, valid=None, labels=None) -> TrackTargets:
    n = masks.shape[0]
    valid = torch.ones(masks.shape[:2], dtype=torch.bool) if valid is None else valid
    labels = torch.zeros(n, dtype=torch.long) if labels is None else labels
    return TrackTargets(masks, labels, valid, torch.arange(n), torch.zeros(n, dtype=torch.bool))


def _criterion(**kwargs) -> SetCriterion:
    return SetCriterion(1, HungarianMatcher(point_grid=2), point_grid=2, **kwargs)


def test_one_query_one_target():
    outputs = {"pred_logits": torch.tensor([[[0.5, -0.5]]]), "pred_masks": LOGITS.view(1, 1, 1, 2, 2)}
    losses = _criterion()(outputs, [_targets(TARGET.view(1, 1, 2, 2))])
    assert losses["loss_ce"].item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(BCE, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(DICE, rel=1e-5)


def test_unmatched_query_is_no_object_with_eos_weight():
    logits = torch.tensor([[[0.5, -0.5], [1.0, 0.0]]])
    masks = torch.stack([LOGITS, torch.full((2, 2), -20.0)]).view(1, 2, 1, 2, 2)
    losses = _criterion(eos_coef=0.1)(
        {"pred_logits": logits, "pred_masks": masks}, [_targets(TARGET.view(1, 1, 2, 2))]
    )
    matched = math.log1p(math.exp(-1))  # query 0 -> object
    unmatched = math.log1p(math.exp(1))  # query 1 -> no-object (logit gap -1)
    assert losses["loss_ce"].item() == pytest.approx((matched + 0.1 * unmatched) / 1.1, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(BCE, rel=1e-5)


def test_no_object_weight_per_target_set():
    # Two target sets: the first one's unmatched query weighs 0.1, the second one's 0.5.
    logits = torch.tensor([[[0.5, -0.5], [1.0, 0.0]]]).repeat(2, 1, 1)
    masks = torch.stack([LOGITS, torch.full((2, 2), -20.0)]).view(1, 2, 1, 2, 2).repeat(2, 1, 1, 1, 1)
    targets = [_targets(TARGET.view(1, 1, 2, 2))] * 2
    outputs = {"pred_logits": logits, "pred_masks": masks}
    losses = _criterion(eos_coef=0.1)(outputs, targets, no_object_weight=[0.1, 0.5])
    matched, unmatched = math.log1p(math.exp(-1)), math.log1p(math.exp(1))
    expected = (2 * matched + 0.1 * unmatched + 0.5 * unmatched) / (2 + 0.1 + 0.5)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-5)
    # The same weight for every set is the criterion's own eos_coef.
    same = _criterion(eos_coef=0.1)(outputs, targets, no_object_weight=[0.1, 0.1])
    assert same["loss_ce"].item() == pytest.approx(
        _criterion(eos_coef=0.1)(outputs, targets)["loss_ce"].item()
    )
    with pytest.raises(ValueError, match="no_object_weight"):
        _criterion()(outputs, targets, no_object_weight=[0.1])


def test_empty_target_only_no_object():
    logits = torch.tensor([[[0.5, -0.5], [1.0, 0.0]]], requires_grad=True)
    masks = torch.randn(1, 2, 1, 2, 2, requires_grad=True)
    empty = _targets(torch.zeros(0, 1, 2, 2, dtype=torch.bool))
    losses = _criterion()({"pred_logits": logits, "pred_masks": masks}, [empty])
    expected = (math.log1p(math.exp(1)) + math.log1p(math.exp(1))) / 2  # both queries -> no-object
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    sum(losses.values()).backward()
    assert masks.grad is not None  # the graph stays connected (DDP needs every parameter used)


def test_invalid_frames_are_ignored():
    # Frame 1 is not annotated: its (arbitrary) prediction and target must not change the losses.
    masks = torch.stack([LOGITS, torch.full((2, 2), 7.0)]).view(1, 1, 2, 2, 2)
    target = torch.stack([TARGET, torch.zeros(2, 2, dtype=torch.bool)]).view(1, 2, 2, 2)
    valid = torch.tensor([[True, False]])
    losses = _criterion()(
        {"pred_logits": torch.tensor([[[0.5, -0.5]]]), "pred_masks": masks}, [_targets(target, valid)]
    )
    assert losses["loss_mask"].item() == pytest.approx(BCE, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(DICE, rel=1e-5)


def test_focal_loss():
    outputs = {"pred_logits": torch.tensor([[[0.5, 9.0]]]), "pred_masks": LOGITS.view(1, 1, 1, 2, 2)}
    losses = _criterion(class_loss="focal")(outputs, [_targets(TARGET.view(1, 1, 2, 2))])
    p = 1 / (1 + math.exp(-0.5))
    assert set(losses) == {"loss_focal", "loss_mask", "loss_dice"}
    # The no-object column (9.0) is ignored by the focal loss.
    assert losses["loss_focal"].item() == pytest.approx(0.25 * (1 - p) ** 2 * -math.log(p), rel=1e-5)


def test_aux_losses_and_weighting():
    outputs = {"pred_logits": torch.tensor([[[0.5, -0.5]]]), "pred_masks": LOGITS.view(1, 1, 1, 2, 2)}
    outputs["aux_outputs"] = [dict(outputs), dict(outputs)]
    criterion = _criterion()
    losses = criterion(outputs, [_targets(TARGET.view(1, 1, 2, 2))])
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert losses["loss_dice_1"].item() == pytest.approx(DICE, rel=1e-5)
    total = criterion.weighted(losses).item()
    expected = 3 * (2 * math.log1p(math.exp(-1)) + 5 * BCE + 5 * DICE)
    assert total == pytest.approx(expected, rel=1e-5)
    with pytest.raises(KeyError):
        weighted_sum({"loss_other": torch.tensor(1.0)}, criterion.weight_dict)


def test_num_masks_normalises_over_batch():
    outputs = {
        "pred_logits": torch.tensor([[[0.5, -0.5]], [[0.5, -0.5]]]),
        "pred_masks": LOGITS.view(1, 1, 1, 2, 2).repeat(2, 1, 1, 1, 1),
    }
    empty = _targets(torch.zeros(0, 1, 2, 2, dtype=torch.bool))
    losses = _criterion()(outputs, [_targets(TARGET.view(1, 1, 2, 2)), empty])
    assert losses["loss_mask"].item() == pytest.approx(BCE, rel=1e-5)  # summed over 1 track / 1 mask


def test_uncertainty_sampling_runs_on_resized_targets():
    torch.manual_seed(0)
    criterion = SetCriterion(1, HungarianMatcher(num_points=50), num_points=40)
    outputs = {
        "pred_logits": torch.randn(2, 3, 2),
        "pred_masks": torch.randn(2, 3, 2, 8, 8, requires_grad=True),
    }
    targets = [_targets(torch.rand(2, 2, 32, 32) > 0.5), _targets(torch.rand(1, 2, 32, 32) > 0.5)]
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    criterion.weighted(losses).backward()
    assert outputs["pred_masks"].grad.abs().sum() > 0
