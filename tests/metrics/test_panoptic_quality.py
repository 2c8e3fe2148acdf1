"""PQ / SQ / RQ against panopticapi's numbers (fixtures from reference/make_panoptic_quality_fixtures.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import reference_script

from x2sam_lightning.metrics.functional.panoptic_quality import panoptic_quality
from x2sam_lightning.metrics.panoptic_quality import PanopticQuality

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "panoptic_quality.json"
DATA = json.loads(FIXTURE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}
KEYS = [a + b for b in ("", "_th", "_st") for a in ("pq", "sq", "rq")]


def _inputs(images: list[dict]) -> tuple:
    preds = torch.tensor([img["pred"] for img in images])
    target = torch.tensor([img["target"] for img in images])
    return preds, target, [img["pred_segments"] for img in images], [img["target_segments"] for img in images]


def _check(out: dict, expected: dict, categories: list[int]) -> None:
    for key in KEYS:
        if expected[key] is None:
            assert math.isnan(float(out[key])), key
        else:
            assert float(out[key]) == pytest.approx(expected[key], abs=1e-6), key
    for i, cat in enumerate(categories):
        for key in ("pq", "sq", "rq"):
            assert float(torch.as_tensor(out[f"{key}_per_class"])[i]) == pytest.approx(
                expected["per_class"][str(cat)][key], abs=1e-6
            )


@pytest.mark.parametrize("name", list(CASES))
def test_matches_panopticapi(name: str) -> None:
    case = CASES[name]
    categories = DATA["things"] + DATA["stuffs"]
    _check(
        panoptic_quality(*_inputs(case["images"]), DATA["things"], DATA["stuffs"]),
        case["expected"],
        categories,
    )

    metric = PanopticQuality(DATA["things"], DATA["stuffs"])
    for img in case["images"]:  # one image per update, [H, W] form
        metric.update(
            torch.tensor(img["pred"]),
            torch.tensor(img["target"]),
            img["pred_segments"],
            img["target_segments"],
        )
    _check(metric.compute(), case["expected"], categories)
    for i, cat in enumerate(categories):
        stats = case["expected"]["stats"][str(cat)]
        assert (
            int(metric.tp[i]) == stats["tp"]
            and int(metric.fp[i]) == stats["fp"]
            and int(metric.fn[i]) == stats["fn"]
        )
        assert float(metric.iou_sum[i]) == pytest.approx(stats["iou"], abs=1e-9)


def test_large_ids() -> None:
    """COCO's RGB-encoded ids (beyond the dense look-up range) give the same numbers."""
    case = CASES["random_batch"]
    preds, target, pred_segs, target_segs = _inputs(case["images"])

    def big(ids):
        return torch.where(ids == 0, 0, ids * 65_537 + 5_000_000)

    def big_segs(per_image):
        return [[dict(s, id=int(big(torch.tensor(s["id"])))) for s in segs] for segs in per_image]

    out = panoptic_quality(
        big(preds), big(target), big_segs(pred_segs), big_segs(target_segs), DATA["things"], DATA["stuffs"]
    )
    _check(out, case["expected"], DATA["things"] + DATA["stuffs"])


def test_rejects_unlisted_prediction_ids() -> None:
    metric = PanopticQuality([1], [2])
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="missing from pred_segments"):
        metric.update(
            ids,
            ids,
            [{"id": 1, "category_id": 1}],
            [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
        )


def _two_process(rank: int, world_size: int) -> dict:
    metric = PanopticQuality(DATA["things"], DATA["stuffs"])
    images = CASES["random_batch"]["images"]
    metric.update(*_inputs(images[rank::world_size]))
    return {k: v.tolist() for k, v in metric.compute().items()}  # plain values: tensors need shared memory


def test_two_processes_match_one() -> None:
    expected = CASES["random_batch"]["expected"]
    categories = DATA["things"] + DATA["stuffs"]
    for out in run_distributed(_two_process, world_size=2):
        _check(out, expected, categories)


@pytest.mark.reference
def test_fixtures_match_the_official_scorer() -> None:
    """Re-score the stored cases with the panopticapi checkout(s) named by X2SAM_PANOPTICAPI."""
    roots = [os.environ.get(name) for name in ["X2SAM_PANOPTICAPI"]]
    if not all(roots):
        pytest.skip("set X2SAM_PANOPTICAPI to the official checkout(s)")
    make = reference_script("make_panoptic_quality_fixtures")
    for case in DATA["cases"]:
        assert json.loads(json.dumps(make.score(Path(roots[0]), case))) == case["expected"], case["name"]
