"""Image VGD AP against pycocotools COCOeval (segm); fixture: reference/make_vgd_ap_fixtures.py.

V-VGD AP is checked against ``ytvoseval`` in test_video_ap.py.
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

from x2sam_lightning.metrics.functional.video_ap import AP_KEYS
from x2sam_lightning.metrics.vgd_ap import ImageVGDAveragePrecision

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "vgd_ap_coco.json"


def _unpack(obj: dict) -> torch.Tensor:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).reshape(obj["shape"]).copy()).bool()


def _inputs() -> tuple[dict, list[dict]]:
    data = json.loads(FIXTURE.read_text())
    inputs = [
        {
            "pred_masks": _unpack(img["pred"]),
            "pred_scores": torch.tensor(img["scores"]),
            "pred_labels": torch.tensor(img["labels"]),
            "gt_masks": _unpack(img["gt"]),
            "gt_labels": torch.tensor(img["gt_labels"]),
            "gt_iscrowd": torch.tensor(img["iscrowd"]).bool(),
        }
        for img in data["images"]
    ]
    return data, inputs


def _assert_stats(result: dict, expected: list[float]) -> None:
    for key, value in zip(AP_KEYS, expected):
        assert result[key].item() == pytest.approx(value, abs=1e-6), key


def test_matches_cocoeval_all_and_per_image():
    data, inputs = _inputs()
    metric = ImageVGDAveragePrecision()
    for i, kwargs in enumerate(inputs, start=1):
        metric.update(**kwargs)
        one = ImageVGDAveragePrecision()
        one.update(**kwargs)
        _assert_stats(one.compute(), data["stats"][f"image_{i}"])
    _assert_stats(metric.compute(), data["stats"]["all"])


def _distributed_fn(rank: int, world_size: int) -> dict:
    _, inputs = _inputs()
    metric = ImageVGDAveragePrecision()
    for i, kwargs in enumerate(inputs):
        if i % world_size == rank:
            metric.update(**kwargs)
    return {k: v.item() for k, v in metric.compute().items()}


def test_two_processes_match_one():
    data, _ = _inputs()
    results = run_distributed(_distributed_fn, world_size=2)
    assert results[0] == results[1]
    for key, value in zip(AP_KEYS, data["stats"]["all"]):
        assert results[0][key] == pytest.approx(value, abs=1e-6)


def test_fixtures_are_what_the_official_scorers_give(tmp_path, monkeypatch):
    """Re-run pycocotools' COCOeval (the pip package; no checkout needed) and compare with the stored fixtures."""
    assert_reference_reproduces("make_vgd_ap_fixtures", ["vgd_ap_coco.json"], [], tmp_path, monkeypatch)
