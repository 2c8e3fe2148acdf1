"""ReferringIoU against LISA's validate() (fixture from tests/metrics/reference/make_referring_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed

from x2sam_lightning.metrics.functional.referring import referring_iou
from x2sam_lightning.metrics.referring import ReferringIoU

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "referring_lisa.json"


def _decode(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[255 if c == "x" else int(c) for c in row] for row in rows])


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = json.loads(FIXTURE.read_text())
    return [
        (torch.stack([_decode(m) for m in b["pred"]]), torch.stack([_decode(m) for m in b["gt"]]))
        for b in data["batches"]
    ]


def test_matches_lisa_aggregated_and_per_batch():
    data = json.loads(FIXTURE.read_text())
    metric = ReferringIoU()
    for (pred, gt), expected in zip(_batches(), data["per_batch"]):
        metric.update(pred, gt)
        one = referring_iou(pred, gt)
        # LISA's all-reduce holds its sums in float32
        assert one["giou"].item() == pytest.approx(expected["giou"], abs=1e-6)
        assert one["ciou"].item() == pytest.approx(expected["ciou"], abs=1e-6)
    result = metric.compute()
    assert result["giou"].item() == pytest.approx(data["all"]["giou"], abs=1e-6)
    assert result["ciou"].item() == pytest.approx(data["all"]["ciou"], abs=1e-6)


def test_input_kinds_give_the_same_numbers():
    pred, gt = _batches()[-1]
    as_bool = referring_iou(pred.bool(), gt)
    as_logits = referring_iou(torch.where(pred.bool(), 2.5, -1.0), gt)
    assert as_bool == as_logits


def test_exact_and_edge_cases():
    empty = torch.zeros(1, 3, 3, dtype=torch.bool)
    one = empty.clone()
    one[0, 1, 1] = True
    assert referring_iou(empty, empty, exact=True)["giou"] == 1.0
    assert referring_iou(one, one, exact=True) == {"ciou": 1.0, "giou": 1.0}
    assert referring_iou(empty, one, exact=True)["giou"] == 0.0
    metric = ReferringIoU()
    assert torch.isnan(metric.compute()["giou"])
    with pytest.raises(ValueError, match="same shape"):
        metric.update(empty, torch.zeros(1, 3, 4))


def test_video_masks_are_flattened():
    pred = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    pred[0, :, :2] = True
    gt = pred.clone()
    gt[0, 0] = True
    out = referring_iou(pred, gt.long(), exact=True)
    assert out["ciou"].item() == pytest.approx(24 / 32)


def _two_process(rank: int, world_size: int, batches):
    metric = ReferringIoU()
    for pred, gt in batches[rank::world_size]:
        metric.update(pred, gt)
    return {k: v.item() for k, v in metric.compute().items()}


def test_two_processes_match_one():
    batches = _batches()
    single = ReferringIoU()
    for pred, gt in batches:
        single.update(pred, gt)
    expected = {k: v.item() for k, v in single.compute().items()}
    for result in run_distributed(_two_process, batches):
        assert result == pytest.approx(expected, abs=1e-12)


@pytest.mark.reference
def test_fixtures_are_what_the_official_scorers_give(tmp_path, monkeypatch):
    """Re-run LISA and ReLA (checkouts in LISA_ROOT / RELA_ROOT) and compare with the stored fixtures."""
    import os
    import sys

    if not os.environ.get("LISA_ROOT") or not os.environ.get("RELA_ROOT"):
        pytest.skip("set LISA_ROOT and RELA_ROOT to official checkouts")
    sys.path.insert(0, str(Path(__file__).parent / "reference"))
    import make_referring_fixtures as ref

    monkeypatch.setattr(ref, "FIXTURES", tmp_path)
    monkeypatch.setattr(sys, "argv", ["make_referring_fixtures.py"])
    ref.main()
    for name in ("referring_lisa.json", "grefcoco_rela.json"):
        stored = json.loads((FIXTURE.parent / name).read_text())
        assert json.loads((tmp_path / name).read_text()) == stored
