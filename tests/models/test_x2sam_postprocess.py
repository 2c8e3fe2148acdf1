"""Stage-2 postprocess on hand-made logits: Mask2Former's panoptic keep rule."""

from __future__ import annotations

import torch

from x2sam_lightning.models.x2sam_postprocess import panoptic_inference


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p)))


def test_panoptic_keeps_a_query_by_the_pixels_it_won_against_its_mask():
    """Query 1's mask (10 columns) loses half to query 0 but also wins 10 columns where its own mask is
    under 0.5: won 15 / mask 10 >= 0.8 keeps it (Mask2Former); counting only won pixels inside its mask
    (5 / 10) would drop it. It paints only the won pixels inside its mask."""
    masks = torch.full((2, 1, 4, 30), -20.0)
    masks[0, 0, :, 0:5] = _logit(0.99)
    masks[1, 0, :, 0:10] = _logit(0.6)
    masks[1, 0, :, 10:20] = _logit(0.3)
    logits = torch.tensor([[8.0, -8.0, -8.0], [-8.0, 8.0, -8.0]])
    segment_map, segments = panoptic_inference(logits, masks, is_thing=[True, True])
    assert [s["label"] for s in segments] == [0, 1]
    assert (segment_map[0, :, 0:5] == 1).all() and (segment_map[0, :, 5:10] == 2).all()
    assert (segment_map[0, :, 10:] == 0).all()
