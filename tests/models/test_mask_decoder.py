"""MaskDecoder: output contract, masked-attention rule, the stage-2 condition slot."""

import pytest
import torch

from x2sam_lightning.models.mask_decoder import CosineClassScorer, MaskDecoder


def _inputs(n: int = 2, dim: int = 64):
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(n, dim, s, s, generator=g) for s in (4, 8, 16)]
    return features, torch.randn(n, dim, 16, 16, generator=g)


def _decoder(**kwargs) -> MaskDecoder:
    torch.manual_seed(0)
    args = dict(
        in_channels=64, hidden_dim=64, mask_dim=64, num_queries=5, num_layers=3, num_heads=4, ffn_dim=128
    )
    args.update(kwargs)
    return MaskDecoder(**args)


def test_output_contract():
    decoder = _decoder(num_classes=3)
    out = decoder(*_inputs())
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    assert len(out["aux_outputs"]) == 3
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 5, 4) and aux["pred_masks"].shape == (2, 5, 16, 16)
    assert torch.isfinite(out["pred_masks"]).all()


def test_input_projection_when_widths_differ():
    decoder = _decoder(in_channels=32)
    features = [torch.randn(1, 32, s, s) for s in (4, 8, 16)]
    assert decoder(features, torch.randn(1, 64, 16, 16))["pred_masks"].shape == (1, 5, 16, 16)


def test_attention_mask_follows_previous_mask_and_empty_masks_see_everything():
    decoder = _decoder(num_queries=2)
    last = decoder.mask_embed.layers[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.zero_()
        last.bias[0] = 1.0
    mask_features = torch.zeros(1, 64, 4, 4)
    mask_features[0, 0, :, :2] = 10.0  # left half: foreground for every query
    mask_features[0, 0, :, 2:] = -10.0
    queries = torch.zeros(1, 2, 64)
    _, masks, blocked = decoder._predict(queries, mask_features, (4, 4), None, None)
    assert blocked.shape == (4 * 1, 2, 16)  # heads * N, Q, h * w
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, 2:] = True
    assert torch.equal(blocked[0, 0].view(4, 4), expected)
    # Every pixel below threshold: Mask2Former lets the query attend everywhere instead of nowhere.
    _, _, blocked = decoder._predict(queries, -mask_features.abs(), (4, 4), None, None)
    assert not blocked.any()


def test_token_to_image_attention_is_an_exact_no_op_at_init():
    decoder = _decoder(condition_dim=32).eval()
    features, mask_features = _inputs()
    tokens = torch.randn(2, 3, 32)
    # The second row is all padding (a sample without condition tokens): no NaN, no effect.
    padding = torch.tensor([[False, False, True], [True, True, True]])
    plain = decoder(features, mask_features)
    conditioned = decoder(features, mask_features, condition_tokens=tokens, condition_token_padding=padding)
    assert torch.equal(conditioned["pred_masks"], plain["pred_masks"])
    assert torch.equal(conditioned["pred_logits"], plain["pred_logits"])
    # ...but it is trainable: its output projection receives gradient.
    conditioned = decoder(features, mask_features, condition_tokens=tokens, condition_token_padding=padding)
    conditioned["pred_masks"].sum().backward()
    assert decoder.layers[0].condition_attn.attn.out_proj.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)


def test_seg_prompt_is_added_to_every_query():
    decoder = _decoder(condition_dim=64).eval()
    features, mask_features = _inputs()
    zero = decoder(features, mask_features, prompt=torch.zeros(2, 64))
    torch.testing.assert_close(zero["pred_masks"], decoder(features, mask_features)["pred_masks"])
    prompted = decoder(features, mask_features, prompt=torch.randn(2, 64))
    assert not torch.allclose(prompted["pred_masks"], zero["pred_masks"])


def test_stage2_inputs_need_a_stage2_decoder():
    decoder = _decoder()
    features, mask_features = _inputs()
    with pytest.raises(ValueError, match="condition_dim"):
        decoder(features, mask_features, prompt=torch.zeros(2, 64))


def test_cosine_class_scorer():
    decoder = _decoder(condition_dim=64, class_head="cosine")
    features, mask_features = _inputs()
    conditions = torch.randn(2, 4, 64)
    padding = torch.tensor([[False, False, False, True], [False, True, True, True]])
    logits = decoder(features, mask_features, conditions=conditions, condition_padding_mask=padding)[
        "pred_logits"
    ]
    assert logits.shape == (2, 5, 5)
    real = logits[..., :4][~padding[:, None, :].expand(-1, 5, -1)]
    assert real.abs().max() <= 50.0
    assert (logits[0, :, 3] == -1e4).all() and (logits[1, :, 1:4] == -1e4).all()


def test_cosine_scorer_clamps_and_scales():
    scorer = CosineClassScorer(8, init_logit_scale=10.0)
    with torch.no_grad():
        scorer.query_proj.weight.copy_(torch.eye(8))
        scorer.query_proj.bias.zero_()
    queries = torch.eye(8)[None, :2]  # two unit queries
    conditions = torch.stack([torch.eye(8)[0], -torch.eye(8)[0], torch.eye(8)[1] * 3])[None]
    logits = scorer(queries, conditions)
    # cos = +1 / -1 -> clamped to +-50; orthogonal -> 0.
    torch.testing.assert_close(logits[0, 0, :3], torch.tensor([50.0, -50.0, 0.0]))
    torch.testing.assert_close(logits[0, 1, :3], torch.tensor([0.0, 0.0, 50.0]))


def test_spatial_prior_starts_as_a_no_op_and_can_place_a_bump():
    decoder = _decoder(spatial_prior=True).eval()
    features, mask_features = _inputs()
    plain = _decoder().eval()
    plain.load_state_dict({k: v for k, v in decoder.state_dict().items() if "spatial_prior" not in k})
    torch.testing.assert_close(
        decoder(features, mask_features)["pred_masks"], plain(features, mask_features)["pred_masks"]
    )
    # Coefficients of -(x - 0.5)^2 - (y + 0.5)^2 (a bump at the top right): its maximum is there.
    with torch.no_grad():
        decoder.spatial_prior.coefficients.bias.copy_(torch.tensor([-0.5, 1.0, -1.0, -1.0, -1.0, 0.0]))
    prior = decoder.spatial_prior(torch.zeros(1, 1, 64), (16, 16))[0, 0]
    row, col = divmod(int(prior.argmax()), 16)
    assert row < 8 and col >= 8
