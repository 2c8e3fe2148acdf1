"""Segmentor: clips flattened to frames and re-assembled as tracks."""

import torch
from helpers.models import tiny_segmentor


def test_image_and_clip_shapes():
    torch.manual_seed(0)
    model = tiny_segmentor(64, **{"mask_decoder.num_queries": 4, "mask_decoder.num_layers": 2}).eval()
    images = torch.randn(2, 1, 3, 64, 64)
    out = model(images)
    assert out["pred_logits"].shape == (2, 4, 2)
    assert out["pred_masks"].shape == (2, 4, 1, 16, 16)
    assert len(out["aux_outputs"]) == 2
    assert out["aux_outputs"][0]["pred_masks"].shape == (2, 4, 1, 16, 16)

    clip = torch.randn(2, 3, 3, 64, 64)
    out = model(clip)
    assert out["pred_masks"].shape == (2, 4, 3, 16, 16)
    # Each frame is decoded independently: frame t of sample b equals decoding that frame alone.
    single = model(clip[1:2, 2:3])
    torch.testing.assert_close(
        out["pred_masks"][1, :, 2], single["pred_masks"][0, :, 0], rtol=1e-4, atol=1e-4
    )
    # Class logits of a track are the mean of its per-frame logits.
    per_frame = torch.stack([model(clip[:, t : t + 1])["pred_logits"] for t in range(3)]).mean(0)
    torch.testing.assert_close(out["pred_logits"], per_frame, rtol=1e-4, atol=1e-4)


def test_encode_is_reused_by_decode():
    torch.manual_seed(0)
    model = tiny_segmentor(64, **{"mask_decoder.num_queries": 4, "mask_decoder.num_layers": 1}).eval()
    clip = torch.randn(1, 2, 3, 64, 64)
    features = model.encode(clip)
    assert [tuple(f.shape) for f in features.fpn] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)]
    assert [tuple(f.shape) for f in features.backbone] == [
        (2, 16, 16, 16),
        (2, 32, 8, 8),
        (2, 64, 4, 4),
        (2, 128, 2, 2),
    ]
    torch.testing.assert_close(model.decode(features, 2)["pred_masks"], model(clip)["pred_masks"])


def test_frozen_encoder_gets_no_gradient():
    model = tiny_segmentor(
        64, **{"mask_decoder.num_queries": 4, "mask_decoder.num_layers": 1, "mask_encoder.freeze": True}
    )
    model.train()
    assert not model.mask_encoder.training
    out = model(torch.randn(1, 1, 3, 64, 64))
    out["pred_masks"].sum().backward()
    assert all(p.grad is None for p in model.mask_encoder.parameters())
    assert model.mask_decoder.query_feat.weight.grad is not None
