"""Exact resume through the real command line: SIGKILL a `fit` at a random step in the middle of an epoch,
resume it from its last checkpoint with `ckpt_path=`, and compare with an uninterrupted run: the same
sample keys and the same losses at every step, none repeated, none skipped (CPU, deterministic)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.batch_log import read_log
from test_experiments import TINY_DATA

STEPS = 10
TESTS = Path(__file__).parent


def _args(tmp: Path, name: str, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "x2sam_lightning", "fit", "+experiment=agnostic",
        f"paths.data_dir={tmp / 'data'}", f"paths.run_dir={tmp / name}", "logger=none",
        f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "trainer.deterministic=true", "data.epoch_samples=100",  # 50 batches an epoch: kills fall mid-epoch
        f"data.num_workers={workers}", "data.image_size=64", "data.batch_size=2", "model.criterion.point_grid=32",
        "callbacks.model_checkpoint.monitor=null", "+callbacks.model_checkpoint.every_n_train_steps=1",
        "~callbacks.lr_monitor", "+callbacks.batch_log._target_=helpers.batch_log.BatchLog",
        f"+callbacks.batch_log.path={tmp / name / 'batches'}", *TINY_DATA, *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # three short runs on a shared 2-core machine: no thread oversubscription
    return env


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_at(args: list[str], cwd: Path, log: Path, step: int) -> None:
    """Start the run, SIGKILL it once step ``step`` has started (so the checkpoint of ``step - 1`` is on
    disk and step ``step`` is being computed)."""
    process = subprocess.Popen(
        args, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    marker = f'{{"event": "start", "step": {step}}}'
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and marker in log.read_text():
            process.send_signal(signal.SIGKILL)
            process.wait(60)
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"the run never reached step {step}: {process.communicate()[1][-3000:]}")


def test_sigkill_then_resume_gives_the_uninterrupted_samples_and_losses(tmp_path):
    step = random.Random().randint(2, STEPS - 3)  # a random step, well inside the first epoch
    _run(_args(tmp_path, "full", workers=0), tmp_path)
    full = read_log(tmp_path / "full" / "batches")
    assert [r["step"] for r in full] == list(range(STEPS))
    killed_log = tmp_path / "killed" / "batches.rank0.jsonl"
    _kill_at(_args(tmp_path, "killed", workers=2), tmp_path, killed_log, step)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    _run(_args(tmp_path, "resumed", 2, f"ckpt_path={last}"), tmp_path)
    before = read_log(tmp_path / "killed" / "batches")
    after = read_log(tmp_path / "resumed" / "batches")
    assert [r["step"] for r in before] == list(range(step)), f"killed at step {step}"
    assert [r["step"] for r in after] == list(range(step, STEPS)), f"killed at step {step}"
    for record, expected in zip(before + after, full):
        assert (record["step"], record["source"], record["keys"]) == (
            expected["step"],
            expected["source"],
            expected["keys"],
        ), f"killed at step {step}"
        assert abs(record["loss"] - expected["loss"]) <= 1e-5 * max(1.0, abs(expected["loss"])), (
            f"killed at step {step}: step {record['step']} loss {record['loss']} != {expected['loss']}"
        )


def test_a_one_process_checkpoint_resumes_in_two_processes(tmp_path):
    """Another world size (docs/data.md, "Resume"): a checkpoint written by one process resumes in two
    (trainer=ddp_cpu); the stream continues the sample sequence where the checkpoint left it, nothing
    repeated or skipped, in global batches of the new size (rank 0 then rank 1 at each step), and the
    run says so in a warning."""
    keep = ["callbacks.model_checkpoint.save_top_k=-1"]  # step000004.ckpt stays beside the later ones
    _run(_args(tmp_path, "one", 0, *keep), tmp_path)
    one = read_log(tmp_path / "one" / "batches")
    checkpoint = tmp_path / "one" / "checkpoints" / "step000004.ckpt"
    assert checkpoint.is_file()
    args = _args(tmp_path, "two", 0, "trainer=ddp_cpu", f"ckpt_path={checkpoint}")
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "world_size" in output and "continue each source's sample sequence" in output
    ranks = [read_log(tmp_path / "two" / "batches", rank) for rank in range(2)]
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == list(range(4, STEPS))
    resumed = [key for first, second in zip(*ranks) for key in first["keys"] + second["keys"]]
    # Steps 4.. of the one-process run are the first samples of the resumed two-process steps.
    expected = [key for record in one[4:] for key in record["keys"]]
    assert resumed[: len(expected)] == expected
