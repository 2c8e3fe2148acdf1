"""mVC8 / mVC16 against VSPW's VC_perclip.py (fixtures from reference/make_video_consistency_fixtures.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers.distributed import run_distributed
from helpers.reference import reference_script

from x2sam_lightning.metrics.functional.video_consistency import video_consistency
from x2sam_lightning.metrics.video_consistency import VideoConsistency

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "video_consistency.json"
DATA = json.loads(FIXTURE.read_text())
CASES = {case["name"]: case for case in DATA["cases"]}


def _videos(case: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(v["pred"]), torch.tensor(v["target"])) for v in case["videos"]]


def _check(out: dict, expected: dict) -> None:
    for key, want in expected.items():
        if want is None:
            assert math.isnan(float(out[key])), key
        else:
            assert float(out[key]) == pytest.approx(want, abs=1e-6), key


@pytest.mark.parametrize("name", list(CASES))
def test_matches_vspw(name: str) -> None:
    case = CASES[name]
    _check(video_consistency(_videos(case), DATA["windows"]), case["expected"])
    metric = VideoConsistency(DATA["windows"])
    for preds, target in _videos(case):
        metric.update(preds, target)
    _check(metric.compute(), case["expected"])


def _two_process(rank: int, world_size: int) -> dict:
    metric = VideoConsistency(DATA["windows"])
    for preds, target in _videos(CASES["random_set"])[rank::world_size]:
        metric.update(preds, target)
    return {k: float(v) for k, v in metric.compute().items()}


def test_two_processes_match_one() -> None:
    for out in run_distributed(_two_process, world_size=2):
        _check(out, CASES["random_set"]["expected"])


@pytest.mark.reference
def test_fixtures_match_the_official_scorer() -> None:
    """Re-score the stored cases with the VSPW_code checkout(s) named by X2SAM_VSPW_CODE."""
    roots = [os.environ.get(name) for name in ["X2SAM_VSPW_CODE"]]
    if not all(roots):
        pytest.skip("set X2SAM_VSPW_CODE to the official checkout(s)")
    make = reference_script("make_video_consistency_fixtures")
    get_common = make.load_get_common(Path(roots[0]))
    for case in DATA["cases"]:
        assert json.loads(json.dumps(make.score(get_common, case))) == case["expected"], case["name"]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_packed_and_run_length_paths_agree(dtype: torch.dtype) -> None:
    """The CPU path (bit-packed change maps) equals the accelerator path (per-pixel run lengths)."""
    from x2sam_lightning.metrics.functional.video_consistency import _packed_windows, _run_length_windows

    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (21, 9, 70), generator=gen).to(dtype)
    target[:, :4] = 1  # a band that stays consistent
    preds = torch.where(torch.rand(target.shape, generator=gen) < 0.05, 2, target).to(dtype)
    ks = [1, 2, 8, 16, 21]
    packed = _packed_windows(preds.numpy(), target.numpy(), ks)
    runs = _run_length_windows(preds, target, ks)
    assert torch.allclose(packed[0], runs[0], atol=1e-12) and torch.equal(packed[1], runs[1])
