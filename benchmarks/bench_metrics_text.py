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

Without a checkout (or with ``--ours-only``) only our metrics are timed, and the result says so. Timing rules
and the meaning of core / end-to-end: ``benchmarks/_metric_timing.py`` (LISA's and ReLA's evaluation loops
take the tensors a data loader yields, so neither side reads a file and end-to-end equals core; GLaMM's
reads COCO json files: end to end, both sides read the ground truth from them). One thread. Writes
``benchmarks/results/metrics_text.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metrics" / "reference"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _metric_timing as timing  # noqa: E402

from x2sam_lightning.metrics.gcg import GCGMetric  # noqa: E402
from x2sam_lightning.metrics.grefcoco import GRefCOCOIoU  # noqa: E402
from x2sam_lightning.metrics.phrase_similarity import LexicalPhraseSimilarity  # noqa: E402
from x2sam_lightning.metrics.referring import ReferringIoU  # noqa: E402

H, W = 480, 640
N_REF, BATCH = 1500, 50
N_GCG = 200
DATE = "2026-11-29"
ROUNDS = 3


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


def bench_referring(lisa: Path | None, rela: Path | None) -> list[dict]:
    pred, gt = referring_inputs()
    batches = N_REF // BATCH

    def ours_lisa():
        m = ReferringIoU()
        for _ in range(batches):
            m.update(pred, gt)
        out = m.compute()
        return float(out["ciou"]), float(out["giou"])

    def ours_rela():
        m = GRefCOCOIoU()
        for _ in range(batches):
            m.update(pred, gt)
        out = m.compute()
        return float(out["ciou"]), float(out["giou"])

    lisa_fns = {"core_ours": ours_lisa}
    if lisa is not None:
        import torch.distributed as dist

        if not dist.is_initialized():
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
            dist.init_process_group("gloo", rank=0, world_size=1)
        ns_batches = [{"pred": pred, "gt": gt.long()}] * batches

        def official():
            ref_batches = [{"images": torch.zeros(1), "images_clip": torch.zeros(1), **b} for b in ns_batches]
            run_validate(lisa, ref_batches)

        lisa_fns["core_official"] = official
    seconds, _ = timing.time_interleaved(lisa_fns, ROUNDS)
    scorer = "dvlab-research/LISA `train_ds.py::validate` (CPU tensors)" if lisa else "absent: ours only"
    rows = [timing.row("cIoU/gIoU (LISA)", f"{N_REF} masks {H}x{W}", scorer, seconds, e2e="= core")]
    rela_fns = {"core_ours": ours_rela}
    extra = {}
    if rela is not None:
        official, official_loop = rela_official(rela, pred, gt)
        rela_fns |= {"core_official": official, "official_iou_loop": official_loop}
    seconds, _ = timing.time_interleaved(rela_fns, ROUNDS)
    if "official_iou_loop" in seconds:
        extra["official_iou_loop_s"] = min(seconds.pop("official_iou_loop"))
    scorer = "henghuiding/ReLA `ReferEvaluator` process + evaluate" if rela else "absent: ours only"
    rows.append(
        timing.row("gRefCOCO (ReLA)", f"{N_REF} masks {H}x{W}", scorer, seconds, e2e="= core", **extra)
    )
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


def rela_official(root: Path, pred: torch.Tensor, gt: torch.Tensor):
    """ReLA's evaluator on the referring cases (2-channel logits, as its model gives them), and its per-sample
    IoU loop alone."""
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
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()

    p_np, g_np = pred.numpy().astype(np.int8), gt.numpy().astype(np.int8)

    def official_loop():
        for i in range(N_REF):
            ns["computeIoU"](p_np[i % pool], g_np[i % pool])

    return official, official_loop


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
    from pycocotools import mask as mask_utils

    images = gcg_inputs()

    def ours(gt_of) -> float:
        m = GCGMetric(similarity=LexicalPhraseSimilarity(), captions=False)
        for i in range(0, N_GCG, 8):
            chunk = images[i : i + 8]
            m.update(
                [c["pred"] for c in chunk],
                [gt_of(c) for c in chunk],
                [c["pred_phrases"] for c in chunk],
                [c["gt_phrases"] for c in chunk],
                image_ids=[c["image_id"] for c in chunk],
            )
        out = m.compute()
        return float(out["miou"]), float(out["recall"])

    tmp = tempfile.TemporaryDirectory()
    gt_dir = Path(tmp.name) / "gt"
    (gt_dir).mkdir()
    (Path(tmp.name) / "pred").mkdir()
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
    write_gcg_inputs(cases, gt_dir, Path(tmp.name) / "pred")
    mask_gt_path, cap_gt_path = gt_dir / "val_gcg_coco_mask_gt.json", gt_dir / "val_gcg_coco_caption_gt.json"

    def read_gt_masks():
        data = json.loads(mask_gt_path.read_text())
        per_image: dict[int, list] = {}
        for ann in data["annotations"]:
            per_image.setdefault(ann["image_id"], []).append(ann["segmentation"])
        return {
            iid: torch.from_numpy(mask_utils.decode(segs).transpose(2, 0, 1)).bool()
            for iid, segs in per_image.items()
        }

    gt_masks_cache: dict = {}

    def e2e_ours():
        gt_masks_cache.clear()
        gt_masks_cache.update(read_gt_masks())
        return ours(lambda c: gt_masks_cache[c["image_id"]])

    fns = {"core_ours": lambda: ours(lambda c: c["gt"]), "e2e_ours": e2e_ours}
    if glamm is not None:
        import make_gcg_fixtures as gfx

        ns = gfx.load_glamm(glamm, LexicalPhraseSimilarity())
        parsed = {"mask": json.loads(mask_gt_path.read_text()), "cap": json.loads(cap_gt_path.read_text())}

        def core_official():
            gts = []
            for key in ("mask", "cap"):
                coco = ns["COCO"]()
                coco.dataset = parsed[key]
                coco.createIndex()
                gts.append(coco)
            return run_glamm_masks(ns, images, *gts)

        def e2e_official():
            return run_glamm_masks(ns, images, ns["COCO"](str(mask_gt_path)), ns["COCO"](str(cap_gt_path)))

        fns |= {"core_official": core_official, "e2e_official": e2e_official}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        seconds, values = timing.time_interleaved({k: fns[k] for k in timing.SIDES if k in fns}, ROUNDS)
    tmp.cleanup()
    for name, value in values.items():
        assert np.allclose(value, values["core_ours"], atol=1e-6), (name, values)
    scorer = "mbzuai-oryx/groundingLMM `eval/gcg/evaluate.py` (COCOeval AP, mIoU, recall)"
    return timing.row(
        "GCG mask AP50 + mIoU + recall (GLaMM)",
        f"{N_GCG} images {H}x{W}, 2-6 masks each",
        scorer if glamm else "absent: ours only",
        seconds,
        values=values,
    )


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


def run_glamm_masks(ns: dict, images: list[dict], coco_gt, coco_cap_gt) -> tuple[float, float]:
    """The mask half of GLaMM's ``main()`` (its calls): the predicted masks RLE-encoded as its inference script
    saves them, COCOeval AP, ``evaluate_mask_miou``, ``evaluate_recall_with_mapping`` (predictions handed over
    in memory: ``loadRes`` takes lists)."""
    from pycocotools import mask as mask_utils

    def rle(m):
        out = mask_utils.encode(np.asfortranarray(m))
        out["counts"] = out["counts"].decode()
        return out

    coco_pred, cap_pred = [], []
    for c in images:
        iid = c["image_id"]
        cap_pred.append({"image_id": iid, "caption": "x", "labels": c["pred_phrases"]})
        coco_pred += [
            {"image_id": iid, "category_id": 1, "segmentation": rle(m), "score": 1.0}
            for m in c["pred"].numpy().astype(np.uint8)
        ]
    ids = [c["image_id"] for c in images]
    coco_eval = ns["COCOeval"](coco_gt, coco_gt.loadRes(json.loads(json.dumps(coco_pred))), "segm")
    coco_eval.params.catIds = [1]
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    gfx = sys.modules["make_gcg_fixtures"]
    ns["evaluate_mask_miou"](coco_gt, ids, json.loads(json.dumps(coco_pred)))
    ns["evaluate_recall_with_mapping"](coco_gt, coco_cap_gt, ids, coco_pred, cap_pred, 0.5, 0.5)
    return gfx.RESULTS["miou"], gfx.RESULTS["recall"]


def main() -> None:
    global N_REF, N_GCG, ROUNDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lisa", default=os.environ.get("LISA_ROOT"))
    parser.add_argument("--rela", default=os.environ.get("RELA_ROOT"))
    parser.add_argument("--glamm", default=os.environ.get("GLAMM_ROOT"))
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10x fewer masks and images")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per side (default 3, quick 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.quick:
        N_REF, N_GCG = N_REF // 10, N_GCG // 10
    ROUNDS = args.rounds or (1 if args.quick else 3)
    torch.set_num_threads(1)
    paths = {
        k: None if args.ours_only or not getattr(args, k) else Path(getattr(args, k))
        for k in ("lisa", "rela", "glamm")
    }
    load_start = timing.load_average()
    rows = bench_referring(paths["lisa"], paths["rela"]) + [bench_gcg(paths["glamm"])]
    load_end = timing.load_average()
    command = "python benchmarks/bench_metrics_text.py" + (" --quick" if args.quick else "")
    command += f" --rounds {args.rounds}" if args.rounds else ""
    result = {
        "date": DATE,
        "machine": timing.machine(),
        "command": command,
        "rounds": ROUNDS,
        "load_average": [load_start, load_end],
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics_text.json").write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:  # neither LISA's nor ReLA's loop reads a file: end to end is core
        if row.get("e2e") == "= core":
            row |= {
                f"e2e_{k[5:]}": v
                for k, v in row.items()
                if k.startswith("core_") and not k.endswith("rounds_s")
            }
    lines = [
        "# Referring / gRefCOCO / GCG metrics vs official scorers",
        "",
        f"Date {DATE}; machine: {result['machine']}. Command: `{command} --lisa ... --rela ... --glamm ...`. "
        + timing.method(ROUNDS, load_start, load_end)
        + " LISA's and ReLA's evaluation loops take the tensors a data loader yields, so neither side reads a "
        "file there and end-to-end equals core.",
        "",
        *timing.table(rows),
    ]
    rela = rows[1]
    if "official_iou_loop_s" in rela:
        lines += [
            "",
            f"gRefCOCO: ReLA's per-sample IoU loop alone (`computeIoU`, without its evaluator's bookkeeping) takes "
            f"{rela['official_iou_loop_s']:.3f} s, {rela['official_iou_loop_s'] / rela['core_ours_s']:.1f}x ours.",
        ]
    (out / "metrics_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
