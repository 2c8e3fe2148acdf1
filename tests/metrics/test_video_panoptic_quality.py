"""VPQ against VIPSeg's eval_vpq_vspw.py (fixtures from reference/make_video_panoptic_quality_fixtures.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import reference_script

from x2sam_lightning.metrics.functional.video_panoptic_quality import video_panoptic_quality
from x2sam_lightning.metrics.video_panoptic_quality import VideoPanopticQuality

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "video_panoptic_quality.json"
DATA = json.loads(FIXTURE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}


def _video(vid: dict) -> tuple:
    return (
        torch.tensor(vid["pred"]),
        torch.tensor(vid["target"]),
        vid["pred_segments"],
        vid["target_segments"],
    )


def _close(got, want) -> None:
    if want is None:
        assert math.isnan(float(got))
    else:
        assert float(got) == pytest.approx(want, abs=1e-6)


def _check(out: dict, expected: dict) -> None:
    for suffix in ("", "_th", "_st"):
        _close(out["vpq" + suffix], expected["vpq" + suffix])
        for k, entry in expected["windows"].items():
            _close(out[f"vpq{suffix}_k{k}"], entry["pq" + suffix])
    for k, entry in expected["windows"].items():
        _close(out[f"sq_k{k}"], entry["sq"])
        _close(out[f"rq_k{k}"], entry["rq"])


@pytest.mark.parametrize("name", list(CASES))
def test_matches_vipseg(name: str) -> None:
    case = CASES[name]
    videos = [_video(v) for v in case["videos"]]
    _check(video_panoptic_quality(videos, DATA["things"], DATA["stuffs"], DATA["windows"]), case["expected"])

    metric = VideoPanopticQuality(DATA["things"], DATA["stuffs"], DATA["windows"])
    for video in videos:
        metric.update(*video)
    _check(metric.compute(), case["expected"])
    categories = DATA["things"] + DATA["stuffs"]
    for i, k in enumerate(DATA["windows"]):
        for j, cat in enumerate(categories):
            stats = case["expected"]["windows"][str(k)]["stats"][str(cat)]
            got = (int(metric.tp[i, j]), int(metric.fp[i, j]), int(metric.fn[i, j]))
            assert got == (stats["tp"], stats["fp"], stats["fn"]), (k, cat)
            assert float(metric.iou_sum[i, j]) == pytest.approx(stats["iou"], abs=1e-9)


def _two_process(rank: int, world_size: int) -> dict:
    metric = VideoPanopticQuality(DATA["things"], DATA["stuffs"], DATA["windows"])
    for vid in CASES["random_set"]["videos"][rank::world_size]:
        metric.update(*_video(vid))
    return {k: float(v) for k, v in metric.compute().items()}


def test_two_processes_match_one() -> None:
    for out in run_distributed(_two_process, world_size=2):
        _check(out, CASES["random_set"]["expected"])


@pytest.mark.reference
def test_fixtures_match_the_official_scorer() -> None:
    """Re-score the stored cases with the VIPSeg-Dataset checkout(s) named by X2SAM_VIPSEG."""
    roots = [os.environ.get(name) for name in ["X2SAM_VIPSEG"]]
    if not all(roots):
        pytest.skip("set X2SAM_VIPSEG to the official checkout(s)")
    make = reference_script("make_video_panoptic_quality_fixtures")
    scorer = make.load_scorer(Path(roots[0]))
    for case in DATA["cases"]:
        assert json.loads(json.dumps(make.score(scorer, case))) == case["expected"], case["name"]
