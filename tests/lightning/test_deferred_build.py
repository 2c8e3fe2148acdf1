"""Large parts built in ``configure_model`` (lightning/deferred.py), so FSDP / ZeRO-3 can shard them.

FSDP needs GPUs and NCCL; on CPU the contract is checked: the CLI's module holds none of the parts'
parameters before ``configure_model``, builds them there once (a second call is a no-op), builds them
under whatever init context the strategy opens (here ``torch.device("meta")``), and fit / test / predict,
the stage-1 hand-off and checkpoint reload work on a module built that way.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers.vlm import stage2_config
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.lightning.checkpoint_files import CheckpointError
from x2sam_lightning.lightning.checkpoints import load_checkpoint
from x2sam_lightning.lightning.deferred import Deferred, instantiate_deferred

STAGE1 = ["data.image_size=64"]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _stage1_datamodule(tmp_path):
    cfg = compose_config("agnostic", [*STAGE1, f"paths.data_dir={tmp_path / 'data'}", *_tiny_data()])
    return cfg, instantiate(cfg.data)


def _tiny_data() -> list[str]:
    from test_experiments import TINY_DATA

    return TINY_DATA


def test_the_cli_module_holds_no_part_parameters_until_configure_model():
    cfg = compose_config("agnostic", STAGE1)
    module = instantiate_deferred(cfg.model)
    assert not module.parts_built and _count(module) == 0
    assert isinstance(module._pending["segmentor"], Deferred)
    module.configure_model()
    assert module.parts_built
    params = {name: id(p) for name, p in module.named_parameters()}
    eager = instantiate(cfg.model)
    assert _count(module) == _count(eager) > 0
    assert {k: v.shape for k, v in module.state_dict().items()} == {
        k: v.shape for k, v in eager.state_dict().items()
    }
    module.configure_model()  # Lightning calls it at every fit / validate / test / predict
    assert {name: id(p) for name, p in module.named_parameters()} == params


def test_the_parts_are_built_under_the_strategys_init_context():
    """FSDP's empty init and ZeRO-3's partitioned init open a context around configure_model."""
    module = instantiate_deferred(compose_config("agnostic", STAGE1).model)
    with torch.device("meta"):
        module.configure_model()
    assert _count(module) > 0 and all(p.is_meta for p in module.segmentor.parameters())


def test_stage2_holds_neither_segmentor_nor_language_model_before_configure_model(stage2_dir):
    cfg = stage2_config(stage2_dir)
    module = instantiate_deferred(cfg.model)
    assert _count(module) == 0 and not hasattr(module, "net")
    module.configure_model()
    torch.manual_seed(0)
    eager = instantiate(cfg.model)
    assert set(module.state_dict()) == set(eager.state_dict())
    assert module.checkpoint_keys() == eager.checkpoint_keys()
    assert module.evaluator.tokenizer is module.net.vl_backbone.tokenizer
    before = dict(module.named_parameters())
    module.configure_model()
    assert all(p is before[name] for name, p in module.named_parameters())


def test_fit_test_predict_and_reload_of_a_deferred_stage1_module(tmp_path):
    cfg, datamodule = _stage1_datamodule(tmp_path)
    module = instantiate_deferred(cfg.model)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1, val_check_interval=2)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 and module.parts_built
    path = tmp_path / "fit.ckpt"
    trainer.save_checkpoint(path)
    trained = {k: v.clone() for k, v in module.state_dict().items()}

    # A new process: a fresh deferred module, its weights restored by the Trainer after configure_model.
    restored = instantiate_deferred(cfg.model)
    _trainer(tmp_path, limit_test_batches=1).test(
        restored, datamodule=datamodule, ckpt_path=path, verbose=False
    )
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    predictions = _trainer(tmp_path, limit_predict_batches=1).predict(
        instantiate_deferred(cfg.model), datamodule=datamodule, ckpt_path=path
    )
    assert predictions and predictions[0][0]["masks"].dtype == torch.bool
    # A resumed fit restores the optimiser too.
    resumed = instantiate_deferred(cfg.model)
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, val_check_interval=3)
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=path)
    assert trainer.global_step == 3
    assert load_checkpoint(path)["state_dict"].keys() == resumed.state_dict().keys()


def test_the_cli_checks_a_checkpoint_against_the_parts_once_built(tmp_path):
    """The CLI's shape check (a one-line error, exit 2) waits for configure_model."""
    from x2sam_lightning import cli

    cfg, datamodule = _stage1_datamodule(tmp_path)
    module = instantiate_deferred(cfg.model)
    module.configure_model()
    path = tmp_path / "other.ckpt"
    state = {k: v for k, v in module.state_dict().items() if "mask_decoder" not in k}
    torch.save({"state_dict": state, "optimizer_states": [], "pytorch-lightning_version": "2.6.6"}, path)
    cfg.ckpt_path = str(path)
    fresh = instantiate_deferred(cfg.model)
    cli._check_fits(cfg, cli._checkpoint_of(cfg), fresh)  # nothing to compare yet
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        fresh.configure_model()
