"""MaskEncoder against the plain transformers Sam2VisionModel; freezing; local checkpoint round trip."""

import torch
from omegaconf import OmegaConf
from transformers import Sam2Config, Sam2Model, Sam2VisionModel

from x2sam_lightning.models.mask_encoder import MaskEncoder, sam2_hiera_large_config, tiny_sam2_vision_config


def _pixels(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_matches_plain_sam2_vision_model():
    config = tiny_sam2_vision_config(image_size=64)
    torch.manual_seed(0)
    reference = Sam2VisionModel(config).eval()
    torch.manual_seed(0)
    encoder = MaskEncoder(config).eval()
    pixels = _pixels()
    plain = reference(pixel_values=pixels)
    out = encoder(pixels)
    assert len(out.fpn) == 3
    for e, g in zip([*plain.fpn_hidden_states, *plain.fpn_position_encoding], [*out.fpn, *out.fpn_pos]):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    got = out.fpn
    assert [g.shape[-1] for g in got] == [16, 8, 4]
    # The Hiera stages the region sampler reads: channels first, fine to coarse.
    assert [tuple(b.shape[1:]) for b in out.backbone] == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]
    assert encoder.backbone_channels == [16, 32, 64, 128]
    assert encoder.strides == [4, 8, 16]
    assert encoder.out_channels == [32, 32, 32]


def test_config_from_dict_and_real_preset():
    config = tiny_sam2_vision_config(image_size=64).to_dict()
    encoder = MaskEncoder(OmegaConf.create(config))  # as Hydra passes it
    assert encoder.config.fpn_top_down_levels == [0, 1, 2, 3]
    minimal = {
        "backbone_config": {
            "hidden_size": 16,
            "embed_dim_per_stage": [16, 32, 64, 128],
            "blocks_per_stage": [1, 2, 2, 1],
            "num_attention_heads_per_stage": [1, 1, 2, 4],
            "window_size_per_stage": [8, 4, 4, 4],
            "global_attention_blocks": [4],
        },
        "backbone_channel_list": [128, 64, 32, 16],
        "fpn_hidden_size": 32,
    }
    assert MaskEncoder(minimal)(_pixels()).fpn[0].shape == (2, 32, 16, 16)
    large = sam2_hiera_large_config()
    assert large.backbone_config.blocks_per_stage == [2, 6, 36, 4]
    assert large.fpn_hidden_size == 256


def test_freeze_keeps_eval_and_no_grad():
    encoder = MaskEncoder(tiny_sam2_vision_config(image_size=64), freeze=True)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.vision.training
    trainable = MaskEncoder(tiny_sam2_vision_config(image_size=64))
    trainable.train()
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())


def test_pretrained_round_trip_vision_checkpoint(tmp_path):
    torch.manual_seed(1)
    encoder = MaskEncoder(tiny_sam2_vision_config(image_size=64)).eval()
    encoder.vision.save_pretrained(tmp_path)
    loaded = MaskEncoder(pretrained_path=str(tmp_path), freeze=True)
    pixels = _pixels()
    for a, b in zip(encoder(pixels).fpn, loaded(pixels).fpn):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretrained_full_sam2_checkpoint(tmp_path):
    torch.manual_seed(2)
    vision = tiny_sam2_vision_config(image_size=64)
    config = Sam2Config(
        vision_config=vision.to_dict(),
        prompt_encoder_config={"hidden_size": 32, "image_size": 64, "patch_size": 4},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "iou_head_hidden_dim": 32,
            "num_attention_heads": 2,
        },
    )
    full = Sam2Model(config).eval()
    full.save_pretrained(tmp_path)
    loaded = MaskEncoder(pretrained_path=str(tmp_path))
    pixels = _pixels()
    expected = full.vision_encoder(pixel_values=pixels).fpn_hidden_states
    for e, g in zip(expected, loaded(pixels).fpn):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
