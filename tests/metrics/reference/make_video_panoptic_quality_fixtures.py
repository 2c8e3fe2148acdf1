"""Write the VPQ fixtures with VIPSeg's official VPQ scorer.

Scorer: github.com/VIPSeg-Dataset/VIPSeg-Dataset, ``ClipPanoFCN/eval_vpq_vspw.py``, functions
``vpq_compute_single_core(categories, nframes, gt_pred_set)`` (per video and window size) and
``PQStat.pq_average``; VPQ is the mean over ``nframes in [1, 2, 4, 6, 8]`` as in its ``main``. Each video is
written in the scorer's input format (per-frame RGB-encoded PNG id maps, per-frame ``segments_info`` with
the segments present in that frame, gt ``area`` = pixel count) and the numbers go to
``tests/fixtures/metrics/video_panoptic_quality.json``.

Regenerate (needs a VIPSeg-Dataset checkout and tqdm; the scorer's code is not part of this repository)::

    python tests/metrics/reference/make_video_panoptic_quality_fixtures.py --vipseg /path/to/VIPSeg-Dataset
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

THINGS = [1, 2, 3]
STUFFS = [7, 8]
WINDOWS = [1, 2, 4, 6, 8]
OUT = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "video_panoptic_quality.json"
H, W = 10, 14


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    return np.stack([(id_map // 256**c) % 256 for c in range(3)], axis=-1).astype(np.uint8)


def random_video(rng: np.random.Generator, t: int, n_things: int, crowd: int, void: bool) -> tuple:
    """Ground-truth tubes: two stuff regions, moving thing boxes that appear late / vanish, crowd, void."""
    ids = np.zeros((t, H, W), dtype=np.int64)
    cut = int(rng.integers(3, H - 3))
    ids[:, :cut], ids[:, cut:] = 1, 2
    segs = [
        {"id": 1, "category_id": STUFFS[0], "iscrowd": 0},
        {"id": 2, "category_id": STUFFS[1], "iscrowd": 0},
    ]
    for k in range(n_things + crowd):
        start, stop = int(rng.integers(0, max(1, t // 2))), int(rng.integers(t // 2 + 1, t + 1))
        y, x = int(rng.integers(0, H - 3)), int(rng.integers(0, W - 4))
        bh, bw, vx = int(rng.integers(2, 5)), int(rng.integers(2, 6)), int(rng.integers(-1, 2))
        sid = 10 + k
        for f in range(start, stop):
            xf = int(np.clip(x + vx * (f - start), 0, W - 2))
            ids[f, y : y + bh, xf : xf + bw] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(THINGS)), "iscrowd": int(k >= n_things)})
    if void:
        for f in range(t):
            if rng.random() < 0.6:
                y, x = int(rng.integers(0, H - 2)), int(rng.integers(0, W - 2))
                ids[f, y : y + 2, x : x + 3] = 0
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segs if s["id"] in present]


def perturb(rng: np.random.Generator, ids: np.ndarray, segs: list[dict], strength: float) -> tuple:
    """Predicted tubes: renumbered, jittered per frame, id switches, spurious tubes, relabelled tubes."""
    t = ids.shape[0]
    pred = np.where(ids > 0, ids * 7 + 100, 0)
    cats = {s["id"] * 7 + 100: s["category_id"] for s in segs}
    if strength > 0:
        for f in range(t):
            if rng.random() < 0.4 * strength:
                pred[f] = np.roll(pred[f], int(rng.integers(-1, 2)), axis=int(rng.integers(2)))
        things = [s["id"] * 7 + 100 for s in segs if s["category_id"] in THINGS]
        if things:  # an id switch: the tube continues under a new id
            sid, f0 = int(rng.choice(things)), int(rng.integers(1, max(2, t)))
            pred[f0:][pred[f0:] == sid] = 900
            cats[900] = cats[sid]
        for _ in range(int(2 * strength)):
            f0, y, x = int(rng.integers(0, t)), int(rng.integers(0, H - 2)), int(rng.integers(0, W - 2))
            new = int(rng.integers(1000, 2000))
            pred[f0 : f0 + int(rng.integers(1, 4)), y : y + 3, x : x + 3] = new
            cats[new] = int(rng.choice(THINGS + STUFFS))
        for sid in list(cats):
            if rng.random() < 0.15 * strength:
                cats[sid] = int(rng.choice(THINGS + STUFFS))
    present = [int(i) for i in np.unique(pred) if i != 0]
    return pred, [{"id": i, "category_id": cats[i]} for i in present]


def make_cases(rng: np.random.Generator) -> list[dict]:
    def video(pred, pred_segs, gt, gt_segs):
        return {
            "pred": pred.tolist(),
            "target": gt.tolist(),
            "pred_segments": pred_segs,
            "target_segments": gt_segs,
        }

    cases = []
    gt, segs = random_video(rng, 9, 3, 0, False)
    cases.append({"name": "perfect", "videos": [video(*perturb(rng, gt, segs, 0.0), gt, segs)]})
    gt, segs = random_video(rng, 8, 2, 1, True)
    cases.append({"name": "empty_prediction", "videos": [video(np.zeros_like(gt), [], gt, segs)]})
    # an object that appears late and vanishes, an id switch, and a one-pixel object
    gt = np.ones((10, H, W), dtype=np.int64)
    gt[3:7, 2:6, 2:6] = 10
    gt[:, 8, 10] = 11
    segs = [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 10, "category_id": 1, "iscrowd": 0},
        {"id": 11, "category_id": 2, "iscrowd": 0},
    ]
    pred = gt.copy()
    pred[5:][pred[5:] == 10] = 12
    pred_segs = [{"id": 1, "category_id": 7}, {"id": 10, "category_id": 1}, {"id": 11, "category_id": 2}]
    pred_segs.append({"id": 12, "category_id": 1})
    cases.append({"name": "late_vanish_switch_one_pixel", "videos": [video(pred, pred_segs, gt, segs)]})
    # two crowd tubes of one category entering in different frames, predictions on them and on void
    gt = np.ones((8, H, W), dtype=np.int64)
    gt[:, :, 7:] = 2
    gt[2:, 1:5, 1:5], gt[:, 5:9, 1:5], gt[:, 1:4, 9:13] = 20, 21, 0
    segs = [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 2, "category_id": 8, "iscrowd": 0},
        {"id": 20, "category_id": 3, "iscrowd": 1},
        {"id": 21, "category_id": 3, "iscrowd": 1},
    ]
    pred = np.where(gt == 0, 2, gt)
    pred[(gt == 20) | (gt == 21)] = 0
    pred[2:, 1:5, 1:6], pred[:, 5:9, 1:6], pred[:, 1:4, 8:13] = 30, 31, 32
    pred_segs = [
        {"id": 1, "category_id": 7},
        {"id": 2, "category_id": 8},
        {"id": 30, "category_id": 3},
        {"id": 31, "category_id": 3},
        {"id": 32, "category_id": 1},
    ]
    cases.append({"name": "crowd_and_void", "videos": [video(pred, pred_segs, gt, segs)]})
    videos = []
    for t in (3, 6, 9, 10):
        gt, segs = random_video(
            rng, t, int(rng.integers(1, 4)), int(rng.integers(0, 2)), bool(rng.random() < 0.7)
        )
        videos.append(video(*perturb(rng, gt, segs, float(rng.uniform(0.5, 1.5))), gt, segs))
    cases.append({"name": "random_set", "videos": videos})
    return cases


def load_scorer(root: Path):
    spec = importlib.util.spec_from_file_location("eval_vpq_vspw", root / "ClipPanoFCN" / "eval_vpq_vspw.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score(scorer, case: dict) -> dict:
    categories = {c: {"id": c, "isthing": int(c in THINGS)} for c in THINGS + STUFFS}
    expected: dict = {"windows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = []
        for v, vid in enumerate(case["videos"]):
            gt, pred = np.asarray(vid["target"]), np.asarray(vid["pred"])
            frames = []
            for f in range(gt.shape[0]):
                gt_png, pred_png = Path(tmp, f"gt_{v}_{f}.png"), Path(tmp, f"pred_{v}_{f}.png")
                Image.fromarray(id2rgb(gt[f])).save(gt_png)
                Image.fromarray(id2rgb(pred[f])).save(pred_png)
                gt_info = [dict(s, area=int((gt[f] == s["id"]).sum())) for s in vid["target_segments"]]
                gt_json = {"segments_info": [s for s in gt_info if s["area"] > 0]}
                present = set(np.unique(pred[f]).tolist())
                pred_json = {"segments_info": [dict(s) for s in vid["pred_segments"] if s["id"] in present]}
                frames.append((gt_json, pred_json, str(gt_png), str(pred_png), {"file_name": gt_png.name}))
            sets.append(frames)
        vpq = {"": [], "_th": [], "_st": []}
        for nframes in WINDOWS:
            stat = scorer.PQStat()
            with contextlib.redirect_stdout(io.StringIO()):
                for frames in sets:
                    stat += scorer.vpq_compute_single_core(categories, nframes, frames)
            entry: dict = {"stats": {}}
            for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
                try:
                    res, _ = stat.pq_average(categories, isthing=isthing)
                except ZeroDivisionError:
                    res = {"pq": None, "sq": None, "rq": None}
                for key in ("pq", "sq", "rq"):
                    entry[key + suffix] = None if res[key] is None else float(res[key])
                vpq[suffix].append(entry["pq" + suffix])
            for c in categories:
                s = stat[c]
                entry["stats"][str(c)] = {
                    "iou": float(s.iou),
                    "tp": int(s.tp),
                    "fp": int(s.fp),
                    "fn": int(s.fn),
                }
            expected["windows"][str(nframes)] = entry
    for suffix, values in vpq.items():  # main(): sum(vpq_all) / len(vpq_all) (x100 there)
        expected["vpq" + suffix] = None if None in values else sum(values) / len(values)
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--vipseg", type=Path, required=True, help="VIPSeg-Dataset checkout (repository root)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    scorer = load_scorer(args.vipseg)
    cases = make_cases(np.random.default_rng(0))
    for case in cases:
        case["expected"] = score(scorer, case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"things": THINGS, "stuffs": STUFFS, "windows": WINDOWS, "cases": cases}
    args.out.write_text(json.dumps(payload, separators=(",", ":")))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
