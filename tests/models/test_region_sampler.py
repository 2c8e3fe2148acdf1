"""Region sampler on hand-made masks: points inside the prompt, pooling, a one-pixel prompt, seeding."""

import pytest
import torch

from x2sam_lightning.models.region_sampler import RegionSampler


def test_points_fall_inside_the_mask_and_pool_in_groups():
    sampler = RegionSampler(num_points=16, pool_kernel=4)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:4, 5:7] = True
    masks[1, 6, 1] = True  # a one-pixel prompt
    points = sampler.sample_points(masks, torch.Generator().manual_seed(0))
    assert points.shape == (2, 16, 2)
    cols, rows = (points[..., 0] * 8 - 0.5).round().long(), (points[..., 1] * 8 - 0.5).round().long()
    assert masks[torch.arange(2)[:, None], rows, cols].all()
    assert (rows[1] == 6).all() and (cols[1] == 1).all()
    # Features equal to each pixel's (row, col): a pooled token is the mean of its 4 points' positions.
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    features = torch.stack([yy, xx])[None]  # [1, 2, 8, 8]
    tokens = sampler(features, masks, torch.tensor([0, 0]), torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 4, 2)
    expected = torch.stack([rows, cols], -1).float().unflatten(1, (4, 4)).mean(2)
    torch.testing.assert_close(tokens, expected)
    torch.testing.assert_close(tokens[1], torch.tensor([[6.0, 1.0]] * 4))


def test_features_at_lower_resolution_and_frame_index():
    sampler = RegionSampler(num_points=8, pool_kernel=8)
    features = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])  # frame 0 zeros, frame 1 ones
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 3:9, 2:12] = True
    tokens = sampler(features, masks, torch.tensor([1]))
    torch.testing.assert_close(tokens, torch.ones(1, 1, 3))


def test_same_seed_same_tokens_and_empty_prompt_is_an_error():
    sampler = RegionSampler(num_points=32, pool_kernel=4)
    features = torch.randn(1, 5, 8, 8)
    masks = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    frames = torch.zeros(3, dtype=torch.long)
    a = sampler(features, masks, frames, torch.Generator().manual_seed(7))
    b = sampler(features, masks, frames, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="empty"):
        sampler(features, torch.zeros(1, 32, 32, dtype=torch.bool), frames[:1])
    with pytest.raises(ValueError, match="divide"):
        RegionSampler(num_points=10, pool_kernel=4)
