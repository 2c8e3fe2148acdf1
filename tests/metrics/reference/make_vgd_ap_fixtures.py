"""Write the image VGD AP fixture by running pycocotools' COCOeval (segm) on generated prompted images.

Scorer: pycocotools (https://github.com/cocodataset/cocoapi, ``PythonAPI/pycocotools/cocoeval.py::
COCOeval``, the pip package), as X-SAM's ``xsam/evaluation/evaluators/img_vgdseg_evaluator.py`` runs it
through ``evaluate_predictions_on_coco(coco_api, results, "segm")``: ground truth = every annotated
instance with its category (each carries a visual prompt at evaluation), results = one mask per prompt
with the prompted object's category and the model's score. Written in COCO's input format (gt json with
RLE ``segmentation``, ``area`` = mask area, ``iscrowd``; results list with RLE and score).

Regenerate (from the repository root; needs only the pycocotools package)::

    python tests/metrics/reference/make_vgd_ap_fixtures.py

Writes ``tests/fixtures/metrics/vgd_ap_coco.json``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import tempfile
import zlib
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"


def pack(array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(data.shape), "data": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode()}


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode()}


def cases(rng: np.random.Generator) -> list[dict]:
    images = []
    for i in range(8):
        h, w = (64, 96) if i < 7 else (200, 260)
        yy, xx = np.mgrid[:h, :w]
        n = 2 + i % 3
        gts, labels, crowd = [], [], []
        for _ in range(n):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            r = rng.uniform(3, 14) if i < 7 else rng.uniform(20, 90)
            gts.append((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
            labels.append(int(rng.integers(1, 4)))
            crowd.append(0)
        if i == 2:  # a crowd region
            c = np.zeros((h, w), bool)
            c[40:, 70:] = True
            gts.append(c)
            labels.append(1)
            crowd.append(1)
        if i == 3:  # a one-pixel object in the corner
            gts[0] = np.zeros((h, w), bool)
            gts[0][h - 1, w - 1] = True
        preds, scores, plabels = [], [], []
        for k in range(n):  # one prediction per prompt (crowd regions are not prompted)
            g = gts[k]
            if i == 4 and k == 0:
                p = np.zeros_like(g)  # empty prediction
            elif i == 5 and k == 1:
                continue  # missing prediction
            elif rng.random() < 0.25:
                p = gts[(k + 1) % n]  # grounded another instance (a hit only if same category)
            else:
                p = np.roll(g, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1))
            preds.append(p)
            scores.append(round(float(rng.uniform(0.1, 1.0)), 4))
            plabels.append(labels[k])
        if i == 2:
            preds.append(gts[-1][:, :].copy() & (xx > 80))
            scores.append(0.5)
            plabels.append(1)
        images.append(
            {"gt": np.stack(gts), "gt_labels": labels, "iscrowd": crowd, "pred": np.stack(preds),
             "scores": scores, "labels": plabels}
        )  # fmt: skip
    return images


def run_cocoeval(images: list[dict]) -> dict:
    gt_json = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    results = []
    for img_id, img in enumerate(images, start=1):
        h, w = img["gt"].shape[1:]
        gt_json["images"].append({"id": img_id, "height": int(h), "width": int(w)})
        for m, label, crowd in zip(img["gt"], img["gt_labels"], img["iscrowd"]):
            r = rle(m)
            gt_json["annotations"].append(
                {"id": len(gt_json["annotations"]) + 1, "image_id": img_id, "category_id": label, "segmentation": r,
                 "area": float(m.sum()), "bbox": mask_utils.toBbox(r).tolist(), "iscrowd": crowd}
            )  # fmt: skip
        for m, score, label in zip(img["pred"], img["scores"], img["labels"]):
            results.append({"image_id": img_id, "category_id": label, "segmentation": rle(m), "score": score})
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(gt_json))
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
            dt = gt.loadRes(results)
        for name, ids in [("all", None)] + [(f"image_{i}", [i]) for i in range(1, len(images) + 1)]:
            ev = COCOeval(gt, dt, "segm")
            if ids is not None:
                ev.params.imgIds = ids
            with contextlib.redirect_stdout(io.StringIO()):
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            out[name] = [float(s) for s in ev.stats]
    return out


def main() -> None:
    images = cases(np.random.default_rng(11))
    stats = run_cocoeval(images)
    payload = {
        "scorer": "pycocotools cocoeval.py::COCOeval segm (X-SAM img_vgdseg_evaluator protocol)",
        "images": [
            {
                "gt": pack(i["gt"]),
                "gt_labels": i["gt_labels"],
                "iscrowd": i["iscrowd"],
                "pred": pack(i["pred"]),
                "scores": i["scores"],
                "labels": i["labels"],
            }
            for i in images
        ],  # fmt: skip
        "stats": stats,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "vgd_ap_coco.json").write_text(json.dumps(payload, indent=1))
    print(stats["all"])


if __name__ == "__main__":
    main()
