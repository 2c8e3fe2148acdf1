"""Mask AP against pycocotools COCOeval ``segm`` (fixtures from reference/make_mask_ap_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import reference_script

from x2sam_lightning.metrics.mask_ap import MaskAP

mask_utils = pytest.importorskip("pycocotools.mask")

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "mask_ap.json"
DATA = json.loads(FIXTURE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}


def _masks(rles: list[dict]) -> torch.Tensor:
    if not rles:
        return torch.zeros(0, DATA["height"], DATA["width"], dtype=torch.bool)
    return torch.from_numpy(np.stack([mask_utils.decode(r) for r in rles]).astype(bool))


def _inputs(images: list[dict]) -> tuple[list[dict], list[dict]]:
    preds = [
        {
            "masks": _masks(img["det"]),
            "scores": torch.tensor(img["det_scores"], dtype=torch.float64),
            "labels": torch.tensor(img["det_labels"], dtype=torch.long),
        }
        for img in images
    ]
    target = [
        {
            "masks": _masks(img["gt"]),
            "labels": torch.tensor(img["gt_labels"], dtype=torch.long),
            "iscrowd": torch.tensor(img["gt_iscrowd"], dtype=torch.long),
        }
        for img in images
    ]
    return preds, target


def _check(out: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert float(out[key]) == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("name", list(CASES))
def test_matches_cocoeval(name: str) -> None:
    case = CASES[name]
    metric = MaskAP(class_agnostic=case.get("class_agnostic", False))
    preds, target = _inputs(case["images"])
    for i in range(0, len(preds), 3):  # several batches
        metric.update(preds[i : i + 3], target[i : i + 3])
    _check(metric.compute(), case["expected"])


def test_other_detection_limits() -> None:
    """AP at maxDets 300 equals AP at 100 when no image has more than 100 detections; AR@k is monotone."""
    preds, target = _inputs(CASES["random_batch"]["images"])
    metric = MaskAP(max_detection_thresholds=(10, 5, 300), class_agnostic=True)
    metric.update(preds, target)
    out = metric.compute()
    assert float(out["map"]) == pytest.approx(CASES["random_batch_agnostic"]["expected"]["map"], abs=1e-6)
    assert float(out["mar_10"]) == pytest.approx(
        CASES["random_batch_agnostic"]["expected"]["mar_10"], abs=1e-6
    )
    assert float(out["mar_5"]) <= float(out["mar_10"]) <= float(out["mar_300"])


def test_matmul_path_equals_byte_count_path() -> None:
    """The accelerator path (0/1 float matmul) gives the same integers as the CPU byte-count path, and
    restricting the CPU path to some pairs leaves the others 0."""
    from x2sam_lightning.metrics.functional.mask_ap import _mask_ap_update, _matmul_counts

    gen = torch.Generator().manual_seed(0)
    preds, target = torch.rand(7, 33, 41, generator=gen) > 0.6, torch.rand(3, 33, 41, generator=gen) > 0.4
    counts = _mask_ap_update(preds, target)
    for a, b in zip(counts, _matmul_counts(preds, target)):
        assert torch.equal(a, b)
    pairs = torch.rand(7, 3, generator=gen) > 0.5
    some = _mask_ap_update(preds, target, pairs)[0]
    assert torch.equal(some, torch.where(pairs, counts[0], 0))


def _two_process(rank: int, world_size: int) -> dict:
    out = {}
    for name in ("random_batch", "random_batch_agnostic"):
        metric = MaskAP(class_agnostic=CASES[name].get("class_agnostic", False))
        preds, target = _inputs(CASES[name]["images"])
        metric.update(preds[rank::world_size], target[rank::world_size])
        out[name] = {k: float(v) for k, v in metric.compute().items()}
    return out


def test_two_processes_match_one() -> None:
    for out in run_distributed(_two_process, world_size=2):
        for name, values in out.items():
            _check(values, CASES[name]["expected"])


def test_fixtures_match_installed_pycocotools() -> None:
    """The stored numbers are what the installed pycocotools COCOeval gives."""
    make = reference_script("make_mask_ap_fixtures")
    for case in DATA["cases"]:
        assert json.loads(json.dumps(make.score(case))) == case["expected"], case["name"]


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_with_ties_match_installed_pycocotools(seed: int) -> None:
    """The vectorised matching and accumulation equal COCOeval's loops, tie-breaks included (equal scores
    within and across images, crowds, class-agnostic, other detection limits)."""
    make = reference_script("make_mask_ap_fixtures")
    rng = np.random.default_rng(100 + seed)
    images = [
        make.random_image(rng, int(rng.integers(0, 8)), int(rng.integers(1, 20)), crowd=0.2) for _ in range(5)
    ]
    for img in images:
        img["det_scores"] = (np.round(np.array(img["det_scores"]) * 3) / 3).tolist()  # many equal scores
    case = {"images": images, "class_agnostic": seed % 2 == 1}
    expected = make.score(case)
    metric = MaskAP(class_agnostic=case["class_agnostic"])
    preds, target = _inputs(images)
    metric.update(preds, target)
    out = metric.compute()
    assert out["map"].dtype == torch.float64
    _check(out, expected)
