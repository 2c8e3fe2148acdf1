"""Write the mask AP fixtures with pycocotools' COCO evaluation.

Scorer: github.com/cocodataset/cocoapi (PyPI ``pycocotools``), ``PythonAPI/pycocotools/cocoeval.py``:
``COCO.loadRes`` on RLE results, then ``COCOeval(gt, dt, "segm")`` ``evaluate`` / ``accumulate`` /
``summarize``; the twelve ``COCOeval.stats`` (maxDets 1, 10, 100) are stored, with ``params.useCats = 0``
for the class-agnostic cases. Each case is written as a COCO ground-truth json and an RLE results json.
Output: ``tests/fixtures/metrics/mask_ap.json`` (masks stored as compressed RLE).

Regenerate::

    python tests/metrics/reference/make_mask_ap_fixtures.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "mask_ap.json"
STATS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
STATS += ["mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]
H, W = 48, 64


def rle(mask: np.ndarray) -> dict:
    code = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": code["size"], "counts": code["counts"].decode()}


def box(rng: np.random.Generator, max_h: int = 40, max_w: int = 50) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    y, x = int(rng.integers(0, H - 2)), int(rng.integers(0, W - 2))
    m[y : y + int(rng.integers(1, max_h)), x : x + int(rng.integers(1, max_w))] = True
    return m


def random_image(rng: np.random.Generator, n_gt: int, n_det: int, crowd: float = 0.15) -> dict:
    gts = [box(rng) for _ in range(n_gt)]
    labels = rng.integers(1, 4, n_gt)
    dets, det_labels = [], []
    for _ in range(n_det):
        if n_gt and rng.random() < 0.7:
            j = int(rng.integers(n_gt))
            dets.append(np.roll(gts[j], tuple(rng.integers(-4, 5, 2)), axis=(0, 1)))
            det_labels.append(int(labels[j]) if rng.random() < 0.8 else int(rng.integers(1, 4)))
        else:
            dets.append(box(rng))
            det_labels.append(int(rng.integers(1, 4)))
    return {
        "gt": [rle(m) for m in gts],
        "gt_labels": labels.tolist(),
        "gt_iscrowd": (rng.random(n_gt) < crowd).astype(int).tolist(),
        "det": [rle(m) for m in dets],
        "det_labels": det_labels,
        "det_scores": rng.random(n_det).round(6).tolist(),
    }


def make_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    img = random_image(rng, 4, 0, crowd=0.0)
    perfect = dict(img, det=img["gt"], det_labels=img["gt_labels"], det_scores=[0.9, 0.8, 0.7, 0.6])
    cases.append({"name": "perfect", "images": [perfect]})
    cases.append({"name": "empty_prediction", "images": [random_image(rng, 3, 0), random_image(rng, 2, 0)]})
    one = np.zeros((H, W), dtype=bool)
    one[5, 7] = True
    tiny = {
        "gt": [rle(one), rle(box(rng))],
        "gt_labels": [1, 2],
        "gt_iscrowd": [0, 0],
        "det": [rle(one), rle(np.roll(one, 1, axis=1))],
        "det_labels": [1, 2],
        "det_scores": [0.9, 0.3],
    }
    cases.append({"name": "one_pixel", "images": [tiny, random_image(rng, 0, 3)]})
    images = [random_image(rng, int(rng.integers(0, 7)), int(rng.integers(0, 16))) for _ in range(10)]
    cases.append({"name": "random_batch", "images": images})
    cases.append({"name": "random_batch_agnostic", "images": images, "class_agnostic": True})
    return cases


def score(case: dict) -> dict:
    images, anns, results = [], [], []
    for i, img in enumerate(case["images"]):
        images.append({"id": i, "height": H, "width": W})
        for seg, label, crowd in zip(img["gt"], img["gt_labels"], img["gt_iscrowd"]):
            area = float(mask_utils.area(seg))
            bbox = mask_utils.toBbox(seg).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": label,
                    "segmentation": seg,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": crowd,
                }
            )
        for seg, label, s in zip(img["det"], img["det_labels"], img["det_scores"]):
            results.append({"image_id": i, "category_id": label, "segmentation": seg, "score": s})
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        gt_file = Path(tmp, "gt.json")
        gt_file.write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]})
        )
        coco_gt = COCO(str(gt_file))
        res_file = Path(tmp, "res.json")
        res_file.write_text(json.dumps(results))
        coco_dt = coco_gt.loadRes(str(res_file)) if results else COCO()
        if not results:  # loadRes rejects an empty list; an empty result set scores the same
            coco_dt.dataset = {
                "images": images,
                "annotations": [],
                "categories": [{"id": c} for c in (1, 2, 3)],
            }
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, "segm")
        coco_eval.params.useCats = int(not case.get("class_agnostic", False))
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(STATS, (float(v) for v in coco_eval.stats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cases = make_cases(np.random.default_rng(0))
    for case in cases:
        case["expected"] = score(case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"height": H, "width": W, "cases": cases}, separators=(",", ":")))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
