"""Instance post-processing: scores, ordering, crop of the padding and resize to the original size."""

import torch

from x2sam_lightning.models.postprocess import InstancePostprocess, instance_postprocess


def test_scores_labels_and_geometry():
    # Query 0: confident object covering the left half; query 1: weak; query 2: no-object.
    logits = torch.tensor([[[4.0, 0.0], [0.0, 0.0], [-4.0, 4.0]]])
    masks = torch.full((1, 3, 1, 4, 4), -10.0)
    masks[0, 0, 0, :, :2] = 10.0
    masks[0, 1, 0, :2, :] = 10.0
    out = instance_postprocess(
        logits,
        masks,
        image_sizes=torch.tensor([[16, 8]]),
        original_sizes=torch.tensor([[32, 16]]),
        padded_size=(16, 16),
        top_k=2,
    )[0]
    assert out["masks"].shape == (2, 1, 32, 16) and out["masks"].dtype == torch.bool
    assert out["labels"].tolist() == [0, 0]
    p0 = torch.tensor([4.0, 0.0]).softmax(0)[0]
    assert out["scores"][0].item() > out["scores"][1].item()
    # Mask quality is close to 1 (bilinear upsampling softens the mask edge a little).
    assert 0.95 * p0 < out["scores"][0] < p0
    # The left half of the padded 16x16 input is the whole un-padded 16x8 crop: the mask fills it.
    assert out["masks"][0].all()
    # Query 1 covers the top half of the input, so the top half of the original image.
    assert out["masks"][1, 0, :16].all() and not out["masks"][1, 0, 16:].any()


def test_callable_wrapper_clamps_top_k():
    post = InstancePostprocess(top_k=10)
    results = post(
        torch.randn(2, 3, 2),
        torch.randn(2, 3, 2, 4, 4),
        torch.tensor([[8, 8], [6, 8]]),
        torch.tensor([[8, 8], [12, 16]]),
        (8, 8),
    )
    assert [r["masks"].shape for r in results] == [(3, 2, 8, 8), (3, 2, 12, 16)]
    assert all((r["scores"][:-1] >= r["scores"][1:]).all() for r in results)
