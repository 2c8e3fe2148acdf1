"""Every experiment composes and instantiates; each verb runs end to end on tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from x2sam_lightning import cli
from x2sam_lightning.lightning.checkpoints import load_stage1_parts
from x2sam_lightning.models.mask_encoder import MaskEncoder, tiny_sam2_vision_config

TINY_DATA = [
    "data.synthetic.num_train_images=24",
    "data.synthetic.num_val_images=8",
    "data.synthetic.num_test_images=8",
    "data.synthetic.num_train_videos=2",
    "data.synthetic.num_val_videos=2",
    "data.synthetic.images_per_shard=8",
    "data.synthetic.frames=4",
]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("x2sam")


def compose_run(workdir: Path, experiment: str, verb: str, *overrides: str, tiny_data: bool = True):
    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"+experiment={experiment}",
                f"verb={verb}",
                f"paths.data_dir={workdir / 'data'}",
                f"paths.run_dir={workdir / 'runs' / verb}",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                *(TINY_DATA if tiny_data else []),
                *overrides,
            ],
        )


@pytest.fixture(scope="session")
def sam2_folder(workdir) -> Path:
    """A local 'SAM2.1 Hiera-L' folder: a tiny random vision model saved in transformers format."""
    folder = workdir / "sam2"
    MaskEncoder(tiny_sam2_vision_config(image_size=128)).vision.save_pretrained(folder)
    return folder


STAGE1_EXPERIMENTS = [name for name in cli.available_experiments() if not name.startswith("joint")]


@pytest.mark.parametrize("experiment", STAGE1_EXPERIMENTS)
def test_every_stage1_experiment_composes_and_instantiates(workdir, sam2_folder, experiment):
    """Stage-2 experiments need a Qwen3-VL folder as well: tests/test_joint_experiments.py covers them."""
    cfg = compose_run(workdir, experiment, "fit", f"paths.sam2_hiera_large={sam2_folder}", tiny_data=False)
    module = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    trainer_cfg = dict(cfg.trainer)
    assert trainer_cfg["max_steps"] > 0
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) > 0
    assert datamodule.train_sources and datamodule.val_sources
    encoder = module.segmentor.mask_encoder
    assert all(not p.requires_grad for p in encoder.parameters()) == cfg.model.segmentor.mask_encoder.freeze


@pytest.fixture(scope="session")
def fitted(workdir) -> Path:
    """A 3-step stage-1 run with a validation at the end; returns its last checkpoint."""
    cfg = compose_run(workdir, "agnostic", "fit", "trainer.max_steps=3", "trainer.val_check_interval=3")
    metrics = cli.run_fit(cfg)
    assert {"val/ap50", "val/ar10", "train/loss"} <= set(metrics)
    assert 0.0 <= metrics["val/ap50"] <= 1.0
    return workdir / "runs" / "fit" / "checkpoints" / "last.ckpt"


def test_fit_checkpoint_initialises_stage2_decoder(fitted):
    parts = load_stage1_parts(fitted)
    assert set(parts) == {"mask_encoder", "pixel_decoder", "mask_decoder"}
    state = torch.load(fitted, map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in parts["mask_decoder"].items():
        assert torch.equal(tensor, state[f"segmentor.mask_decoder.{name}"])


def test_fit_resumes_from_checkpoint(workdir, fitted):
    cfg = compose_run(workdir, "agnostic", "fit", "trainer.max_steps=5", "trainer.val_check_interval=5")
    cfg.ckpt_path = str(fitted)
    datamodule, module, trainer = cli.build_run(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    assert trainer.global_step == 5


@pytest.mark.parametrize("verb", ["fit", "validate", "test"])
def test_fast_dev_run(workdir, verb):
    cfg = compose_run(workdir, "agnostic", verb, "+trainer.fast_dev_run=true")
    metrics = cli.VERBS[verb](cfg)
    expected = {"fit": "train/loss", "validate": "val/ap50", "test": "test/ap50"}[verb]
    assert expected in metrics


def test_fit_without_a_logger(workdir):
    """``logger=none`` with the default callbacks: the learning-rate monitor (which needs a logger) is left out."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    cfg = compose_run(
        workdir, "agnostic", "fit", "logger=none", "trainer.max_steps=1", "trainer.val_check_interval=1"
    )
    datamodule, module, trainer = cli.build_run(cfg)
    assert not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1


def test_test_verb_writes_results_table(workdir, fitted):
    cfg = compose_run(workdir, "agnostic", "test", f"ckpt_path={fitted}")
    results = cli.run_test(cfg)
    run_dir = Path(cfg.paths.run_dir)
    table = json.loads((run_dir / "results.json").read_text())
    assert "test/ap50" in results
    assert json.dumps(table)  # written and parseable
    assert (run_dir / "results.md").read_text().count("|") > 4


def test_predict_writes_rle_lines(workdir, fitted):
    cfg = compose_run(
        workdir, "agnostic", "predict", f"ckpt_path={fitted}", "+trainer.limit_predict_batches=1"
    )
    cli.run_predict(cfg)
    lines = (Path(cfg.paths.run_dir) / "predictions" / "predictions.rank0.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["key"].startswith("synthetic_img/") and record["objects"]
    assert {"score", "label", "masks"} <= set(record["objects"][0])


def test_cli_end_to_end_in_a_subprocess(workdir):
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=agnostic",
        f"paths.data_dir={workdir / 'data'}", f"paths.output_dir={workdir / 'cli_runs'}",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        *TINY_DATA,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/ap50" in result.stdout
    (metrics_file,) = (workdir / "cli_runs" / "agnostic" / "fit").glob("*/fit_metrics.json")
    assert "val/ap50" in json.loads(metrics_file.read_text())
