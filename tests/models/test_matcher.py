"""HungarianMatcher against brute-force assignment with an independently computed cost."""

import itertools

import pytest
import torch

from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.types import TrackTargets


def _targets(masks: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> TrackTargets:
    n = masks.shape[0]
    return TrackTargets(masks, labels, valid, torch.arange(n), torch.zeros(n, dtype=torch.bool))


def _reference_cost(logits, masks, target, weights=(2.0, 5.0, 5.0)) -> torch.Tensor:
    """Loop form of the matching cost on every pixel (prediction and target at the same size)."""
    probs = logits.softmax(-1)
    cost = torch.zeros(logits.shape[0], len(target))
    for q in range(logits.shape[0]):
        for n in range(len(target)):
            frames = target.valid[n].nonzero().flatten().tolist()
            x = masks[q, frames].flatten()
            y = target.masks[n, frames].flatten().float()
            if len(frames):
                bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
                p = x.sigmoid()
                dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            else:
                bce = dice = torch.tensor(0.0)
            cost[q, n] = -weights[0] * probs[q, target.labels[n]] + weights[1] * bce + weights[2] * dice
    return cost


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_targets", [0, 1, 2, 3])
def test_matches_brute_force(seed, num_targets):
    g = torch.Generator().manual_seed(seed * 10 + num_targets)
    num_queries, frames, size, classes = 2 + seed % 4, 2, 6, 3
    logits = torch.randn(num_queries, classes + 1, generator=g) * 2
    masks = torch.randn(num_queries, frames, size, size, generator=g) * 3
    target = _targets(
        torch.rand(num_targets, frames, size, size, generator=g) > 0.5,
        torch.randint(0, classes, (num_targets,), generator=g),
        torch.rand(num_targets, frames, generator=g) > 0.3,
    )
    matcher = HungarianMatcher(point_grid=size)
    cost = matcher.cost_matrix(logits, masks, target)
    reference = _reference_cost(logits, masks, target)
    torch.testing.assert_close(cost, reference, rtol=1e-4, atol=1e-4)

    ((rows, cols),) = matcher({"pred_logits": logits[None], "pred_masks": masks[None]}, [target])
    assert len(rows) == len(cols) == min(num_queries, num_targets)
    if num_queries >= num_targets:  # every target gets a distinct query
        totals = [
            sum(reference[q, n].item() for n, q in enumerate(perm))
            for perm in itertools.permutations(range(num_queries), num_targets)
        ]
    else:  # every query gets a distinct target
        totals = [
            sum(reference[q, n].item() for q, n in enumerate(perm))
            for perm in itertools.permutations(range(num_targets), num_queries)
        ]
    best = min(totals, default=0.0)
    assert reference[rows, cols].sum().item() == pytest.approx(best, abs=1e-5)


def test_random_points_and_batch():
    torch.manual_seed(0)
    matcher = HungarianMatcher(num_points=64)
    logits = torch.randn(2, 4, 2)
    masks = torch.randn(2, 4, 1, 8, 8)
    targets = [
        _targets(
            torch.rand(2, 1, 32, 32) > 0.5,
            torch.zeros(2, dtype=torch.long),
            torch.ones(2, 1, dtype=torch.bool),
        ),
        _targets(
            torch.zeros(0, 1, 32, 32, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            torch.ones(0, 1, dtype=torch.bool),
        ),
    ]
    indices = matcher({"pred_logits": logits, "pred_masks": masks}, targets)
    assert [len(r) for r, _ in indices] == [2, 0]
    assert indices[0][0].dtype == torch.int64


def test_focal_class_cost_follows_the_focal_loss():
    """With class_loss='focal' the class cost is the focal cost on sigmoid probabilities (no softmax)."""
    matcher = HungarianMatcher(cost_class=1.0, cost_mask=0.0, cost_dice=0.0, class_loss="focal")
    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 1.5, 0.0]])  # [Q, C+1]; last column unused
    labels = torch.tensor([1, 0])
    cost = matcher.class_cost(logits, labels)
    p = logits[:, labels].sigmoid()
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
    torch.testing.assert_close(cost, expected)
    # The no-object column plays no part: changing it changes nothing.
    logits[:, -1] = 100.0
    torch.testing.assert_close(matcher.class_cost(logits, labels), expected)
    with pytest.raises(ValueError, match="class_loss"):
        HungarianMatcher(class_loss="hinge")
