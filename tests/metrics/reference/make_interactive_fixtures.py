"""Write the interactive mIoU / cIoU fixture by running X-SAM's evaluator on generated prompts.

Scorer: https://github.com/wanghao9610/X-SAM, ``xsam/evaluation/evaluators/img_intseg_evaluator.py::
ImgIntSegEvaluator._eval_predictions`` with ``xsam/dataset/utils/mask.py::calculate_iou`` /
``decode_mask`` and ``xsam/evaluation/utils/iou.py::IouStat``. The functions are taken out of the files
with ``ast`` (the package imports mmengine / xtuner) and run unchanged on the evaluator's inputs: a gt
json (``image_id``, ``image_info.sample_id``, ``annotations[0].segmentation`` as COCO RLE) and predictions
(``image_id``, ``sample_id``, ``pred_mask`` RLE). Shims: ``print_log`` prints, ``tabulate`` (only used to
print the table) returns "", ``self`` is a namespace with ``iou_stat`` and ``_metadata.ignore_value = 255``.

Regenerate (from the repository root)::

    git clone https://github.com/wanghao9610/X-SAM /tmp/refs/xsam
    python tests/metrics/reference/make_interactive_fixtures.py --xsam /tmp/refs/xsam

(or set ``XSAM_ROOT``). Writes ``tests/fixtures/metrics/interactive_xsam.json``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"


def pack(array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(data.shape), "data": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode()}


def extract(path: Path, names: set[str], namespace: dict) -> None:
    """Exec the top-level functions/classes (or methods, searched in classes) called ``names``."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in names]
    for node in nodes:
        exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)


def load_scorer(root: Path) -> tuple[types.FunctionType, type]:
    pkg = root / "xsam" / "xsam"
    ns = {"np": np, "json": json, "mask_utils": mask_utils, "tabulate": lambda *a, **k: ""}
    ns["print_log"] = lambda msg, logger=None, **k: print(msg)
    extract(pkg / "dataset" / "utils" / "mask.py", {"calculate_iou", "decode_mask"}, ns)
    extract(pkg / "evaluation" / "utils" / "iou.py", {"IouStat"}, ns)
    extract(pkg / "evaluation" / "evaluators" / "img_intseg_evaluator.py", {"_eval_predictions"}, ns)
    return ns["_eval_predictions"], ns["IouStat"]


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode()}


def cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Batches of (pred, gt) masks: partial overlap, perfect, empty prediction, one-pixel, empty union."""
    h, w, n = 32, 48, 14
    yy, xx = np.mgrid[:h, :w]
    gts, preds = np.zeros((n, h, w), np.uint8), np.zeros((n, h, w), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 40), rng.uniform(3, 9)
        gts[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        preds[i] = (yy - cy - rng.integers(-3, 4)) ** 2 + (xx - cx - rng.integers(-3, 4)) ** 2 < (r + 1) ** 2
    preds[1] = gts[1]  # perfect
    preds[2] = 0  # empty prediction
    gts[3], preds[3] = 0, 0  # empty target and prediction: IoU 1
    gts[3, 5, 5], preds[3, 5, 5] = 1, 1  # ... made a one-pixel hit instead
    gts[4], preds[4] = 0, 0
    gts[4, 0, 0], preds[4, 0, 1] = 1, 1  # one-pixel miss
    gts[5], preds[5] = 0, 0  # empty union
    return preds, gts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xsam", type=Path, default=os.environ.get("XSAM_ROOT"))
    args = parser.parse_args()
    if args.xsam is None:
        parser.error("give --xsam (or XSAM_ROOT)")
    eval_predictions, iou_stat = load_scorer(args.xsam)
    preds, gts = cases(np.random.default_rng(7))
    gt_json = [
        {"image_id": 100 + i, "image_info": {"sample_id": 0}, "annotations": [{"segmentation": rle(g)}]}
        for i, g in enumerate(gts)
    ]
    predictions = [{"image_id": 100 + i, "sample_id": 0, "pred_mask": rle(p)} for i, p in enumerate(preds)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(gt_json))
        for name, sl in (
            ("all", slice(None)),
            ("first_half", slice(0, 7)),
            ("empty_union_only", slice(5, 6)),
        ):
            this = types.SimpleNamespace(
                iou_stat=iou_stat(), _metadata=types.SimpleNamespace(ignore_value=255)
            )
            this.data_name = "img_intseg"
            eval_predictions(this, predictions[sl], str(path))
            results[name] = {"mIoU": float(this.iou_stat.giou[1]), "cIoU": float(this.iou_stat.ciou[1])}
    payload = {
        "scorer": "X-SAM ImgIntSegEvaluator._eval_predictions (IouStat; percent)",
        "preds": pack(preds),
        "gts": pack(gts),
        "slices": {"all": [0, len(preds)], "first_half": [0, 7], "empty_union_only": [5, 6]},
        "results": results,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "interactive_xsam.json").write_text(json.dumps(payload, indent=1))
    print(results)


if __name__ == "__main__":
    main()
