"""Write the cIoU / gIoU / gRefCOCO reference fixtures by running the official scorers on generated cases.

Scorers (their code is read from a local checkout and never copied into this repository):

* LISA, https://github.com/dvlab-research/LISA: ``train_ds.py::validate`` with
  ``utils/utils.py::intersectionAndUnionGPU`` and ``utils/utils.py::AverageMeter`` (the reported gIoU and
  cIoU, including ``AverageMeter.all_reduce`` run in a one-process gloo group).
* ReLA, https://github.com/henghuiding/ReLA: ``gres_model/evaluation/refer_evaluation.py::ReferEvaluator``
  (``process`` then ``evaluate``, not distributed).

The functions are taken out of the files with ``ast`` (the modules import deepspeed / detectron2) and run
unchanged; the only shims are an identity ``dict_to_cuda``, a model stand-in that returns the case's
masks, no-op detectron2 helpers, and ``torch.histc`` casting to float (CPU ``histc`` has no integer
kernel; LISA runs it on integer CUDA tensors, where the counts are the same).

Regenerate (from the repository root)::

    git clone https://github.com/dvlab-research/LISA /tmp/refs/LISA
    git clone https://github.com/henghuiding/ReLA /tmp/refs/ReLA
    python tests/metrics/reference/make_referring_fixtures.py --lisa /tmp/refs/LISA --rela /tmp/refs/ReLA

(or set ``LISA_ROOT`` / ``RELA_ROOT``). Writes ``tests/fixtures/metrics/referring_lisa.json`` and
``tests/fixtures/metrics/grefcoco_rela.json``: the cases (masks as strings of digits, one row per line)
and the scorer's numbers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import types
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"
H, W = 12, 16


def encode(mask: np.ndarray) -> list[str]:
    """``(H, W)`` small-integer mask -> one string per row; 255 (ignore) is written as 'x'."""
    return ["".join("x" if v == 255 else str(int(v)) for v in row) for row in mask]


def decode(rows: list[str]) -> np.ndarray:
    return np.array([[255 if c == "x" else int(c) for c in row] for row in rows], dtype=np.int64)


def load_functions(path: Path, names: set[str], namespace: dict) -> dict:
    """Exec the top-level functions / classes ``names`` of ``path`` (verbatim) in ``namespace``."""
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body if getattr(node, "name", None) in names]
    missing = names - {node.name for node in body}
    if missing:
        raise RuntimeError(f"{path}: not found {sorted(missing)}")
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def random_mask(rng: np.random.Generator, kind: str) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.int64)
    if kind == "empty":
        return mask
    if kind == "pixel":
        mask[rng.integers(H), rng.integers(W)] = 1
        return mask
    if kind == "full":
        return mask + 1
    y0, x0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
    y1, x1 = rng.integers(y0 + 1, H + 1), rng.integers(x0 + 1, W + 1)
    mask[y0:y1, x0:x1] = 1
    if kind == "noisy":
        mask ^= (rng.random((H, W)) < 0.1).astype(np.int64)
    return mask


def perturb(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    return np.roll(gt, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))


def lisa_cases(seed: int = 0) -> list[dict]:
    """Batches (one image, several expressions each) in LISA's validate() input: logits and 0/1/255 gt."""
    rng = np.random.default_rng(seed)
    batches = []

    def add(name, pairs):
        batches.append(
            {"name": name, "pred": [encode(p) for p, _ in pairs], "gt": [encode(g) for _, g in pairs]}
        )

    gt = random_mask(rng, "box")
    add("perfect", [(gt, gt), (random_mask(rng, "pixel"),) * 2])
    add("empty_pred", [(np.zeros_like(gt), gt), (np.zeros_like(gt), random_mask(rng, "pixel"))])
    add(
        "empty_vs_empty",
        [(np.zeros_like(gt), np.zeros_like(gt)), (random_mask(rng, "box"), np.zeros_like(gt))],
    )
    pix = random_mask(rng, "pixel")
    add("one_pixel", [(pix, pix), (perturb(rng, pix), pix), (random_mask(rng, "pixel"), pix)])
    ign = random_mask(rng, "box")
    ign_gt = ign.copy()
    ign_gt[:, :3] = 255
    add("ignore", [(ign, ign_gt), (random_mask(rng, "full"), ign_gt)])
    for i in range(4):
        pairs = []
        for _ in range(int(rng.integers(1, 4))):
            g = random_mask(rng, str(rng.choice(["box", "noisy", "pixel", "full"])))
            pairs.append((perturb(rng, g) if rng.random() < 0.7 else random_mask(rng, "noisy"), g))
        add(f"random_{i}", pairs)
    return batches


def run_lisa(root: Path, batches: list[dict]) -> dict[str, float]:
    import torch.distributed as dist
    import tqdm

    shim = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    shim.histc = lambda x, **kw: torch.histc(x.float(), **kw)
    ns: dict = {"np": np, "torch": shim, "dist": dist, "tqdm": tqdm, "Enum": __import__("enum").Enum}
    load_functions(root / "utils" / "utils.py", {"Summary", "AverageMeter", "intersectionAndUnionGPU"}, ns)
    load_functions(root / "train_ds.py", {"validate"}, ns)
    ns["dict_to_cuda"] = lambda d: d

    loader = []
    for batch in batches:
        pred = torch.tensor(np.stack([decode(m) for m in batch["pred"]]))
        gt = torch.tensor(np.stack([decode(m) for m in batch["gt"]]))
        logits = torch.where(pred > 0, 3.0, -3.0)
        loader.append({"images": torch.zeros(1), "images_clip": torch.zeros(1), "pred": logits, "gt": gt})

    def model_engine(**input_dict):
        return {"pred_masks": [input_dict["pred"]], "gt_masks": [input_dict["gt"]]}

    model_engine.eval = lambda: None
    writer = types.SimpleNamespace(add_scalar=lambda *a, **k: None)
    args = types.SimpleNamespace(precision="fp32", local_rank=0)
    giou, ciou = ns["validate"](loader, model_engine, 0, writer, args)
    return {"giou": float(giou), "ciou": float(ciou)}


def rela_cases(seed: int = 1) -> list[dict]:
    """Samples in ReLA's ReferEvaluator input: masks, the gt ``empty`` flag and the predicted nt label."""
    rng = np.random.default_rng(seed)
    samples = []

    def add(name, pred, gt, pred_nt=None, gt_nt=None, source="grefcoco"):
        samples.append(
            {
                "name": name,
                "source": source,
                "pred": encode(pred),
                "gt": encode(gt),
                "pred_nt": bool(pred.sum() == 0) if pred_nt is None else pred_nt,
                "gt_nt": bool(gt.sum() == 0) if gt_nt is None else gt_nt,
                "nt_rule": "mask" if pred_nt is None and gt_nt is None else "explicit",
            }
        )

    empty = np.zeros((H, W), dtype=np.int64)
    box = random_mask(rng, "box")
    add("perfect", box, box)
    add("empty_pred", empty, box)
    add("no_target_true_negative", empty, empty)
    add("no_target_false_positive", random_mask(rng, "box"), empty)
    pix = random_mask(rng, "pixel")
    add("one_pixel", pix, pix)
    add("one_pixel_missed", perturb(rng, pix) if perturb(rng, pix).sum() else empty, pix)
    for i in range(8):
        g = random_mask(rng, str(rng.choice(["box", "noisy", "pixel", "empty"])))
        add(f"random_{i}", perturb(rng, g) if rng.random() < 0.7 else random_mask(rng, "noisy"), g)
    # explicit nt decisions that disagree with the masks (ReLA's nt head)
    add(
        "nt_head_says_none_on_target",
        random_mask(rng, "box"),
        random_mask(rng, "box"),
        pred_nt=True,
        gt_nt=False,
    )
    add("nt_head_says_none_on_empty", random_mask(rng, "box"), empty, pred_nt=True, gt_nt=True)
    add("nt_head_says_target_on_empty", empty, empty, pred_nt=False, gt_nt=True)
    return samples


def load_rela(root: Path) -> dict:
    """ReLA's ``computeIoU`` and ``ReferEvaluator`` from ``gres_model/evaluation/refer_evaluation.py``,
    with detectron2's distributed helpers stubbed for one process (returns their namespace)."""
    import collections
    import itertools
    import logging

    ns: dict = {
        "np": np,
        "torch": torch,
        "itertools": itertools,
        "json": json,
        "logging": logging,
        "os": os,
        "OrderedDict": collections.OrderedDict,
        "DatasetEvaluator": object,
        "all_gather": lambda x: [x],
        "is_main_process": lambda: True,
        "synchronize": lambda: None,
        "PathManager": None,
    }
    load_functions(
        root / "gres_model" / "evaluation" / "refer_evaluation.py", {"computeIoU", "ReferEvaluator"}, ns
    )
    return ns


def run_rela(root: Path, samples: list[dict]) -> dict:
    ns = load_rela(root)

    def evaluate(subset: list[dict]) -> dict:
        evaluator = ns["ReferEvaluator"]("fixture", distributed=False, output_dir=None)
        evaluator.reset()
        for i, s in enumerate(subset):
            pred, gt = decode(s["pred"]), decode(s["gt"])
            ref_seg = torch.tensor(np.stack([1 - pred, pred]), dtype=torch.float32)
            nt_label = torch.tensor([0.0, 1.0] if s["pred_nt"] else [1.0, 0.0])
            inputs = {
                "image_id": i,
                "source": s["source"],
                "sentence": {"raw": s["name"]},
                "gt_mask_merged": torch.tensor(gt),
                "empty": s["gt_nt"],
            }
            evaluator.process([inputs], [{"ref_seg": ref_seg, "nt_label": nt_label}])
        results = evaluator.evaluate()
        return {src: {k: float(v) for k, v in res.items()} for src, res in results.items()}

    mask_rule = [s for s in samples if s["nt_rule"] == "mask"]
    return {
        "mask_rule": evaluate(mask_rule),
        "explicit": evaluate(samples),
        "refcoco_only": evaluate([dict(s, source="refcoco") for s in mask_rule if not s["gt_nt"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lisa", default=os.environ.get("LISA_ROOT"), help="LISA checkout")
    parser.add_argument("--rela", default=os.environ.get("RELA_ROOT"), help="ReLA checkout")
    args = parser.parse_args()
    if not args.lisa or not args.rela:
        parser.error("give --lisa and --rela (or LISA_ROOT / RELA_ROOT)")
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    dist.init_process_group("gloo", rank=0, world_size=1)  # LISA's AverageMeter.all_reduce needs a group
    FIXTURES.mkdir(parents=True, exist_ok=True)

    batches = lisa_cases()
    lisa = {
        "scorer": "dvlab-research/LISA train_ds.py::validate (utils/utils.py::intersectionAndUnionGPU)",
        "shape": [H, W],
        "batches": batches,
        "all": run_lisa(Path(args.lisa), batches),
        "per_batch": [run_lisa(Path(args.lisa), [b]) for b in batches],
    }
    (FIXTURES / "referring_lisa.json").write_text(json.dumps(lisa, indent=1) + "\n")

    samples = rela_cases()
    rela = {
        "scorer": "henghuiding/ReLA gres_model/evaluation/refer_evaluation.py::ReferEvaluator.evaluate",
        "note": "gIoU, cIoU and Pr@X in percent, T_acc / N_acc as fractions (ReLA's output)",
        "shape": [H, W],
        "samples": samples,
        "results": run_rela(Path(args.rela), samples),
    }
    (FIXTURES / "grefcoco_rela.json").write_text(json.dumps(rela, indent=1) + "\n")
    dist.destroy_process_group()
    print("wrote", FIXTURES / "referring_lisa.json", FIXTURES / "grefcoco_rela.json")


if __name__ == "__main__":
    main()
