"""GRefCOCOIoU against ReLA's ReferEvaluator (fixture from tests/metrics/reference/make_referring_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed

from x2sam_lightning.metrics.functional.referring import grefcoco_iou
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "grefcoco_rela.json"
# ReLA prints gIoU, cIoU and Pr@X in percent, T_acc / N_acc as fractions
KEYS = {"gIoU": ("giou", 100), "cIoU": ("ciou", 100), "T_acc": ("t_acc", 1), "N_acc": ("n_acc", 1)}
KEYS.update({f"Pr@{t}": (f"pr@{t}", 100) for t in ("0.7", "0.8", "0.9")})


def _decode(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[int(c) for c in row] for row in rows])


def _samples(rule: str | None = None):
    data = json.loads(FIXTURE.read_text())
    return [s for s in data["samples"] if rule is None or s["nt_rule"] == rule]


def _tensors(samples):
    pred = torch.stack([_decode(s["pred"]) for s in samples])
    gt = torch.stack([_decode(s["gt"]) for s in samples])
    pred_nt = torch.tensor([s["pred_nt"] for s in samples])
    gt_nt = torch.tensor([s["gt_nt"] for s in samples])
    return pred, gt, pred_nt, gt_nt


def _check(result: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    for rela_key, (key, scale) in KEYS.items():
        assert result[key].item() * scale == pytest.approx(expected[rela_key], abs=1e-6 * scale), rela_key


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_matches_rela_with_the_empty_mask_rule(batch_size):
    expected = json.loads(FIXTURE.read_text())["results"]["mask_rule"]["grefcoco"]
    pred, gt, _, _ = _tensors(_samples("mask"))
    metric = GRefCOCOIoU()
    for i in range(0, len(pred), batch_size):
        metric.update(pred[i : i + batch_size], gt[i : i + batch_size])
    _check(metric.compute(), expected)


def test_matches_rela_with_explicit_no_target_decisions():
    expected = json.loads(FIXTURE.read_text())["results"]["explicit"]["grefcoco"]
    _check(grefcoco_iou(*_tensors(_samples())), expected)


def test_matches_rela_without_no_target_samples():
    expected = json.loads(FIXTURE.read_text())["results"]["refcoco_only"]["refcoco"]
    samples = [s for s in _samples("mask") if not s["gt_nt"]]
    _check(grefcoco_iou(*_tensors(samples)), expected)


def _two_process(rank: int, world_size: int, tensors):
    metric = GRefCOCOIoU()
    pred, gt, pred_nt, gt_nt = (t[rank::world_size] for t in tensors)
    metric.update(pred, gt, pred_nt, gt_nt)
    return {k: v.item() for k, v in metric.compute().items()}


def test_two_processes_match_one():
    tensors = _tensors(_samples())
    expected = {k: v.item() for k, v in grefcoco_iou(*tensors).items()}
    for result in run_distributed(_two_process, tensors):
        assert result == pytest.approx(expected, abs=1e-12)
