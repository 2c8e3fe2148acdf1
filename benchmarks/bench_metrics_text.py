"""Time cIoU/gIoU (LISA), gRefCOCO (ReLA) and the GCG mask metrics (GLaMM) against the official code.

Inputs: 1,500 RefCOCO-size referring masks (480 x 640, in batches of 50; one in ten a no-target sample for
gRefCOCO) and 200 GCG images of 480 x 640 with 2-6 ground-truth and predicted masks each. Each official
scorer runs on the same cases in its own input format: LISA's ``validate`` (per-image
``intersectionAndUnionGPU`` on CPU tensors), ReLA's ``ReferEvaluator.process`` + ``evaluate`` (2-channel
logits, as its model gives them; its IoU loop alone is timed too), GLaMM's mask part of
``eval/gcg/evaluate.py::main`` (``COCOeval`` AP, ``evaluate_mask_miou``, ``evaluate_recall_with_mapping``
on its RLE JSON files; METEOR / CIDEr are pycocoevalcap in both and not timed). The official functions are
loaded from checkouts by the fixture scripts in ``tests/metrics/reference/``:

    python benchmarks/bench_metrics_text.py --lisa /tmp/refs/LISA --rela /tmp/refs/ReLA \
        --glamm /tmp/refs/groundingLMM

Without a checkout (or with ``--ours-only``) only our metrics are timed, and the result says so. One thread
(``torch.set_num_threads(1)``); our metrics with ``torch.utils.benchmark`` (best of blocked runs), the
official loops once after a warm-up. Writes ``benchmarks/results/metrics_text.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metrics" / "reference"))
sys.path.insert(0, str(ROOT / "src"))

from x2sam_lightning.metrics.gcg import GCGMetric  # noqa: E402
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU  # noqa: E402
from x2sam_lightning.metrics.phrase_similarity import LexicalPhraseSimilarity  # noqa: E402
from x2sam_lightning.metrics.referring import ReferringIoU  # noqa: E402

H, W = 480, 640
N_REF, BATCH = 1500, 50
N_GCG = 200
DATE = "2026-11-25"
MACHINE = f"{os.cpu_count()}-core CPU, 1 thread, 1-min load average {os.getloadavg()[0]:.1f} at start"


def blob(rng: np.random.Generator) -> np.ndarray:
    """An ellipse of random size and place: a RefCOCO-like object mask."""
    yy, xx = np.ogrid[:H, :W]
    cy, cx = rng.uniform(0, H), rng.uniform(0, W)
    ry, rx = rng.uniform(5, H / 3), rng.uniform(5, W / 3)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def referring_inputs(seed: int = 0, pool: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool of ``pool`` (pred, gt) pairs reused cyclically: ``(pool, H, W)`` bool each."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(pool):
        gt = blob(rng) if i % 10 else np.zeros((H, W), dtype=bool)
        pred = np.roll(gt, (int(rng.integers(-20, 21)), int(rng.integers(-20, 21))), axis=(0, 1))
        if i % 10 == 0 and i % 20:
            pred = blob(rng)  # a no-target sample with a false positive
        gts.append(gt)
        preds.append(pred)
    return torch.tensor(np.stack(preds)), torch.tensor(np.stack(gts))


def time_ours(fn, min_run_time: float = 2.0) -> float:
    return (
        benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median
    )


def time_once(fn) -> float:
    fn()  # warm-up (imports, caches)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_referring(lisa: Path | None, rela: Path | None) -> list[dict]:
    pred, gt = referring_inputs()
    batches = N_REF // BATCH

    def ours_lisa():
        m = ReferringIoU()
        for _ in range(batches):
            m.update(pred, gt)
        return m.compute()

    def ours_rela():
        m = GRefCOCOIoU()
        for _ in range(batches):
            m.update(pred, gt)
        return m.compute()

    rows = [{"metric": "cIoU/gIoU (LISA)", "ours_s": time_ours(ours_lisa)}]
    rows.append({"metric": "gRefCOCO (ReLA)", "ours_s": time_ours(ours_rela)})
    if lisa is not None:
        import torch.distributed as dist

        if not dist.is_initialized():
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
            dist.init_process_group("gloo", rank=0, world_size=1)
        ns_batches = [{"pred": pred, "gt": gt.long()}] * batches

        def official():
            ref_batches = [{"images": torch.zeros(1), "images_clip": torch.zeros(1), **b} for b in ns_batches]
            run_validate(lisa, ref_batches)

        rows[0]["official_s"] = time_once(official)
        rows[0]["official"] = "dvlab-research/LISA train_ds.py::validate (CPU tensors)"
    if rela is not None:
        rows[1].update(bench_rela(rela, pred, gt))
    return rows


def run_validate(root: Path, loader: list[dict]) -> None:
    """LISA's validate() on in-memory batches (the fixture script's loader, without re-encoding)."""
    import types

    import make_referring_fixtures as ref
    import torch.distributed as dist

    shim = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    shim.histc = lambda x, **kw: torch.histc(x.float(), **kw)
    ns: dict = {"np": np, "torch": shim, "dist": dist, "Enum": __import__("enum").Enum}
    ref.load_functions(
        root / "utils" / "utils.py", {"Summary", "AverageMeter", "intersectionAndUnionGPU"}, ns
    )
    ref.load_functions(root / "train_ds.py", {"validate"}, ns)
    ns["dict_to_cuda"] = lambda d: d
    ns["tqdm"] = types.SimpleNamespace(tqdm=lambda x: x)

    def model_engine(**d):
        return {"pred_masks": [torch.where(d["pred"], 1.0, -1.0)], "gt_masks": [d["gt"]]}

    model_engine.eval = lambda: None
    writer = types.SimpleNamespace(add_scalar=lambda *a, **k: None)
    with contextlib.redirect_stdout(io.StringIO()):
        ns["validate"](loader, model_engine, 0, writer, types.SimpleNamespace(precision="fp32", local_rank=0))


def bench_rela(root: Path, pred: torch.Tensor, gt: torch.Tensor) -> dict:
    import make_referring_fixtures as ref

    ns = ref.load_rela(root)
    logits = [torch.stack([~p, p]).float() for p in pred]
    pool = len(pred)

    def official():
        ev = ns["ReferEvaluator"]("bench", distributed=False, output_dir=None)
        ev.reset()
        for i in range(N_REF):
            j = i % pool
            inputs = {"image_id": i, "source": "grefcoco", "sentence": {"raw": ""}, "gt_mask_merged": gt[j]}
            inputs["empty"] = bool(gt[j].sum() == 0)
            nt = torch.tensor([0.0, 1.0]) if pred[j].sum() == 0 else torch.tensor([1.0, 0.0])
            ev.process([inputs], [{"ref_seg": logits[j], "nt_label": nt}])
        ev.evaluate()

    p_np, g_np = pred.numpy().astype(np.int8), gt.numpy().astype(np.int8)

    def official_core():
        for i in range(N_REF):
            ns["computeIoU"](p_np[i % pool], g_np[i % pool])

    return {
        "official_s": time_once(official),
        "official_core_s": time_once(official_core),
        "official": "henghuiding/ReLA refer_evaluation.py::ReferEvaluator process+evaluate (core: computeIoU loop)",
    }


def gcg_inputs(seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(20):
        n = int(rng.integers(2, 7))
        gts = [blob(rng) for _ in range(n)]
        preds = [
            np.roll(g, (int(rng.integers(-15, 16)), int(rng.integers(-15, 16))), axis=(0, 1)) for g in gts
        ]
        preds = preds[: int(rng.integers(max(1, n - 2), n + 1))] + [
            blob(rng) for _ in range(int(rng.integers(0, 2)))
        ]
        words = ["man", "dog", "red car", "tree", "white cup", "table", "sky"]
        pool.append(
            {
                "gt": torch.tensor(np.stack(gts)),
                "pred": torch.tensor(np.stack(preds)),
                "gt_phrases": [f"a {words[i % len(words)]}" for i in range(n)],
                "pred_phrases": [f"the {words[i % len(words)]}" for i in range(len(preds))],
            }
        )
    return [dict(pool[i % len(pool)], image_id=i) for i in range(N_GCG)]


def bench_gcg(glamm: Path | None) -> dict:
    images = gcg_inputs()

    def ours():
        m = GCGMetric(similarity=LexicalPhraseSimilarity(), captions=False)
        for i in range(0, N_GCG, 8):
            chunk = images[i : i + 8]
            m.update(
                [c["pred"] for c in chunk],
                [c["gt"] for c in chunk],
                [c["pred_phrases"] for c in chunk],
                [c["gt_phrases"] for c in chunk],
                image_ids=[c["image_id"] for c in chunk],
            )
        return m.compute()

    row = {"metric": "GCG mask AP50 + mIoU + recall (GLaMM)", "ours_s": time_ours(ours)}
    if glamm is None:
        return row
    import make_gcg_fixtures as gfx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gt").mkdir()
        (tmp / "pred").mkdir()
        cases = [
            {
                "image_id": c["image_id"],
                "gt_masks": c["gt"].numpy().astype(np.uint8),
                "pred_masks": c["pred"].numpy().astype(np.uint8),
                "gt_phrases": c["gt_phrases"],
                "pred_phrases": c["pred_phrases"],
                "gt_caption": "x",
                "pred_caption": "x",
            }
            for c in images
        ]
        write_gcg_inputs(cases, tmp / "gt", tmp / "pred")
        ns = gfx.load_glamm(glamm, LexicalPhraseSimilarity())

        def official():
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run_glamm_masks(ns, tmp)

        row["official_s"] = time_once(official)
        row["official"] = (
            "mbzuai-oryx/groundingLMM eval/gcg/evaluate.py (COCOeval AP, evaluate_mask_miou, recall)"
        )
    return row


def write_gcg_inputs(cases: list[dict], gt_dir: Path, pred_dir: Path) -> None:
    """GLaMM's files (as the fixture script writes them) from dense masks."""
    from pycocotools import mask as mask_utils

    def rle(m):
        out = mask_utils.encode(np.asfortranarray(m))
        out["counts"] = out["counts"].decode()
        return out

    images, anns, cap_anns = [], [], []
    for c in cases:
        iid = c["image_id"]
        images.append({"id": iid, "height": H, "width": W})
        for m in c["gt_masks"]:
            seg = rle(m)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": 1, "segmentation": seg,
                         "area": float(mask_utils.area(seg)), "bbox": mask_utils.toBbox(seg).tolist(), "iscrowd": 0})  # fmt: skip
        cap_anns.append({"id": iid, "image_id": iid, "caption": c["gt_caption"], "labels": c["gt_phrases"]})
        pred = {
            "caption": c["pred_caption"],
            "phrases": c["pred_phrases"],
            "pred_masks": [rle(m) for m in c["pred_masks"]],
        }
        (pred_dir / f"{iid}.json").write_text(json.dumps({f"{iid}.jpg": pred}))
    cats = [{"id": 1, "name": "object"}]
    (gt_dir / "val_gcg_coco_mask_gt.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    (gt_dir / "val_gcg_coco_caption_gt.json").write_text(
        json.dumps({"images": images, "annotations": cap_anns})
    )


def run_glamm_masks(ns: dict, tmp: Path) -> None:
    """The mask half of GLaMM's main(): prediction files -> COCO json, AP, mIoU, recall (its calls)."""
    coco_pred, cap_pred = [], []
    ids = [im["id"] for im in json.loads((tmp / "gt" / "val_gcg_coco_caption_gt.json").read_text())["images"]]
    for iid in ids:
        pred = next(iter(json.loads((tmp / "pred" / f"{iid}.json").read_text()).values()))
        cap_pred.append({"image_id": iid, "caption": pred["caption"], "labels": pred["phrases"]})
        coco_pred += [
            {"image_id": iid, "category_id": 1, "segmentation": r, "score": 1.0} for r in pred["pred_masks"]
        ]
    pred_path, cap_path = tmp / "mask_pred.json", tmp / "cap_pred.json"
    pred_path.write_text(json.dumps(coco_pred))
    cap_path.write_text(json.dumps(cap_pred))
    coco_gt = ns["COCO"](str(tmp / "gt" / "val_gcg_coco_mask_gt.json"))
    coco_eval = ns["COCOeval"](coco_gt, coco_gt.loadRes(str(pred_path)), "segm")
    coco_eval.params.catIds = [1]
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    coco_cap_gt = ns["COCO"](str(tmp / "gt" / "val_gcg_coco_caption_gt.json"))
    ns["evaluate_mask_miou"](coco_gt, ids, str(pred_path))
    ns["evaluate_recall_with_mapping"](coco_gt, coco_cap_gt, ids, str(pred_path), str(cap_path), 0.5, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lisa", default=os.environ.get("LISA_ROOT"))
    parser.add_argument("--rela", default=os.environ.get("RELA_ROOT"))
    parser.add_argument("--glamm", default=os.environ.get("GLAMM_ROOT"))
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10x fewer masks and images")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.quick:
        global N_REF, N_GCG
        N_REF, N_GCG = N_REF // 10, N_GCG // 10
    torch.set_num_threads(1)
    paths = {
        k: None if args.ours_only or not getattr(args, k) else Path(getattr(args, k))
        for k in ("lisa", "rela", "glamm")
    }
    rows = bench_referring(paths["lisa"], paths["rela"]) + [bench_gcg(paths["glamm"])]
    for row in rows:
        if "official_s" in row:
            row["speedup"] = row["official_s"] / row["ours_s"]
        else:
            row["official"] = "official code absent locally: ours timed only"
    result = {
        "date": DATE,
        "machine": MACHINE,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "inputs": {
            "referring": f"{N_REF} masks {H}x{W} (batches of {BATCH})",
            "gcg": f"{N_GCG} images {H}x{W}, 2-6 masks each",
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics_text.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Referring / gRefCOCO / GCG metrics vs official scorers ({DATE}, {MACHINE})",
        "",
        f"Inputs: {result['inputs']['referring']}; GCG {result['inputs']['gcg']}. Command: "
        "`python benchmarks/bench_metrics_text.py --lisa ... --rela ... --glamm ...`",
        "",
        "| metric | ours (s) | official (s) | speed-up | official code |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        official = f"{row['official_s']:.3f}" if "official_s" in row else "-"
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        note = row["official"]
        if "official_core_s" in row:
            note += f"; core loop alone {row['official_core_s']:.3f} s ({row['official_core_s'] / row['ours_s']:.1f}x)"
        lines.append(f"| {row['metric']} | {row['ours_s']:.3f} | {official} | {speedup} | {note} |")
    (out / "metrics_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
