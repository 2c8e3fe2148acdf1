"""`model/mask_memory=default` through the command line: stage 1 trains on synthetic videos and validates."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from test_experiments import TINY_DATA as EXPERIMENT_DATA

TINY_DATA = [*EXPERIMENT_DATA, "data.synthetic.num_test_videos=2"]


def test_fit_with_the_mask_memory_on_synthetic_videos(tmp_path):
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=agnostic", "model/mask_memory=default",
        # Train on the videos only (clips of 4 frames, decoded frame by frame through the memory); validate
        # on the held-out images (stage 1 scores class-agnostic image AP; an image is T=1 through the memory).
        "data=synthetic", "~data.train_sources.synthetic_img", "~data.val_sources.synthetic_vid_val",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'runs'}",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", *TINY_DATA,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training mix: {'synthetic_vid': 1.0}" in result.stderr + result.stdout
    (run,) = (tmp_path / "runs" / "agnostic" / "fit").iterdir()
    metrics = json.loads((run / "fit_metrics.json").read_text())
    assert 0.0 <= metrics["val/ap50"] <= 1.0 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    # The attention's zero-initialised output moved: frames read a non-empty bank, so the clips were
    # decoded through the memory and its loss gradients reached it.
    out_proj = [
        v
        for k, v in state.items()
        if k.startswith("segmentor.mask_memory.attention.") and "out_proj.weight" in k
    ]
    assert out_proj and all(v.abs().sum() > 0 for v in out_proj)
    assert state["segmentor.mask_memory.no_memory"].abs().sum() > 0
