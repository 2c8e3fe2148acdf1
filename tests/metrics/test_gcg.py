"""GCGMetric against GLaMM's eval/gcg/evaluate.py (fixture from tests/metrics/reference/make_gcg_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.distributed import run_distributed

from x2sam_lightning.imports import java_available
from x2sam_lightning.metrics.functional.gcg import (
    coco_average_precision,
    greedy_pair_miou,
    greedy_recall_matches,
)
from x2sam_lightning.metrics.gcg import GCGMetric
from x2sam_lightning.metrics.phrase_similarity import (
    ConstantPhraseSimilarity,
    LexicalPhraseSimilarity,
    PhraseSimilarity,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "metrics" / "gcg_glamm.json"
MASK_KEYS = ("ap50", "miou", "recall")


def _masks(rows_list: list[list[str]]) -> torch.Tensor:
    if not rows_list:
        return torch.zeros(0, 12, 16, dtype=torch.bool)
    return torch.tensor([[[c == "1" for c in row] for row in rows] for rows in rows_list])


def _inputs(cases: list[dict]) -> dict:
    return {
        "pred_masks": [_masks(c["pred_masks"]) for c in cases],
        "target_masks": [_masks(c["gt_masks"]) for c in cases],
        "pred_phrases": [c["pred_phrases"] for c in cases],
        "target_phrases": [c["gt_phrases"] for c in cases],
        "pred_captions": [c["pred_caption"] for c in cases],
        "target_captions": [c["gt_caption"] for c in cases],
        "image_ids": [c["image_id"] for c in cases],
    }


def _update(metric: GCGMetric, inputs: dict, batch_size: int) -> None:
    n = len(inputs["pred_masks"])
    for i in range(0, n, batch_size):
        metric.update(**{k: v[i : i + batch_size] for k, v in inputs.items()})


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.skipif(not java_available(), reason="METEOR / CIDEr need Java")
def test_matches_glamm_with_captions(data):
    metric = GCGMetric(similarity=LexicalPhraseSimilarity())
    _update(metric, _inputs(data["cases"]), batch_size=3)
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result == pytest.approx(data["lexical"], abs=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("similarity", ["lexical", "constant"])
def test_mask_metrics_match_glamm(data, batch_size, similarity):
    sim = LexicalPhraseSimilarity() if similarity == "lexical" else ConstantPhraseSimilarity(1.0)
    metric = GCGMetric(similarity=sim, captions=False)
    _update(metric, _inputs(data["cases"]), batch_size)
    result = {k: v.item() for k, v in metric.compute().items()}
    assert set(result) == set(MASK_KEYS)
    assert result == pytest.approx({k: data[similarity][k] for k in MASK_KEYS}, abs=1e-6)


def test_perfect_prediction(data):
    metric = GCGMetric(captions=False)
    _update(metric, _inputs(data["cases"][:1]), 1)
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result == pytest.approx({k: data["perfect_only"][k] for k in MASK_KEYS}, abs=1e-12)


def test_ap_ties_follow_image_ids_not_arrival_order(data):
    inputs = _inputs(data["cases"])
    reversed_inputs = {k: v[::-1] for k, v in inputs.items()}
    a, b = GCGMetric(captions=False), GCGMetric(captions=False)
    _update(a, inputs, 4)
    _update(b, reversed_inputs, 4)
    assert a.compute()["ap50"].item() == b.compute()["ap50"].item()


def test_pieces_follow_glamm_edge_rules():
    assert greedy_pair_miou(np.zeros((0, 2))) == 0.0
    assert greedy_pair_miou(np.array([[0.2, 0.9], [0.8, 0.1]])) == pytest.approx(0.85)
    # the loop stops at the first pair failing the text test, even if a later one would pass
    assert greedy_recall_matches(np.array([[0.9, 0.0], [0.0, 0.8]]), np.array([[0.1, 0.0], [0.0, 1.0]])) == 0
    # a chosen pair outside the phrase matrix: GLaMM's exception, no match for the image
    assert greedy_recall_matches(np.array([[0.9, 0.95]]), np.ones((1, 1))) == -1
    assert (
        coco_average_precision(np.ones(0), np.zeros(0, bool), np.zeros(0, int), np.zeros(0, int), 0) == -1.0
    )
    assert isinstance(LexicalPhraseSimilarity(), PhraseSimilarity)
    assert LexicalPhraseSimilarity()(["A  Man"], ["a man", "sky"])[0].tolist() == pytest.approx([1.0, 0.0])


def test_missing_java_can_give_nan(monkeypatch):
    import x2sam_lightning.metrics.gcg as gcg

    monkeypatch.setattr(gcg, "java_available", lambda: False)
    with pytest.raises(RuntimeError, match="Java"):
        gcg.GCGMetric()
    with pytest.warns(UserWarning, match="NaN"):
        metric = gcg.GCGMetric(on_missing_java="nan")
    metric.update([torch.ones(1, 2, 2)], [torch.ones(1, 2, 2)], [["a"]], [["a"]], ["a cat"], ["a cat"])
    result = metric.compute()
    assert torch.isnan(result["meteor"]) and torch.isnan(result["cider"])
    assert result["miou"].item() == 1.0


def _two_process(rank: int, world_size: int, inputs: dict):
    metric = GCGMetric(similarity=LexicalPhraseSimilarity())
    _update(metric, {k: v[rank::world_size] for k, v in inputs.items()}, batch_size=2)
    metric.sync()
    out = {k: v.item() for k, v in metric._mask_results().items()}
    preds, refs = metric._caption_lists()
    metric.unsync()
    return out, sorted(zip(preds, [tuple(r) for r in refs]))


def test_two_processes_match_one(data):
    inputs = _inputs(data["cases"])
    single = GCGMetric(similarity=LexicalPhraseSimilarity(), captions=False)
    _update(single, inputs, 4)
    expected = {k: v.item() for k, v in single.compute().items()}
    captions = sorted(zip(inputs["pred_captions"], [(c,) for c in inputs["target_captions"]]))
    for result, gathered in run_distributed(_two_process, inputs):
        assert result == pytest.approx(expected, abs=1e-12)
        assert gathered == captions


def test_video_tracks_score_over_all_frames(data):
    """VideoGLaMM's IoU of (T, H, W) tracks = the IoU of the frames stacked into one image."""
    inputs = _inputs(data["cases"][:6])
    as_video = dict(inputs)
    as_video["pred_masks"] = [m.reshape(m.shape[0], 3, 4, 16) for m in inputs["pred_masks"]]
    as_video["target_masks"] = [m.reshape(m.shape[0], 3, 4, 16) for m in inputs["target_masks"]]
    image, video = GCGMetric(captions=False), GCGMetric(captions=False, caption_max_chars=2000)
    _update(image, inputs, 3)
    _update(video, as_video, 3)
    assert {k: v.item() for k, v in video.compute().items()} == {
        k: v.item() for k, v in image.compute().items()
    }


@pytest.mark.reference
def test_fixture_is_what_glamm_gives(tmp_path, monkeypatch):
    """Re-run GLaMM's evaluation (checkout in GLAMM_ROOT) and compare with the stored fixture."""
    import os
    import sys

    if not os.environ.get("GLAMM_ROOT"):
        pytest.skip("set GLAMM_ROOT to a groundingLMM checkout")
    sys.path.insert(0, str(Path(__file__).parent / "reference"))
    import make_gcg_fixtures as ref

    monkeypatch.setattr(ref, "FIXTURES", tmp_path)
    monkeypatch.setattr(sys, "argv", ["make_gcg_fixtures.py"])
    ref.main()
    assert json.loads((tmp_path / "gcg_glamm.json").read_text()) == json.loads(FIXTURE.read_text())
