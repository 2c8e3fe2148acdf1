"""PixelDecoder shapes and its deformable attention against transformers' Mask2Former module."""

import pytest
import torch
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)

from x2sam_lightning.models.pixel_decoder import MultiScaleDeformableAttention, PixelDecoder


def _features(n: int = 2, channels: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, channels, s, s, generator=g) for s in (16, 8, 4)]


def test_deformable_attention_matches_transformers():
    torch.manual_seed(0)
    ours = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=3, num_points=4)
    # Non-trivial offsets and weights so the comparison exercises sampling, not just the init.
    for p in ours.parameters():
        p.data.normal_(0, 0.5)
    reference = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(32, 4, n_levels=3, n_points=4)
    reference.load_state_dict(ours.state_dict())
    shapes = [(4, 4), (8, 8), (16, 16)]
    seq = sum(h * w for h, w in shapes)
    hidden = torch.randn(2, seq, 32)
    pos = torch.randn(2, seq, 32)
    points = PixelDecoder.reference_points(shapes, hidden.device, hidden.dtype)[None].expand(2, -1, -1)
    expected, _ = reference(
        hidden_states=hidden,
        encoder_hidden_states=hidden,
        position_embeddings=pos,
        reference_points=points[:, :, None].expand(-1, -1, 3, -1),
        spatial_shapes_list=shapes,
    )
    got = ours(hidden + pos, hidden, points, shapes)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("num_transformer_levels", [3, 2, 1])
def test_pixel_decoder_shapes_and_gradients(num_transformer_levels):
    decoder = PixelDecoder(
        in_channels=[32, 32, 32],
        num_transformer_levels=num_transformer_levels,
        hidden_dim=64,
        mask_dim=48,
        num_layers=1,
        num_heads=4,
        num_points=2,
        ffn_dim=64,
        num_groups=8,
    )
    features = [f.requires_grad_() for f in _features()]
    out = decoder(features)
    assert out.mask_features.shape == (2, 48, 16, 16)
    assert [tuple(f.shape) for f in out.multi_scale_features] == [
        (2, 64, 4, 4),
        (2, 64, 8, 8),
        (2, 64, 16, 16),
    ]
    out.mask_features.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_reference_points_are_pixel_centres():
    points = PixelDecoder.reference_points([(2, 4)], torch.device("cpu"), torch.float32)
    assert points.shape == (8, 2)
    torch.testing.assert_close(points[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(points[-1], torch.tensor([0.875, 0.75]))
