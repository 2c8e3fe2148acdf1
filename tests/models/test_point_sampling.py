"""Point sampling: exact reads at pixel centres; uncertainty sampling finds the decision boundary."""

import torch

from x2sam_lightning.models.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    grid_coords,
    point_sample,
)


def test_grid_points_read_pixels_and_upsample_bilinearly():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(point_sample(x, grid_coords(4, 5)[None].expand(2, -1, -1)), x.flatten(2))
    up = torch.nn.functional.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(point_sample(x, grid_coords(8, 10)[None].expand(2, -1, -1)), up.flatten(2))


def test_uncertain_points_follow_the_boundary_of_valid_frames():
    torch.manual_seed(0)
    logits = torch.full((1, 2, 32, 32), 10.0)
    logits[0, 0, :, 8:24] = 0.0  # frame 0: uncertain vertical band (half the image)
    logits[0, 1, :8, :] = 0.0  # frame 1 (invalid below): would pull points to the top
    coords = get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, 16, 4.0, 1.0, frame_valid=torch.tensor([[True, False]])
    )
    assert coords.shape == (1, 16, 2)
    x = coords[0, :, 0]
    assert ((x > 7 / 32) & (x < 25 / 32)).all()
    mixed = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 64, 3.0, 0.75)
    assert mixed.shape == (1, 64, 2) and mixed.min() >= 0 and mixed.max() <= 1
