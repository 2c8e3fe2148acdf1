"""InteractiveIoU against X-SAM's ImgIntSegEvaluator (fixture: reference/make_interactive_fixtures.py)."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import assert_reference_reproduces

from x2sam_lightning.metrics.functional.interactive import interactive_iou
from x2sam_lightning.metrics.interactive import InteractiveIoU

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "interactive_xsam.json"


def _unpack(obj: dict) -> torch.Tensor:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).reshape(obj["shape"]).copy())


def _load() -> tuple[dict, torch.Tensor, torch.Tensor]:
    data = json.loads(FIXTURE.read_text())
    return data, _unpack(data["preds"]), _unpack(data["gts"])


def _check(result: dict, expected: dict) -> None:
    for key in ("mIoU", "cIoU"):  # X-SAM prints percent
        assert 100 * result[key].item() == pytest.approx(expected[key], abs=1e-4), key


def test_matches_xsam_per_slice_and_batched():
    data, preds, gts = _load()
    for name, (lo, hi) in data["slices"].items():
        _check(interactive_iou(preds[lo:hi], gts[lo:hi]), data["results"][name])
    metric = InteractiveIoU()
    for lo in range(0, len(preds), 4):
        metric.update(preds[lo : lo + 4], gts[lo : lo + 4])
    _check(metric.compute(), data["results"]["all"])


def test_ignore_pixels_left_out():
    pred = torch.tensor([[[1, 1, 0, 0]]])
    gt = torch.tensor([[[1, 255, 255, 0]]])
    out = interactive_iou(pred, gt)
    assert out["mIoU"].item() == 1.0 and out["cIoU"].item() == 1.0


def _distributed_fn(rank: int, world_size: int) -> dict:
    _, preds, gts = _load()
    metric = InteractiveIoU()
    metric.update(preds[rank::world_size], gts[rank::world_size])
    return {k: v.item() for k, v in metric.compute().items()}


def test_two_processes_match_one():
    data, _, _ = _load()
    results = run_distributed(_distributed_fn, world_size=2)
    assert results[0] == results[1]
    for key in ("mIoU", "cIoU"):
        assert 100 * results[0][key] == pytest.approx(data["results"]["all"][key], abs=1e-4)


@pytest.mark.reference
def test_fixtures_are_what_the_official_scorers_give(tmp_path, monkeypatch):
    """Re-run X-SAM's ImgIntSegEvaluator (XSAM_ROOT) and compare with the stored fixtures."""
    assert_reference_reproduces(
        "make_interactive_fixtures", ["interactive_xsam.json"], ["XSAM_ROOT"], tmp_path, monkeypatch
    )
