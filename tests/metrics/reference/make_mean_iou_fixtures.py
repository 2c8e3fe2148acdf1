"""Write the mIoU fixtures with the VSPW and detectron2 semantic-segmentation scorers.

Scorers (their code is not part of this repository):

- VSPW: github.com/VSPW-dataset/VSPW_code, ``utils.py::Evaluator`` (``add_batch`` per frame, then
  ``Mean_Intersection_over_Union``, ``Pixel_Accuracy``, ``Pixel_Accuracy_Class``,
  ``Frequency_Weighted_Intersection_over_Union``), as ``evaluator_test.py`` runs it;
- detectron2: github.com/facebookresearch/detectron2,
  ``detectron2/evaluation/sem_seg_evaluation.py::SemSegEvaluator`` (``process`` then ``evaluate``; loaded
  from the file with its detectron2 imports stubbed, since only numpy is needed to score).

Both are run on every case and must agree; their numbers go to ``tests/fixtures/metrics/mean_iou.json``.

Regenerate::

    python tests/metrics/reference/make_mean_iou_fixtures.py --vspw /path/to/VSPW_code \
        --detectron2 /path/to/detectron2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "mean_iou.json"
NUM_CLASSES, IGNORE = 6, 255


def load_vspw_evaluator(root: Path):
    spec = importlib.util.spec_from_file_location("vspw_utils", root / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Evaluator


def load_detectron2_evaluator(root: Path):
    """Import ``sem_seg_evaluation.py`` with the few detectron2 names it imports stubbed."""
    stubs = {
        "detectron2": {},
        "detectron2.data": {"DatasetCatalog": None, "MetadataCatalog": None},
        "detectron2.utils": {},
        "detectron2.utils.comm": {"all_gather": None, "is_main_process": None, "synchronize": None},
        "detectron2.utils.file_io": {"PathManager": None},
        "detectron2.evaluation": {},
        "detectron2.evaluation.evaluator": {"DatasetEvaluator": object},
    }
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__path__ = []
        module.__dict__.update(attrs)
        sys.modules[name] = module
    path = root / "detectron2" / "evaluation" / "sem_seg_evaluation.py"
    spec = importlib.util.spec_from_file_location("detectron2.evaluation.sem_seg_evaluation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SemSegEvaluator


def make_cases(rng: np.random.Generator) -> list[dict]:
    h, w = 12, 16

    def noisy(gt: np.ndarray, p: float) -> np.ndarray:
        pred = np.where(gt == IGNORE, rng.integers(0, NUM_CLASSES, gt.shape), gt)
        flip = rng.random(gt.shape) < p
        return np.where(flip, rng.integers(0, NUM_CLASSES, gt.shape), pred)

    cases = []
    gt = rng.integers(0, 4, (2, h, w))
    cases.append({"name": "perfect", "preds": gt.tolist(), "target": gt.tolist()})
    gt = rng.integers(0, 3, (1, h, w))
    cases.append(
        {"name": "absent_class_predicted", "preds": np.full_like(gt, 5).tolist(), "target": gt.tolist()}
    )
    gt = rng.integers(0, NUM_CLASSES, (3, h, w))
    gt[:, :3] = IGNORE
    gt[0, 5, 5] = 4  # a one-pixel class
    gt[gt == 4] = 2
    gt[0, 5, 5] = 4
    cases.append({"name": "ignore_and_one_pixel", "preds": noisy(gt, 0.3).tolist(), "target": gt.tolist()})
    gt = rng.integers(0, NUM_CLASSES, (5, h, w))
    gt[rng.random(gt.shape) < 0.1] = IGNORE
    cases.append({"name": "random_batch", "preds": noisy(gt, 0.5).tolist(), "target": gt.tolist()})
    return cases


def score(vspw_evaluator, d2_evaluator, case: dict) -> dict:
    preds, target = np.asarray(case["preds"]), np.asarray(case["target"])
    vspw = vspw_evaluator(NUM_CLASSES)
    for gt, pred in zip(target, preds):
        vspw.add_batch(gt[None], pred[None])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = {
            "miou": float(vspw.Mean_Intersection_over_Union()),
            "pacc": float(vspw.Pixel_Accuracy()),
            "macc": float(vspw.Pixel_Accuracy_Class()),
            "fwiou": float(vspw.Frequency_Weighted_Intersection_over_Union()),
        }

    d2 = object.__new__(d2_evaluator)  # skip the dataset-catalog constructor; set what process/evaluate read
    d2._num_classes, d2._ignore_label, d2._class_names = (
        NUM_CLASSES,
        IGNORE,
        [str(c) for c in range(NUM_CLASSES)],
    )
    d2._compute_boundary_iou, d2._distributed, d2._output_dir = False, False, None
    d2._cpu_device, d2._contiguous_id_to_dataset_id = torch.device("cpu"), None
    d2._logger = types.SimpleNamespace(info=lambda *a, **k: None)
    d2.input_file_to_gt_file = {str(i): i for i in range(len(target))}
    d2.sem_seg_loading_fn = lambda i, dtype: target[i].astype(dtype)
    d2.encode_json_sem_seg = lambda pred, name: []
    d2.reset()
    inputs = [{"file_name": str(i)} for i in range(len(target))]
    outputs = [
        {"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(p), NUM_CLASSES).permute(2, 0, 1)}
        for p in preds
    ]
    d2.process(inputs, outputs)
    res = d2.evaluate()["sem_seg"]
    ours_d2 = {
        "miou": res["mIoU"] / 100,
        "pacc": res["pACC"] / 100,
        "macc": res["mACC"] / 100,
        "fwiou": res["fwIoU"] / 100,
    }
    for key, value in ours_d2.items():
        assert math.isclose(value, expected[key], abs_tol=1e-12), (case["name"], key, value, expected[key])
    expected["iou_per_class"] = [
        None if math.isnan(res[f"IoU-{c}"]) else res[f"IoU-{c}"] / 100 for c in range(NUM_CLASSES)
    ]
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vspw", type=Path, required=True, help="VSPW_code checkout")
    parser.add_argument("--detectron2", type=Path, required=True, help="detectron2 checkout")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    vspw, d2 = load_vspw_evaluator(args.vspw), load_detectron2_evaluator(args.detectron2)
    cases = make_cases(np.random.default_rng(0))
    for case in cases:
        case["expected"] = score(vspw, d2, case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"num_classes": NUM_CLASSES, "ignore_index": IGNORE, "cases": cases}
    args.out.write_text(json.dumps(payload, separators=(",", ":")))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
