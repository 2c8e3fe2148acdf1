"""Stage-1 -> stage-2 hand-off and stage-2 checkpoints (trainable weights + what rebuilds the model)."""

from __future__ import annotations

import pytest
import torch
from helpers.vlm import build_stage2, hand_made_batch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.checkpoint_files import CheckpointError, check_checkpoint
from x2sam_lightning.lightning.checkpoints import (
    STAGE1_FORMAT,
    load_checkpoint,
    load_stage1_into,
    load_stage1_parts,
    stage1_metadata,
)
from x2sam_lightning.lightning.x2sam_joint import STAGE2_FORMAT


def _stage1_checkpoint(tmp_path, *overrides: str):
    torch.manual_seed(1)
    stage1 = instantiate(compose_config("agnostic", ["data.image_size=64", *overrides]).model)
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": stage1.state_dict(), STAGE1_FORMAT: stage1_metadata(stage1)}, path)
    return stage1, path


def test_stage1_decoder_loads_into_the_stage2_model(tmp_path, stage2_dir):
    stage1, path = _stage1_checkpoint(tmp_path)
    module = build_stage2(stage2_dir)
    decoder = module.net.segmentor.mask_decoder
    condition_before = {k: v.clone() for k, v in decoder.state_dict().items() if "condition" in k}
    report = load_stage1_into(module.net.segmentor, path)
    assert set(report.loaded) == {"mask_encoder", "pixel_decoder", "mask_decoder"}
    assert report.stage1_only == ["mask_decoder.class_embed.bias", "mask_decoder.class_embed.weight"]
    stage2_parts = ("condition", "class_scorer", "spatial_prior")
    assert report.stage2_only
    assert all(any(part in k for part in stage2_parts) for k in report.stage2_only), report.stage2_only
    old = stage1.segmentor.state_dict()
    shared = [name for name in module.net.segmentor.state_dict() if name in old]
    assert len(shared) == len(old) - len(report.stage1_only)  # everything stage 1 has but its object head
    for name in shared:
        assert torch.equal(module.net.segmentor.state_dict()[name], old[name]), name
    # Stage-2-only parameters keep their initialisation (token attention stays an exact no-op).
    for k, v in condition_before.items():
        assert torch.equal(decoder.state_dict()[k], v)
    assert all((layer.condition_attn.attn.out_proj.weight == 0).all() for layer in decoder.layers)


def test_a_record_listing_only_the_decoders_still_hands_over_the_mask_encoder(tmp_path):
    """Stage-1 checkpoints written before the mask encoder was handed over record the decoders only."""
    stage1, path = _stage1_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint[STAGE1_FORMAT]["parts"]["mask_encoder"]
    torch.save(checkpoint, path)
    parts = load_stage1_parts(path)
    assert set(parts) == {"mask_encoder", "pixel_decoder", "mask_decoder"}
    for name, tensor in stage1.segmentor.mask_encoder.state_dict().items():
        assert torch.equal(parts["mask_encoder"][name], tensor)


def test_a_checkpoint_of_another_preset_is_refused_with_the_reasons(tmp_path, stage2_dir):
    _, path = _stage1_checkpoint(tmp_path, "model.segmentor.mask_decoder.hidden_dim=32")
    module = build_stage2(stage2_dir)
    with pytest.raises(ValueError, match=r"mask_decoder\..*shape \[.*32.*\] != model shape"):
        load_stage1_into(module.net.segmentor, path)
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a stage-1"):
        load_stage1_into(module.net.segmentor, tmp_path / "plain.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.ckpt"):
        load_checkpoint(tmp_path / "broken.ckpt")


LORA = ["model.vl_backbone.lora={r: 8, lora_alpha: 16}", "model.vl_backbone.freeze_llm=true"]


def test_stage2_checkpoint_round_trip_gives_the_same_outputs(tmp_path, stage2_dir):
    """With LoRA (the paper's set-up) the frozen base weights stay out of the checkpoint."""
    batch = hand_made_batch()
    trained = build_stage2(stage2_dir, *LORA, seed=0).eval()
    with torch.no_grad():  # move every trainable weight away from its initialisation
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    path = tmp_path / "stage2.ckpt"
    torch.save(checkpoint, path)
    saved = load_checkpoint(path)  # weights_only
    total = sum(v.numel() for v in trained.state_dict().values())
    kept = sum(v.numel() for v in saved["state_dict"].values())
    assert kept < total and saved[STAGE2_FORMAT]["base_digest"] == trained.net.vl_backbone.base_digest
    assert not any(".base_layer." in k for k in saved["state_dict"])  # frozen base weights stay out

    restored = build_stage2(stage2_dir, *LORA, seed=123).eval()
    restored.load_trained(saved)
    with torch.no_grad():
        # Region prompts draw their points from a generator: the same seed for both.
        a = trained.net(batch, generator=torch.Generator().manual_seed(0))
        b = restored.net(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.lm_logits, b.lm_logits)
    torch.testing.assert_close(a.seg["pred_masks"], b.seg["pred_masks"])

    saved[STAGE2_FORMAT]["base_digest"] = "0" * 64
    with pytest.raises(ValueError, match="another base model"):
        restored.on_load_checkpoint(saved)


def test_a_stage1_checkpoint_given_as_stage2_ckpt_path_is_refused_before_the_trainer(tmp_path, stage2_dir):
    import lightning

    stage1, _ = _stage1_checkpoint(tmp_path)
    path = tmp_path / "stage1_as_stage2.ckpt"
    torch.save({"state_dict": stage1.state_dict(), "pytorch-lightning_version": lightning.__version__}, path)
    with pytest.raises(CheckpointError, match=r"stage1_as_stage2.ckpt.*missing from the checkpoint \(net\."):
        check_checkpoint(path, build_stage2(stage2_dir))
