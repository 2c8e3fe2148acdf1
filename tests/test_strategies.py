"""Trainer presets ddp | fsdp | deepspeed compose with every experiment's model; the strategies build."""

from __future__ import annotations

import importlib.util

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.accumulation import check_trainer_config


@pytest.mark.parametrize("preset", ["ddp", "fsdp", "deepspeed"])
@pytest.mark.parametrize("experiment", ["agnostic", "joint_image"])
def test_presets_compose_without_the_options_manual_optimisation_replaces(preset, experiment):
    cfg = compose_config(experiment, [f"trainer={preset}", "paths.data_dir=/nowhere"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == -1
    check_trainer_config(cfg.trainer)  # no gradient_clip_val / accumulate_grad_batches left in them


def test_fsdp_wraps_the_listed_blocks():
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextDecoderLayer

    cfg = compose_config("joint_image", ["trainer=fsdp", "paths.data_dir=/nowhere"])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert Qwen3VLTextDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes


def test_fsdp_wrap_class_that_does_not_exist_is_named():
    from x2sam_lightning.lightning.strategies import fsdp_strategy

    with pytest.raises(ValueError, match="transformers.NoSuchBlock"):
        fsdp_strategy(["transformers.NoSuchBlock"])


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed")
def test_deepspeed_preset_without_the_package_says_what_to_install():
    cfg = compose_config("agnostic", ["trainer=deepspeed", "paths.data_dir=/nowhere"])
    assert cfg.trainer.strategy.gradient_clipping == 1.0  # the module's clip value, handed to DeepSpeed
    with pytest.raises(InstantiationException, match=r"ImportError.*x2sam-lightning\[deepspeed\]"):
        instantiate(cfg.trainer.strategy)
