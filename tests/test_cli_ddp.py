"""The CLI under DDP: Lightning relaunches the (rewritten) command line for the second process; the two
ranks draw the same source at every step and disjoint samples (docs/data.md, "Many processes")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.batch_log import read_log
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
