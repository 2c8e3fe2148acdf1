"""J / F / J&F against the official scorers (fixtures from tests/metrics/reference/make_jf_fixtures.py).

DAVIS-2017 semi-supervised protocol: ``davis2017-evaluation`` ``DAVISEvaluation.evaluate``;
referring-VOS protocol: MeViS ``tools/eval_mevis.py``.
"""

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

from x2sam_lightning.metrics.davis_jf import DAVISJandF
from x2sam_lightning.metrics.functional.region_boundary import (
    _disk_half_widths,
    davis_jf,
    masks_from_label_map,
    region_boundary_per_frame,
    seg2bmap,
)
from x2sam_lightning.metrics.referring_vos_jf import ReferringVOSJandF

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
# boundary F to 1e-4 is the contract; the implementation is exact, so both are checked tightly
TOL_J, TOL_F = 1e-6, 1e-4


def _unpack(obj: dict) -> torch.Tensor:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).reshape(obj["shape"]).copy())


def _davis_videos() -> tuple[dict, list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]]:
    data = json.loads((FIXTURES / "jf_davis.json").read_text())
    videos = []
    for case in data["cases"]:
        gt, pred = _unpack(case["gt"]), _unpack(case["pred"])
        n = int(gt[0].max())  # DAVIS: the objects are the ids of the first annotated frame
        videos.append(
            (
                case["name"],
                masks_from_label_map(pred, n),
                masks_from_label_map(gt, n),
                torch.tensor(case["unseen"]),
            )
        )
    return data, videos


def _referring_batches() -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor]]]:
    data = json.loads((FIXTURES / "jf_referring.json").read_text())
    batches = []
    for vid in data["videos"]:
        objects, preds = _unpack(vid["objects"]).bool(), _unpack(vid["preds"]).bool()
        target = torch.stack([objects[[o - 1 for o in ids]].any(0) for ids in vid["expressions"]])
        batches.append((preds, target))
    return data, batches


def _check(result: dict, expected: dict) -> None:
    for key, value in expected.items():
        tol = TOL_F if key.startswith("F") or "&" in key or key == "Overall" else TOL_J
        assert result[key].item() == pytest.approx(value, abs=tol, nan_ok=True), key


def test_davis_per_video_and_all():
    data, videos = _davis_videos()
    metric = DAVISJandF()
    for name, pred, gt, unseen in videos:
        one = DAVISJandF()
        one.update(pred, gt)
        _check(one.compute(), {k: v for k, v in data["per_video"][name].items() if "seen" not in k})
        if name not in data["all_excludes"]:
            metric.update(pred, gt, unseen=unseen)
    result = metric.compute()
    _check(result, data["all"])
    expected = data["all"]
    overall = (
        expected["J-Mean-seen"]
        + expected["F-Mean-seen"]
        + expected["J-Mean-unseen"]
        + expected["F-Mean-unseen"]
    ) / 4
    assert result["Overall"].item() == pytest.approx(overall, abs=TOL_F)


def test_referring_matches_mevis():
    data, batches = _referring_batches()
    metric = ReferringVOSJandF()
    for preds, target in batches:
        metric.update(preds, target)
    _check(metric.compute(), {key: data[key] for key in ("J", "F", "J&F")})
    # per expression: the scorer keys them "<video>_<expression index>"
    for vid, (preds, target) in zip(data["videos"], batches):
        for e, (p, t) in enumerate(zip(preds, target)):
            j, f = region_boundary_per_frame(p, t)
            ej, ef = data["per_expression"][f"{vid['name']}_{e}"]
            assert j.mean().item() == pytest.approx(ej, abs=TOL_J)
            assert f.mean().item() == pytest.approx(ef, abs=TOL_F)


def test_missing_objects_zero_padded_and_functional():
    _, videos = _davis_videos()
    _, pred, gt, _ = videos[1]  # "missing_object": object 1 has no prediction
    padded = davis_jf(pred, gt)
    fewer = davis_jf(pred[:1], gt)  # only object 1's (empty) prediction given: object 2 padded
    assert padded["J-Mean"].item() != fewer["J-Mean"].item()
    assert davis_jf(torch.zeros_like(gt[:1]), gt[:1])["J-Mean"].item() == pytest.approx(
        davis_jf(pred[:0], gt[:1])["J-Mean"].item()
    )
    with pytest.raises(ValueError):
        davis_jf(torch.cat([pred, pred[:1]]), gt)


def test_edge_cases_without_scorer():
    empty = torch.zeros(3, 10, 12, dtype=torch.bool)
    j, f = region_boundary_per_frame(empty, empty)
    assert j.tolist() == [1.0] * 3 and f.tolist() == [1.0] * 3
    full = torch.ones(3, 10, 12, dtype=torch.bool)
    j, f = region_boundary_per_frame(empty, full)
    # a full frame has no boundary under _seg2bmap's border rule, so F is 1 like the official f_measure
    assert j.tolist() == [0.0] * 3 and f.tolist() == [1.0] * 3
    # _seg2bmap: a full mask has no boundary (border rule); a corner pixel's boundary lies up-left of it
    assert not seg2bmap(full[0]).any()
    corner = torch.zeros(5, 5, dtype=torch.bool)
    corner[-1, -1] = True
    assert seg2bmap(corner).nonzero().tolist() == [[3, 3], [3, 4], [4, 3]]
    # skimage.morphology.disk(8) row widths
    assert (2 * _disk_half_widths(8) + 1).tolist() == [
        1,
        7,
        11,
        13,
        13,
        15,
        15,
        15,
        17,
        15,
        15,
        15,
        13,
        13,
        11,
        7,
        1,
    ]


def _distributed_fn(rank: int, world_size: int) -> dict:
    _, videos = _davis_videos()
    davis = DAVISJandF()
    for i, (name, pred, gt, unseen) in enumerate(videos):
        if i % world_size == rank and name != "long_video":
            davis.update(pred, gt, unseen=unseen)
    _, batches = _referring_batches()
    ref = ReferringVOSJandF()
    for i, (preds, target) in enumerate(batches):
        if i % world_size == rank:
            ref.update(preds, target)
    return {
        **{k: v.item() for k, v in davis.compute().items()},
        **{f"ref_{k}": v.item() for k, v in ref.compute().items()},
    }


def test_two_processes_match_one():
    data, _ = _davis_videos()
    ref, _ = _referring_batches()
    results = run_distributed(_distributed_fn, world_size=2)
    assert results[0] == results[1]
    for key, value in data["all"].items():
        assert results[0][key] == pytest.approx(value, abs=TOL_F)
    for key in ("J", "F", "J&F"):
        assert results[0][f"ref_{key}"] == pytest.approx(ref[key], abs=TOL_F)


@pytest.mark.reference
def test_fixtures_are_what_the_official_scorers_give(tmp_path, monkeypatch):
    """Re-run the DAVIS-2017 evaluation and MeViS scorers (DAVIS_EVAL_ROOT, MEVIS_ROOT) and compare with the stored fixtures."""
    assert_reference_reproduces(
        "make_jf_fixtures",
        ["jf_davis.json", "jf_referring.json"],
        ["DAVIS_EVAL_ROOT", "MEVIS_ROOT"],
        tmp_path,
        monkeypatch,
    )


@pytest.mark.parametrize("radius", [1, 8, 31, 40])
def test_packed_boundary_and_dilation_equal_dense_ones(radius: int) -> None:
    """The packed-row boundary map equals ``seg2bmap``; the packed disk dilation equals a dense one
    (scipy, ``disk(radius)`` footprint) also where the disk crosses word and row margins."""
    from scipy.ndimage import binary_dilation

    from x2sam_lightning.metrics.functional import region_boundary as rb

    rng = np.random.default_rng(radius)
    masks = rng.random((3, 23, 150)) < 0.01
    masks[1, 5:15, 30:140] = True
    margin = -(-(2 * radius + 1) // 64)
    packed = rb._pack_rows(masks, margin)

    def unpack(words: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
        return bits[..., 64 * margin : 64 * margin + masks.shape[-1]].astype(bool)

    assert (unpack(packed) == masks).all()
    bmap = rb._packed_boundary(packed, 64 * margin, masks.shape[-1])
    assert (unpack(bmap) == seg2bmap(torch.from_numpy(masks)).numpy()).all()
    half = _disk_half_widths(radius).numpy()
    disk = np.abs(np.arange(-radius, radius + 1))[None, :] <= half[:, None]
    dense = np.stack([binary_dilation(m, structure=disk) for m in masks])
    assert (unpack(rb._dilate(packed, half)) == dense).all()
