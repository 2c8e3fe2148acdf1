"""Write the PQ fixtures with COCO's official panoptic scorer.

Scorer: github.com/cocodataset/panopticapi, ``panopticapi/evaluation.py``, functions
``pq_compute_single_core`` (per-image statistics) and ``PQStat.pq_average`` (PQ / SQ / RQ). Each generated case
is written in the scorer's input format (PNG id maps with ``id = R + 256 G + 256^2 B`` and COCO panoptic
``segments_info`` json), scored, and stored with its inputs in
``tests/fixtures/metrics/panoptic_quality.json``.

Regenerate (needs a panopticapi checkout; its code is not part of this repository)::

    python tests/metrics/reference/make_panoptic_quality_fixtures.py --panopticapi /path/to/panopticapi

The scene generator is shared with the VPQ fixtures (``make_video_panoptic_quality_fixtures.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

THINGS = [1, 2, 3]
STUFFS = [7, 8]
OUT = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "panoptic_quality.json"


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*id_map.shape, 3), dtype=np.uint8)
    for c in range(3):
        rgb[..., c] = (id_map // 256**c) % 256
    return rgb


def random_scene(rng: np.random.Generator, h: int, w: int, n_things: int, crowd: int, void: bool) -> tuple:
    """A ground-truth id map with stuff bands, thing boxes, crowd boxes and void patches."""
    ids = np.zeros((h, w), dtype=np.int64)
    segs: list[dict] = []
    next_id = 1
    cut = int(rng.integers(h // 4, 3 * h // 4))
    for rows, cat in ((slice(0, cut), STUFFS[0]), (slice(cut, h), STUFFS[int(rng.integers(2))])):
        ids[rows] = next_id
        segs.append({"id": next_id, "category_id": cat, "iscrowd": 0})
        next_id += 1
    for k in range(n_things + crowd):
        y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        y1, x1 = y0 + int(rng.integers(1, h // 2)), x0 + int(rng.integers(1, w // 2))
        ids[y0:y1, x0:x1] = next_id
        segs.append({"id": next_id, "category_id": int(rng.choice(THINGS)), "iscrowd": int(k >= n_things)})
        next_id += 1
    if void:
        for _ in range(2):
            y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
            ids[y0 : y0 + int(rng.integers(2, h // 3)), x0 : x0 + int(rng.integers(2, w // 3))] = 0
    return ids, segs


def perturb(rng: np.random.Generator, ids: np.ndarray, segs: list[dict], strength: float) -> tuple:
    """A prediction: renumbered ids, shifted masks, relabelled and spurious segments, void holes."""
    h, w = ids.shape
    remap = {s["id"]: 1000 + 7 * s["id"] for s in segs}
    cats = {remap[s["id"]]: s["category_id"] for s in segs}
    pred = np.zeros_like(ids)
    for old, new in remap.items():
        pred[ids == old] = new
    if strength > 0:
        pred = np.roll(pred, int(rng.integers(-2, 3)), axis=int(rng.integers(2)))
        for _ in range(int(3 * strength) + 1):
            y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
            new = int(rng.integers(5000, 6000))
            pred[y0 : y0 + int(rng.integers(1, h // 2)), x0 : x0 + int(rng.integers(1, w // 2))] = new
            cats[new] = int(rng.choice(THINGS + STUFFS))
        for sid in list(cats):
            if rng.random() < 0.2 * strength:
                cats[sid] = int(rng.choice(THINGS + STUFFS))
        if rng.random() < 0.5:
            y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
            pred[y0 : y0 + 3, x0 : x0 + 4] = 0
    return pred, present_segments(pred, cats)


def present_segments(pred: np.ndarray, cats: dict) -> list[dict]:
    return [{"id": int(i), "category_id": cats[int(i)]} for i in np.unique(pred) if i != 0]


def gt_segments(ids: np.ndarray, segs: list[dict]) -> list[dict]:
    """The listed gt segments with their pixel areas (COCO panoptic ``area``)."""
    return [dict(s, area=int((ids == s["id"]).sum())) for s in segs]


def make_cases(rng: np.random.Generator) -> list[dict]:
    h, w = 20, 28
    cases = []

    def image(pred, pred_segs, gt, gt_segs):
        return {
            "pred": pred.tolist(),
            "target": gt.tolist(),
            "pred_segments": pred_segs,
            "target_segments": [{k: s[k] for k in ("id", "category_id", "iscrowd")} for s in gt_segs],
        }

    gt, segs = random_scene(rng, h, w, 3, 0, False)
    cases.append({"name": "perfect", "images": [image(*perturb(rng, gt, segs, 0.0), gt, segs)]})
    gt, segs = random_scene(rng, h, w, 3, 1, True)
    cases.append({"name": "empty_prediction", "images": [image(np.zeros_like(gt), [], gt, segs)]})
    # a one-pixel thing predicted exactly, one missed and a one-pixel false positive
    gt, segs = random_scene(rng, h, w, 1, 0, False)
    gt[3, 4], gt[10, 20] = 50, 51
    segs += [{"id": 50, "category_id": 2, "iscrowd": 0}, {"id": 51, "category_id": 3, "iscrowd": 0}]
    pred, pred_segs = perturb(rng, gt, segs, 0.0)
    pred[10, 20] = pred[9, 20]
    pred[15, 2] = 77
    cats = {s["id"]: s["category_id"] for s in pred_segs} | {77: 1}
    cases.append({"name": "one_pixel", "images": [image(pred, present_segments(pred, cats), gt, segs)]})
    # crowd rule: predictions on two crowd segments of one category (the last listed one counts), and on void
    gt = np.full((h, w), 1, dtype=np.int64)
    gt[:, 14:] = 2
    gt[2:8, 2:8], gt[10:16, 2:8], gt[2:8, 16:24] = 3, 4, 0
    segs = [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 2, "category_id": 8, "iscrowd": 0},
        {"id": 3, "category_id": 1, "iscrowd": 1},
        {"id": 4, "category_id": 1, "iscrowd": 1},
    ]
    pred = gt.copy()
    pred[pred == 3], pred[pred == 4], pred[pred == 0] = 0, 0, 2
    pred[2:9, 2:8], pred[9:17, 2:8], pred[2:8, 15:24] = 11, 12, 13
    pred_segs = [
        {"id": 1, "category_id": 7},
        {"id": 2, "category_id": 8},
        {"id": 11, "category_id": 1},
        {"id": 12, "category_id": 1},
        {"id": 13, "category_id": 2},
    ]
    cases.append({"name": "crowd_and_void", "images": [image(pred, pred_segs, gt, segs)]})
    imgs = []
    for _ in range(6):
        gt, segs = random_scene(
            rng, h, w, int(rng.integers(1, 5)), int(rng.integers(0, 2)), bool(rng.random() < 0.7)
        )
        imgs.append(image(*perturb(rng, gt, segs, float(rng.uniform(0.3, 1.5))), gt, segs))
    cases.append({"name": "random_batch", "images": imgs})
    return cases


def score(panopticapi: Path, case: dict) -> dict:
    sys.path.insert(0, str(panopticapi))
    from panopticapi.evaluation import PQStat, pq_compute_single_core

    categories = {c: {"id": c, "isthing": int(c in THINGS)} for c in THINGS + STUFFS}
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp, "gt"), Path(tmp, "pred")
        gt_dir.mkdir(), pred_dir.mkdir()
        annotations = []
        for i, img in enumerate(case["images"]):
            name = f"{i:04d}.png"
            gt = np.asarray(img["target"], dtype=np.int64)
            Image.fromarray(id2rgb(gt)).save(gt_dir / name)
            Image.fromarray(id2rgb(np.asarray(img["pred"], dtype=np.int64))).save(pred_dir / name)
            gt_ann = {
                "image_id": i,
                "file_name": name,
                "segments_info": gt_segments(gt, img["target_segments"]),
            }
            pred_ann = {
                "image_id": i,
                "file_name": name,
                "segments_info": [dict(s) for s in img["pred_segments"]],
            }
            annotations.append((gt_ann, pred_ann))
        with contextlib.redirect_stdout(io.StringIO()):
            stat = pq_compute_single_core(0, annotations, str(gt_dir), str(pred_dir), categories)
    expected = {"stats": {}, "per_class": {}}
    for name, isthing in (("", None), ("_th", True), ("_st", False)):
        try:
            res, per_class = stat.pq_average(categories, isthing=isthing)
        except ZeroDivisionError:  # no category of the group occurs
            res, per_class = {"pq": None, "sq": None, "rq": None}, {}
        for key in ("pq", "sq", "rq"):
            expected[key + name] = res[key]
        if isthing is None:
            expected["per_class"] = {str(c): v for c, v in per_class.items()}
    for c in categories:
        s = stat[c]
        expected["stats"][str(c)] = {"iou": float(s.iou), "tp": int(s.tp), "fp": int(s.fp), "fn": int(s.fn)}
    assert isinstance(stat, PQStat)
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--panopticapi", type=Path, required=True, help="panopticapi checkout (repository root)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cases = make_cases(np.random.default_rng(0))
    for case in cases:
        case["expected"] = score(args.panopticapi, case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"things": THINGS, "stuffs": STUFFS, "cases": cases}, separators=(",", ":"))
    )
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
