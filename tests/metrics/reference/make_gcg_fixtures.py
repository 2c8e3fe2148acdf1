"""Write the GCG reference fixture by running GLaMM's evaluation on generated cases.

Scorer: GLaMM, https://github.com/mbzuai-oryx/groundingLMM, ``eval/gcg/evaluate.py::main`` (mask AP with
pycocotools' ``COCOeval``, captions with pycocoevalcap's ``COCOEvalCap``, ``evaluate_mask_miou`` and
``evaluate_recall_with_mapping``) with ``eval/utils.py::compute_iou``. Their code is read from a local
checkout and run unchanged, end to end on files in GLaMM's input format (``<split>_gcg_coco_mask_gt.json``,
``<split>_gcg_coco_caption_gt.json`` and one ``<image_id>.json`` prediction per image). The module cannot be
imported as is (it downloads ``bert-base-uncased`` at import), so its functions are taken out with ``ast``;
the only changes:

* ``evaluate_mask_miou`` and ``evaluate_recall_with_mapping`` get a final ``return`` of the number they
  print (printing rounds to 3 decimals), and ``COCOeval`` / ``COCOEvalCap`` are subclasses that keep their
  results;
* ``text_similarity_bert`` (BERT weights: a download) is replaced by the similarity under test: our
  offline trigram similarity and a constant 1.0 (IoU-only matching), one fixture entry each;
* SPICE (it downloads Stanford CoreNLP models) is replaced by a scorer returning 0; METEOR and CIDEr are
  pycocoevalcap's own.

Regenerate (from the repository root; needs Java for pycocoevalcap)::

    git clone https://github.com/mbzuai-oryx/groundingLMM /tmp/refs/groundingLMM
    python tests/metrics/reference/make_gcg_fixtures.py --glamm /tmp/refs/groundingLMM

(or set ``GLAMM_ROOT``). Writes ``tests/fixtures/metrics/gcg_glamm.json``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"
H, W = 12, 16
RESULTS: dict = {}


def encode(mask: np.ndarray) -> list[str]:
    return ["".join(str(int(v)) for v in row) for row in mask]


def box(rng: np.random.Generator, kind: str = "box") -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    if kind == "empty":
        return mask
    if kind == "pixel":
        mask[rng.integers(H), rng.integers(W)] = 1
        return mask
    y0, x0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
    mask[y0 : rng.integers(y0 + 1, H + 1), x0 : rng.integers(x0 + 1, W + 1)] = 1
    return mask


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(mask, (dy, dx), axis=(0, 1))


WORDS = [
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "red",
    "blue",
    "car",
    "tree",
    "ball",
    "grass",
    "sky",
    "table",
    "cup",
    "small",
    "large",
    "white",
    "black",
]


def phrase(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))


def gcg_cases(seed: int = 0) -> list[dict]:
    """Images in GLaMM's format: gt masks / phrases / caption, predicted masks / phrases / caption."""
    rng = np.random.default_rng(seed)
    cases = []

    def add(name, gt, gt_phr, pred, pred_phr, gt_cap, pred_cap):
        cases.append(
            {
                "name": name,
                "image_id": 100 + 7 * len(cases) % 13 * 10 + len(cases),  # ids not in arrival order
                "gt_masks": [encode(m) for m in gt],
                "gt_phrases": gt_phr,
                "pred_masks": [encode(m) for m in pred],
                "pred_phrases": pred_phr,
                "gt_caption": gt_cap,
                "pred_caption": pred_cap,
            }
        )

    g = [box(rng), box(rng)]
    add("perfect", g, ["a man", "a red car"], g, ["a man", "a red car"], "A man next to a red car.",
        "A man next to a red car.")  # fmt: skip
    g = [box(rng), box(rng, "pixel")]
    add("no_prediction", g, ["the dog", "a ball"], [], [], "The dog plays with a ball.", "A picture.")
    p = box(rng, "pixel")
    add("one_pixel", [p, box(rng)], ["a cup", "the table"], [p, shift(p, 1, 0)], ["a cup", "cup"],
        "A cup on the table.", "A small cup on a table.")  # fmt: skip
    g = [box(rng), box(rng), box(rng)]
    add("missing_and_extra", g, ["a cat", "grass", "the sky"], [g[1], box(rng), box(rng), g[0]],
        ["green grass", "a tree", "a ball", "a black cat"], "A cat on the grass under the sky.",
        "A black cat sits on green grass near a tree and a ball.")  # fmt: skip
    g = [box(rng), box(rng)]
    add("phrase_mismatch", g, ["a woman", "a blue car"], [g[0], g[1]], ["a woman"],
        "A woman and a blue car.", "A woman.")  # fmt: skip
    g = [box(rng)]
    add("empty_pred_mask", g, ["a tree"], [box(rng, "empty"), g[0]], ["tree", "a tree"], "A tree.",
        "A tall tree, and a tree!")  # fmt: skip
    g = [box(rng), box(rng)]
    add("phrase_differs_stops_matching", g, ["a white table", "a large cup"], [g[0], shift(g[1], 0, 1)],
        ["the blue sky", "a large cup"], "A white table with a large cup.", "The blue sky and a large cup.")  # fmt: skip
    for i in range(4):
        n = int(rng.integers(1, 4))
        g = [box(rng, str(rng.choice(["box", "pixel"]))) for _ in range(n)]
        ph = [phrase(rng) for _ in range(n)]
        pred = [shift(m, int(rng.integers(-1, 2)), int(rng.integers(-1, 2))) for m in g if rng.random() < 0.8]
        pred += [box(rng) for _ in range(int(rng.integers(0, 2)))]
        pph = [ph[j] if j < n and rng.random() < 0.7 else phrase(rng) for j in range(len(pred))]
        add(f"random_{i}", g, ph, pred, pph, " and ".join(ph).capitalize() + ".", " ".join(pph) + ".")
    return cases


def write_inputs(cases: list[dict], gt_dir: Path, pred_dir: Path, split: str = "val") -> None:
    from pycocotools import mask as mask_utils

    def rle(rows):
        m = np.asfortranarray(np.array([[int(c) for c in r] for r in rows], dtype=np.uint8))
        out = mask_utils.encode(m)
        out["counts"] = out["counts"].decode()
        return out

    images, anns, cap_anns = [], [], []
    for case in cases:
        iid = case["image_id"]
        images.append({"id": iid, "height": H, "width": W, "file_name": f"{iid}.jpg"})
        for rows in case["gt_masks"]:
            seg = rle(rows)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": 1,
                    "segmentation": seg,
                    "area": float(mask_utils.area(seg)),
                    "bbox": mask_utils.toBbox(seg).tolist(),
                    "iscrowd": 0,
                }
            )
        cap_anns.append(
            {"id": iid, "image_id": iid, "caption": case["gt_caption"], "labels": case["gt_phrases"]}
        )
        pred = {"caption": case["pred_caption"], "phrases": case["pred_phrases"]}
        pred["pred_masks"] = [rle(rows) for rows in case["pred_masks"]]
        (pred_dir / f"{iid}.json").write_text(json.dumps({f"{iid}.jpg": pred}))
    cats = [{"id": 1, "name": "object"}]
    mask_gt = {"images": images, "annotations": anns, "categories": cats}
    (gt_dir / f"{split}_gcg_coco_mask_gt.json").write_text(json.dumps(mask_gt))
    cap_gt = {"images": images, "annotations": cap_anns}
    (gt_dir / f"{split}_gcg_coco_caption_gt.json").write_text(json.dumps(cap_gt))


def load_glamm(root: Path, similarity) -> dict:
    import pycocoevalcap.eval as cap_eval
    import torch
    import tqdm
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class KeepCOCOeval(COCOeval):
        def summarize(self):
            super().summarize()
            RESULTS["ap_stats"] = [float(s) for s in self.stats]

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(res)

        def method(self):
            return "SPICE (disabled)"

    cap_eval.Spice = NoSpice

    class KeepCOCOEvalCap(cap_eval.COCOEvalCap):
        def evaluate(self):
            super().evaluate()
            RESULTS["captions"] = {k: float(v) for k, v in self.eval.items()}

    ns: dict = {
        "os": os,
        "json": json,
        "argparse": argparse,
        "np": np,
        "torch": torch,
        "tqdm": tqdm.tqdm,
        "COCO": COCO,
        "COCOeval": KeepCOCOeval,
        "maskUtils": mask_utils,
        "COCOEvalCap": KeepCOCOEvalCap,
    }
    utils_tree = ast.parse((root / "eval" / "utils.py").read_text())
    body = [n for n in utils_tree.body if getattr(n, "name", None) == "compute_iou"]
    tree = ast.parse((root / "eval" / "gcg" / "evaluate.py").read_text())
    returns = {"evaluate_mask_miou": "mean_miou", "evaluate_recall_with_mapping": "recall"}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name not in {
            "get_bert_embedding",
            "text_similarity_bert",
        }:
            if node.name in returns:
                node.body.append(ast.Return(value=ast.Name(id=returns[node.name], ctx=ast.Load())))
            body.append(node)
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    exec(compile(module, str(root / "eval" / "gcg" / "evaluate.py"), "exec"), ns)
    ns["text_similarity_bert"] = lambda a, b: float(similarity([a], [b])[0, 0])
    for name, key in (("evaluate_mask_miou", "miou"), ("evaluate_recall_with_mapping", "recall")):
        fn = ns[name]
        ns[name] = lambda *a, _fn=fn, _key=key, **k: RESULTS.__setitem__(_key, float(_fn(*a, **k)))
    return ns


def run_glamm(root: Path, cases: list[dict], similarity) -> dict:
    RESULTS.clear()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gt").mkdir()
        (tmp / "pred").mkdir()
        write_inputs(cases, tmp / "gt", tmp / "pred")
        ns = load_glamm(root, similarity)
        argv, cwd = sys.argv, os.getcwd()
        sys.argv = ["evaluate.py", "--split", "val", "--prediction_dir_path", str(tmp / "pred")]
        sys.argv += ["--gt_dir_path", str(tmp / "gt")]
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ns["main"]()
        finally:
            sys.argv = argv
            os.chdir(cwd)
    return {
        "ap50": RESULTS["ap_stats"][1],
        "miou": RESULTS["miou"],
        "recall": RESULTS["recall"],
        "meteor": RESULTS["captions"]["METEOR"],
        "cider": RESULTS["captions"]["CIDEr"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--glamm", default=os.environ.get("GLAMM_ROOT"), help="groundingLMM checkout")
    args = parser.parse_args()
    if not args.glamm:
        parser.error("give --glamm (or GLAMM_ROOT)")
    from x2sam_lightning.metrics.phrase_similarity import ConstantPhraseSimilarity, LexicalPhraseSimilarity

    cases = gcg_cases()
    root = Path(args.glamm)
    data = {
        "scorer": "mbzuai-oryx/groundingLMM eval/gcg/evaluate.py::main (COCOeval segm, COCOEvalCap, "
        "evaluate_mask_miou, evaluate_recall_with_mapping)",
        "shape": [H, W],
        "cases": cases,
        "lexical": run_glamm(root, cases, LexicalPhraseSimilarity()),
        "constant": run_glamm(root, cases, ConstantPhraseSimilarity(1.0)),
        "perfect_only": run_glamm(root, cases[:1], LexicalPhraseSimilarity()),
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / "gcg_glamm.json").write_text(json.dumps(data, indent=1) + "\n")
    print("wrote", FIXTURES / "gcg_glamm.json")


if __name__ == "__main__":
    main()
