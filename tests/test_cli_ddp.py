"""The CLI under DDP: Lightning relaunches the (rewritten) command line for the second process; the two
ranks draw the same source at every step and disjoint samples (docs/data.md, "Many processes")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.batch_log import read_log
from helpers.parameter_digest import read_digest
from test_experiments import TINY_DATA


def test_fit_runs_in_two_processes(tmp_path):
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=agnostic",
        "trainer=ddp_cpu",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "data.batch_size=4",  # 2 steps x 2 ranks x 4 = 16 of the 24 images: within one pass over them
        "data.image_batch_multiplier=1",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'runs'}", *TINY_DATA,
        "+callbacks.batch_log._target_=helpers.batch_log.BatchLog", f"+callbacks.batch_log.path={tmp_path / 'b'}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "agnostic" / "fit").iterdir()  # both processes share one folder
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "val/ap50" in json.loads((run_dir / "fit_metrics.json").read_text())
    assert result.stdout.count("held-out metrics") == 1
    ranks = [read_log(tmp_path / "b", rank) for rank in range(2)]
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [0, 1]
    for first, second in zip(*ranks):
        assert first["source"] == second["source"]
        assert len(first["keys"]) == len(second["keys"]) == 4 and not set(first["keys"]) & set(second["keys"])


JOINT_DATA = [
    "data.synthetic.num_train_images=8", "data.synthetic.num_val_images=2", "data.synthetic.num_test_images=2",
    "data.synthetic.num_train_videos=1", "data.synthetic.num_val_videos=1", "data.synthetic.num_test_videos=1",
    "data.synthetic.num_train_task_images=8", "data.synthetic.num_val_task_images=2",
    "data.synthetic.num_test_task_images=2", "data.synthetic.images_per_shard=8", "data.synthetic.frames=4",
    "data.image_size=64", "data.batch_size=2", "data.image_batch_multiplier=1",
]  # fmt: skip


@pytest.mark.slow  # ~70 s on a 2-core machine (two processes each building the tiny stage-2 model)
def test_joint_fit_with_chat_only_batches_keeps_the_ranks_in_step(tmp_path):
    """Stage 2 under 2-process DDP on a mix of referring segmentation and chat: a chat batch has no <SEG>,
    so the mask decoder and the projector to it get no gradient on any rank. The preset's
    ``find_unused_parameters`` lets DDP finish that step; every other step all-reduces them. The ranks
    end with the same weights (every step's gradient was synchronised, none was left out)."""
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=joint_image", "trainer=ddp_cpu",
        "model.stage1_checkpoint=null", "test_after_fit=false", "model.max_new_tokens=4",
        "trainer.max_steps=5", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none", "~callbacks.lr_monitor",
        # Two sources: referring segmentation and chat (a chat-only batch at some steps).
        *[f"data.train_sources.{name}=null" for name in (
            "synthetic_img", "synthetic_img_reaseg", "synthetic_img_gcgseg", "synthetic_img_intseg",
            "synthetic_img_vgdseg")],
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'runs'}", *JOINT_DATA,
        "+callbacks.batch_log._target_=helpers.batch_log.BatchLog", f"+callbacks.batch_log.path={tmp_path / 'b'}",
        "+callbacks.digest._target_=helpers.parameter_digest.ParameterDigest",
        f"+callbacks.digest.path={tmp_path / 'p'}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [read_log(tmp_path / "b", rank) for rank in range(2)]
    sources = [r["source"] for r in ranks[0]]
    assert sources == [r["source"] for r in ranks[1]]
    assert "synthetic_img_chat" in sources and "synthetic_img_refseg" in sources, sources
    first, second = (read_digest(tmp_path / "p", rank) for rank in range(2))
    assert first.keys() == second.keys() and any("mask_decoder" in name for name in first)
    for name, values in first.items():
        assert values == pytest.approx(second[name], rel=1e-6, abs=1e-7), name
