"""The CLI under DDP: Lightning relaunches the (rewritten) command line for the second process."""

from __future__ import annotations

import json
import subprocess
import sys

from test_experiments import TINY_DATA


def test_fit_runs_in_two_processes(tmp_path):
    args = [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=agnostic",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'runs'}", *TINY_DATA,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "agnostic" / "fit").iterdir()  # both processes share one folder
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "val/ap50" in json.loads((run_dir / "fit_metrics.json").read_text())
    assert result.stdout.count("held-out metrics") == 1
