"""The progress bar's epoch title: no "Epoch 0/-2" when a run is bounded by steps."""

from types import SimpleNamespace

from x2sam_lightning.lightning.progress import StepBoundRichProgressBar, progress_bar


def _title(max_epochs) -> str:
    bar = StepBoundRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)
    return bar._get_train_description(0).strip()


def test_epoch_title_names_a_total_only_when_there_is_one():
    assert _title(-1) == "Epoch 0"
    assert _title(None) == "Epoch 0"
    assert _title(3) == "Epoch 0/2"


def test_cli_adds_the_bar_unless_disabled():
    from omegaconf import OmegaConf

    from x2sam_lightning.cli import build_run
    from x2sam_lightning.config import compose_config

    overrides = ["trainer.max_steps=1", "logger=none", "callbacks=none"]
    _, _, trainer = build_run(compose_config("agnostic", overrides))
    assert isinstance(trainer.progress_bar_callback, type(progress_bar()))
    cfg = compose_config("agnostic", [*overrides, "trainer.enable_progress_bar=false"])
    _, _, quiet = build_run(cfg)
    assert quiet.progress_bar_callback is None and OmegaConf.select(cfg, "trainer.max_epochs") in (None, -1)
