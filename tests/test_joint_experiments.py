"""Stage 2 through the CLI: every experiment takes a training and a validation step on a narrowed copy of
itself; fit (stage 1 made on the way) -> test -> predict -> Python predictor on tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from x2sam_lightning import cli
from x2sam_lightning.config import compose_config
from x2sam_lightning.inference.predictor import Predictor
from x2sam_lightning.lightning.checkpoints import load_checkpoint
from x2sam_lightning.models.mask_encoder import MaskEncoder, tiny_sam2_vision_config
from x2sam_lightning.models.tiny_qwen3vl import TinyQwen3VLConfig, save_tiny_qwen3vl

TINY_DATA = [
    "data.synthetic.num_train_images=16",
    "data.synthetic.num_val_images=4",
    "data.synthetic.num_test_images=4",
    "data.synthetic.num_train_videos=2",
    "data.synthetic.num_val_videos=2",
    "data.synthetic.num_test_videos=2",
    "data.synthetic.num_train_task_images=8",
    "data.synthetic.num_val_task_images=2",
    "data.synthetic.num_test_task_images=2",
    "data.synthetic.images_per_shard=8",
    "data.synthetic.frames=4",
    "data.image_size=64",
    "data.batch_size=2",
    "data.image_batch_multiplier=1",
]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("joint")


@pytest.fixture(scope="module")
def local_folders(workdir) -> list[str]:
    """'SAM2.1 Hiera-L' and 'Qwen3-VL-4B-Instruct' stand-ins: tiny random models in the real folder layout."""
    sam2, qwen = workdir / "sam2", workdir / "qwen3vl"
    MaskEncoder(tiny_sam2_vision_config(image_size=64)).vision.save_pretrained(sam2)
    save_tiny_qwen3vl(qwen, TinyQwen3VLConfig())
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        assert (qwen / name).is_file()
    return [f"paths.sam2_hiera_large={sam2}", f"paths.qwen3vl_4b={qwen}"]


def _narrow(experiment: str) -> list[str]:
    """Tiny data of the experiment's kind, one step of everything; the model keeps its preset."""
    joint = experiment.startswith("joint")
    data = "data=synthetic_image_tasks" if joint else "data=synthetic_images"
    steps = [
        "trainer=cpu",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "trainer.limit_val_batches=1",
    ]
    extra = (
        ["model.stage1_checkpoint=null", "model.vl_backbone.image_size=null", "model.max_new_tokens=4"]
        if joint
        else []
    )
    return [data, *steps, *extra, *TINY_DATA]


@pytest.mark.parametrize("experiment", cli.available_experiments())
def test_every_experiment_trains_and_validates_a_step(workdir, local_folders, experiment):
    cfg = compose_config(
        experiment,
        [f"paths.data_dir={workdir / 'data'}", f"paths.run_dir={workdir / 'runs' / experiment}", *local_folders, *QUIET,
         *_narrow(experiment), "logger=none", "callbacks=none"],
    )  # fmt: skip
    datamodule, module, trainer = cli.build_run(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1
    assert any(k.startswith("val/") for k in trainer.callback_metrics), sorted(trainer.callback_metrics)
    # The paper preset keeps its model (frozen where the paper freezes, LoRA where it adapts); the tiny
    # random preset trains its language model fully (there is nothing pretrained to keep).
    real = compose_config(experiment, local_folders)
    if experiment.endswith("qwen3vl4b"):
        backbone = real.model.vl_backbone
        assert (
            backbone.lora.r == 128 and backbone.lora.lora_alpha == 256 and backbone.lora.lora_dropout == 0.05
        )
        assert backbone.freeze_vision
    elif "vl_backbone" in real.model:
        assert real.model.vl_backbone.lora is None and not real.model.vl_backbone.freeze_llm


@pytest.fixture(scope="module")
def joint_fit(workdir) -> tuple[dict, Path]:
    """`python -m x2sam_lightning fit +experiment=joint_image` (the README's first command, narrowed) in a
    subprocess, with no stage-1 checkpoint: stage 1 is trained first (2 steps) inside the CLI's Hydra app."""
    stage1 = [
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        *TINY_DATA,
    ]
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=joint_image",
        f"paths.data_dir={workdir / 'data'}", f"paths.output_dir={workdir / 'out'}",
        f"paths.run_dir={workdir / 'out' / 'joint'}", "stage1_overrides=[" + ",".join(f"'{o}'" for o in stage1) + "]",
        "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "model.max_new_tokens=8", *QUIET, *TINY_DATA,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test split (held out" in result.stdout and "synthetic_img_refseg_test" in result.stdout
    metrics = json.loads((workdir / "out" / "joint" / "fit_metrics.json").read_text())
    return metrics, workdir / "out" / "joint" / "checkpoints" / "last.ckpt"


def test_fit_trains_stage1_first_then_tests_and_writes_the_table(workdir, joint_fit):
    metrics, checkpoint = joint_fit
    assert list((workdir / "out" / "agnostic" / "fit").glob("*/checkpoints/last.ckpt"))
    assert "train/loss" in metrics
    assert any(k.startswith("test/synthetic_img_refseg_test/") for k in metrics)
    table = json.loads((workdir / "out" / "joint" / "results.json").read_text())
    assert {row["task"] for row in table["rows"]} >= {"img_refseg", "img_genseg", "img_chat"}
    saved = load_checkpoint(checkpoint)
    record = saved["x2sam_stage2"]
    assert record["model_config"]["image_size"] == 64
    assert record["model_config"]["model"]["stage1_checkpoint"].endswith("last.ckpt")  # "auto" resolved


def test_predict_writes_replies_and_the_predictor_runs(workdir, joint_fit):
    _, checkpoint = joint_fit
    cfg = compose_config(
        "joint_image",
        [f"paths.data_dir={workdir / 'data'}", f"paths.run_dir={workdir / 'out' / 'predict'}", f"ckpt_path={checkpoint}",
         "trainer.limit_predict_batches=1", "model.stage1_checkpoint=null", "model.max_new_tokens=8", *QUIET, *TINY_DATA],
        verb="predict",
    )  # fmt: skip
    cli.run_predict(cfg)
    lines = (workdir / "out" / "predict" / "predictions" / "predictions.rank0.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert {"key", "task", "reply", "objects"} <= set(record)

    predictor = Predictor.from_checkpoint(checkpoint)
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    result = predictor(image, "Please segment <p>the red circle</p> in this image.", max_new_tokens=6)
    assert result.masks.shape[1:] == (48, 80) and result.masks.shape[0] == len(result.scores)
    with_prompt = predictor(
        image, "Can you segment the image based on the following regions: <p><region></p>?",
        prompts=[{"point": [10.5, 20.5]}], max_new_tokens=6,
    )  # fmt: skip
    assert with_prompt.masks.shape[1:] == (48, 80) and with_prompt.masks.shape[0] == len(with_prompt.scores)
    with pytest.raises(ValueError, match="markers"):
        predictor(image, "Segment <p><region></p>.", prompts=[])


def test_stage2_checkpoint_loads_weights_only_and_rebuilds(joint_fit):
    _, checkpoint = joint_fit
    saved = load_checkpoint(checkpoint)
    config = saved["x2sam_stage2"]["model_config"]["model"]
    config["stage1_checkpoint"] = None
    module = instantiate(config)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    missing, unexpected = module.load_state_dict(saved["state_dict"], strict=False)
    assert not unexpected and not trainable & set(missing)  # only frozen base weights stay out
    state = module.state_dict()
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in trainable)


def test_fit_resumes_stage2_without_a_stage1(workdir, joint_fit):
    """A resumed stage-2 fit continues from its checkpoint and needs no stage 1: none is looked for or
    trained, even with ``stage1_checkpoint: auto`` and an output folder that holds no stage-1 run."""
    _, checkpoint = joint_fit
    elsewhere = workdir / "resumed"
    cfg = compose_config(
        "joint_image",
        [f"paths.data_dir={workdir / 'data'}", f"paths.output_dir={elsewhere}", f"paths.run_dir={elsewhere / 'run'}",
         f"ckpt_path={checkpoint}", "trainer.max_steps=4", "trainer.val_check_interval=4",
         "trainer.limit_val_batches=1", "test_after_fit=false", "model.max_new_tokens=4", "logger=none",
         *QUIET, *TINY_DATA],
        verb="fit",
    )  # fmt: skip
    assert cfg.model.stage1_checkpoint == "auto"
    metrics = cli.run_fit(cfg)
    assert cfg.model.stage1_checkpoint is None and not (elsewhere / "agnostic").exists()
    assert any(k.startswith("val/") for k in metrics)
    resumed = load_checkpoint(elsewhere / "run" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 4 and load_checkpoint(checkpoint)["global_step"] == 3
