"""YouTube-VIS video AP and V-VGD AP against ``youtubevos/cocoapi`` ``ytvoseval.py::YTVOSeval``.

Fixtures from tests/metrics/reference/make_video_ap_fixtures.py.
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

from x2sam_lightning.metrics.functional.video_ap import AP_KEYS, track_iou
from x2sam_lightning.metrics.vgd_ap import VideoVGDAveragePrecision
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"


def _unpack(obj: dict) -> torch.Tensor:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).reshape(obj["shape"]).copy()).bool()


def _ytvis_inputs() -> tuple[dict, list[dict]]:
    data = json.loads((FIXTURES / "video_ap_ytvis.json").read_text())
    inputs = []
    for vid_id, v in enumerate(data["videos"], start=1):
        inputs.append(
            {
                "pred_masks": _unpack(v["pred"]),
                "pred_scores": torch.tensor(v["scores"]),
                "pred_labels": torch.tensor(v["labels"]),
                "gt_masks": _unpack(v["gt"]),
                "gt_labels": torch.tensor(v["gt_labels"]),
                "gt_iscrowd": torch.tensor(v["iscrowd"]).bool(),
                "video_id": vid_id,
            }
        )
    return data, inputs


def _vvgd_inputs(prompt: str) -> tuple[dict, list[dict]]:
    data = json.loads((FIXTURES / "video_ap_vvgd.json").read_text())
    inputs = []
    for vid_id, v in enumerate(data["videos"], start=1):
        inputs.append(
            {
                "pred_masks": _unpack(v[f"pred_{prompt}"]),
                "pred_scores": torch.tensor(v[f"scores_{prompt}"]),
                "pred_labels": torch.tensor(v["gt_labels"]),  # one prompt per object: its category
                "gt_masks": _unpack(v["gt"]),
                "gt_labels": torch.tensor(v["gt_labels"]),
                "video_id": vid_id,
            }
        )
    return data["stats"][prompt], inputs


def _assert_stats(result: dict, expected: list[float]) -> None:
    for key, value in zip(AP_KEYS, expected):
        assert result[key].item() == pytest.approx(value, abs=1e-6), key


def test_ytvis_all_and_per_video():
    data, inputs = _ytvis_inputs()
    metric = YouTubeVISAveragePrecision()
    for i, kwargs in enumerate(inputs, start=1):
        metric.update(**kwargs)
        one = YouTubeVISAveragePrecision()
        one.update(**kwargs)
        _assert_stats(one.compute(), data["stats"][f"video_{i}"])
    _assert_stats(metric.compute(), data["stats"]["all"])


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_vvgd_point_and_box(prompt):
    stats, inputs = _vvgd_inputs(prompt)
    metric = VideoVGDAveragePrecision()
    for kwargs in inputs:
        metric.update(**kwargs)
    _assert_stats(metric.compute(), stats["all"])


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_vvgd_frame_protocol_matches_per_frame_cocoeval(prompt):
    """protocol="frame": every frame an image of pycocotools COCOeval (X2SAM's V-VGD evaluator)."""
    _, inputs = _vvgd_inputs(prompt)
    expected = json.loads((FIXTURES / "video_ap_vvgd.json").read_text())["stats_frame"][prompt]["all"]
    metric = VideoVGDAveragePrecision(protocol="frame")
    for kwargs in inputs:
        metric.update(**kwargs)
    _assert_stats(metric.compute(), expected)
    with pytest.raises(ValueError, match="protocol"):
        VideoVGDAveragePrecision(protocol="frames")


def test_track_iou_sums_over_frames():
    a = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    a[0, 0, :2] = True  # 8 px, frame 0
    b[0, 0, :1] = True  # 4 px inside it
    b[0, 2, :, :1] = True  # 4 px where the prediction is empty
    assert track_iou(a, b).item() == pytest.approx(4 / 12)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert YouTubeVISAveragePrecision().compute()["AP"].item() == -1


def _distributed_fn(rank: int, world_size: int) -> dict:
    _, inputs = _ytvis_inputs()
    metric = YouTubeVISAveragePrecision()
    for i, kwargs in enumerate(inputs):
        if i % world_size == rank:
            metric.update(**kwargs)
    out = {f"ytvis_{k}": v.item() for k, v in metric.compute().items()}
    _, inputs = _vvgd_inputs("box")
    metric = VideoVGDAveragePrecision()
    for i, kwargs in enumerate(inputs):
        if i % world_size == rank:
            metric.update(**kwargs)
    out.update({f"vvgd_{k}": v.item() for k, v in metric.compute().items()})
    return out


def test_two_processes_match_one():
    data, _ = _ytvis_inputs()
    vvgd, _ = _vvgd_inputs("box")
    results = run_distributed(_distributed_fn, world_size=2)
    assert results[0] == results[1]
    for key, value in zip(AP_KEYS, data["stats"]["all"]):
        assert results[0][f"ytvis_{key}"] == pytest.approx(value, abs=1e-6)
    for key, value in zip(AP_KEYS, vvgd["all"]):
        assert results[0][f"vvgd_{key}"] == pytest.approx(value, abs=1e-6)


@pytest.mark.reference
def test_fixtures_are_what_the_official_scorers_give(tmp_path, monkeypatch):
    """Re-run youtubevos/cocoapi's ytvoseval (YTVOS_COCOAPI_ROOT) and compare with the stored fixtures."""
    assert_reference_reproduces(
        "make_video_ap_fixtures",
        ["video_ap_ytvis.json", "video_ap_vvgd.json"],
        ["YTVOS_COCOAPI_ROOT"],
        tmp_path,
        monkeypatch,
    )
