"""Stage-1 -> stage-2 hand-off of a segmentor with a mask memory: a stage-1 part when stage 1 trained one,
new (and named) otherwise."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.checkpoints import STAGE1_FORMAT, load_stage1_into, stage1_metadata

SMALL = ["data.image_size=64", "model.segmentor.mask_decoder.num_layers=1"]


def _stage1_checkpoint(tmp_path, memory: str, seed: int = 1):
    torch.manual_seed(seed)
    stage1 = instantiate(compose_config("agnostic", [*SMALL, f"model/mask_memory={memory}"]).model)
    with torch.no_grad():  # a trained memory is no longer at its (partly zero) initialisation
        for p in stage1.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"stage1_{memory}.ckpt"
    torch.save({"state_dict": stage1.state_dict(), STAGE1_FORMAT: stage1_metadata(stage1)}, path)
    return stage1, path


def _segmentor(memory: str):
    torch.manual_seed(2)
    return instantiate(compose_config("agnostic", [*SMALL, f"model/mask_memory={memory}"]).model.segmentor)


def test_a_trained_memory_is_handed_over(tmp_path):
    stage1, path = _stage1_checkpoint(tmp_path, "tiny")
    assert stage1_metadata(stage1)["parts"]["mask_memory"]
    target = _segmentor("tiny")
    report = load_stage1_into(target, path)
    assert set(report.loaded) == {"mask_encoder", "pixel_decoder", "mask_decoder", "mask_memory"}
    assert report.stage2_only == []
    for name, tensor in stage1.segmentor.mask_memory.state_dict().items():
        assert torch.equal(target.mask_memory.state_dict()[name], tensor), name


def test_a_memory_new_in_stage2_keeps_its_initialisation_and_is_named(tmp_path):
    _, path = _stage1_checkpoint(tmp_path, "none")
    target = _segmentor("tiny")
    before = {k: v.clone() for k, v in target.mask_memory.state_dict().items()}
    report = load_stage1_into(target, path)
    assert set(report.loaded) == {"mask_encoder", "pixel_decoder", "mask_decoder"}
    assert sorted(report.stage2_only) == sorted(f"mask_memory.{k}" for k in before)
    assert all(torch.equal(target.mask_memory.state_dict()[k], v) for k, v in before.items())


def test_without_memory_on_either_side_nothing_changes(tmp_path):
    _, path = _stage1_checkpoint(tmp_path, "none")
    report = load_stage1_into(_segmentor("none"), path)
    assert set(report.loaded) == {"mask_encoder", "pixel_decoder", "mask_decoder"} and not report.stage2_only


def test_a_trained_memory_into_a_segmentor_without_one_is_refused(tmp_path):
    _, path = _stage1_checkpoint(tmp_path, "tiny")
    with pytest.raises(
        ValueError, match=r"stage1_tiny.ckpt: the stage-1 checkpoint holds a trained mask_memory"
    ):
        load_stage1_into(_segmentor("none"), path)
    # Leaving it out of the parts hands over the rest.
    report = load_stage1_into(_segmentor("none"), path, ["mask_encoder", "pixel_decoder", "mask_decoder"])
    assert set(report.loaded) == {"mask_encoder", "pixel_decoder", "mask_decoder"}


def test_a_memory_of_another_size_is_refused_by_name(tmp_path):
    _, path = _stage1_checkpoint(tmp_path, "tiny")
    with pytest.raises(ValueError, match=r"mask_memory\.attention\.0\..* missing from the checkpoint"):
        load_stage1_into(_segmentor("default"), path)
