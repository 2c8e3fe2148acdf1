"""mIoU against the VSPW and detectron2 scorers (fixtures from reference/make_mean_iou_fixtures.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import reference_script

from x2sam_lightning.metrics.functional.mean_iou import mean_iou
from x2sam_lightning.metrics.mean_iou import MeanIoU

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "mean_iou.json"
DATA = json.loads(FIXTURE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}
C, IGNORE = DATA["num_classes"], DATA["ignore_index"]


def _check(out: dict, expected: dict) -> None:
    for key in ("miou", "pacc", "macc", "fwiou"):
        assert float(out[key]) == pytest.approx(expected[key], abs=1e-6), key
    for got, want in zip(torch.as_tensor(out["iou_per_class"]).tolist(), expected["iou_per_class"]):
        assert math.isnan(got) if want is None else got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name: str) -> None:
    case = CASES[name]
    preds, target = torch.tensor(case["preds"]), torch.tensor(case["target"])
    _check(mean_iou(preds, target, C, IGNORE), case["expected"])
    metric = MeanIoU(C, ignore_index=IGNORE)
    for p, t in zip(preds, target):  # one frame per update
        metric.update(p, t)
    _check(metric.compute(), case["expected"])


def test_rejects_out_of_range_predictions() -> None:
    with pytest.raises(ValueError, match="predicted classes"):
        mean_iou(torch.tensor([C]), torch.tensor([0]), C)


def _two_process(rank: int, world_size: int) -> dict:
    case = CASES["random_batch"]
    metric = MeanIoU(C, ignore_index=IGNORE)
    metric.update(
        torch.tensor(case["preds"])[rank::world_size], torch.tensor(case["target"])[rank::world_size]
    )
    return {k: v.tolist() for k, v in metric.compute().items()}


def test_two_processes_match_one() -> None:
    for out in run_distributed(_two_process, world_size=2):
        _check(out, CASES["random_batch"]["expected"])


@pytest.mark.reference
def test_fixtures_match_the_official_scorer() -> None:
    """Re-score the stored cases with the VSPW_code and detectron2 checkout(s) named by X2SAM_VSPW_CODE, X2SAM_DETECTRON2."""
    roots = [os.environ.get(name) for name in ["X2SAM_VSPW_CODE", "X2SAM_DETECTRON2"]]
    if not all(roots):
        pytest.skip("set X2SAM_VSPW_CODE and X2SAM_DETECTRON2 to the official checkout(s)")
    make = reference_script("make_mean_iou_fixtures")
    vspw, d2 = make.load_vspw_evaluator(Path(roots[0])), make.load_detectron2_evaluator(Path(roots[1]))
    for case in DATA["cases"]:
        assert json.loads(json.dumps(make.score(vspw, d2, case))) == case["expected"], case["name"]


@pytest.mark.parametrize(
    "dtypes", [(torch.uint8, torch.uint8), (torch.int64, torch.int64), (torch.uint8, torch.long)]
)
def test_runs_path_equals_per_pixel_histogram(dtypes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting runs of equal (gt, pred) pairs gives the per-pixel confusion matrix exactly, also across
    frames, chunks and dtypes; short runs (noise) take the per-pixel histogram."""
    from x2sam_lightning.metrics.functional import mean_iou as functional

    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, C + 1, (3, 4, 5), generator=gen)
    target = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, :50, :70].to(dtypes[0])
    target[:, 10:12] = IGNORE
    noise = torch.rand(target.shape, generator=gen) < 0.005
    preds = torch.where(noise, 1, target.clamp(max=C - 1)).to(dtypes[1])
    dense = torch.bincount(
        functional._codes(preds.reshape(-1), target.reshape(-1), C, IGNORE), minlength=C * C
    )
    expected = dense[: C * C].view(C, C)
    monkeypatch.setattr(functional, "_CHUNK", 1000)  # several chunks, and a fresh scratch size
    monkeypatch.setattr(functional, "_SCRATCH", __import__("threading").local())
    assert functional._runs(preds.reshape(-1).numpy(), target.reshape(-1).numpy()) is not None
    assert torch.equal(functional._mean_iou_update(preds, target, C, IGNORE), expected)
    noise = torch.randint(0, C, target.shape, generator=gen).to(dtypes[1])
    assert functional._runs(noise.reshape(-1).numpy(), target.reshape(-1).numpy()) is None
    for ignore in (IGNORE, 0, None):  # the per-pixel fallback, with the ignored label inside [0, C) too
        t, p = target.reshape(-1).long(), noise.reshape(-1).long()
        keep = (t < C) & (t != ignore) if ignore is not None else t < C
        want = torch.zeros(C, C, dtype=torch.long)  # rows: ground truth, columns: prediction
        want.index_put_((t[keep], p[keep]), torch.ones(int(keep.sum()), dtype=torch.long), accumulate=True)
        assert torch.equal(functional._mean_iou_update(noise, target, C, ignore), want)
