"""Write the J / F / J&F reference fixtures by running the official scorers on generated videos.

Scorers (read from local checkouts, never copied into this repository):

* DAVIS-2017 semi-supervised protocol, https://github.com/davisvideochallenge/davis2017-evaluation:
  ``davis2017/evaluation.py::DAVISEvaluation.evaluate`` (task ``semi-supervised``), which calls
  ``davis2017/metrics.py::db_eval_iou`` / ``db_eval_boundary`` and ``davis2017/utils.py::db_statistics``.
  Each case is written as a DAVIS folder (``Annotations/480p/<seq>/*.png`` index maps, empty
  ``JPEGImages`` files that are only counted, ``ImageSets/2017/val.txt``) and a results folder of index-map
  PNGs; the global table is formed as ``evaluation_method.py`` does (``(mean J-M + mean F-M) / 2`` and
  the means of the per-object lists; that script itself only adds pandas printing). The YouTube-VOS
  seen/unseen split is the mean of the official per-object ``M_per_object`` values over each split.
* Referring-VOS protocol, MeViS https://github.com/henghuiding/MeViS: ``tools/eval_mevis.py`` (run as a
  script; ``eval_queue`` takes ``db_eval_iou(...).mean()`` and ``db_eval_boundary(...).mean()`` over all
  frames of each expression, then J, F, J&F over expressions), with ``tools/metrics.py`` (identical to
  the DAVIS ``metrics.py``). Cases are written as its ``meta_expressions.json``, ``mask_dict.json``
  (COCO RLE per frame, None where the object is absent) and 0/255 prediction PNGs.

Neither needs patching on numpy 2. Extra packages for running them (not needed by the metrics):
``opencv-python-headless scikit-image pillow tqdm``.

Regenerate (from the repository root)::

    git clone https://github.com/davisvideochallenge/davis2017-evaluation /tmp/refs/davis
    git clone https://github.com/henghuiding/MeViS /tmp/refs/mevis
    python tests/metrics/reference/make_jf_fixtures.py --davis /tmp/refs/davis --mevis /tmp/refs/mevis

(or set ``DAVIS_EVAL_ROOT`` / ``MEVIS_ROOT``). Writes ``tests/fixtures/metrics/jf_davis.json`` and
``tests/fixtures/metrics/jf_referring.json``: the cases (uint8 arrays, zlib + base64) and the numbers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"


def pack(array: np.ndarray) -> dict:
    """uint8 array -> JSON-able dict (shape + zlib/base64 bytes)."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(data.shape), "data": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode()}


def unpack(obj: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(obj["data"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(obj["shape"]).copy()


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def jitter(mask: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Flip pixels next to the boundary with probability p (ragged predicted boundaries)."""
    edge = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
    return mask ^ (edge & (rng.random(mask.shape) < p))


def davis_cases(rng: np.random.Generator) -> list[dict]:
    """Videos as index maps (T, H, W): gt and prediction, plus per-object unseen flags."""
    cases = []

    def moving(h, w, t_len, n_obj, start=None, stop=None):
        lab = np.zeros((t_len, h, w), np.uint8)
        for k in range(n_obj):
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.2) * w
            vy, vx = rng.uniform(-2, 2), rng.uniform(-3, 3)
            for t in range(t_len):
                if start and t < start.get(k + 1, 0) or stop and t >= stop.get(k + 1, t_len):
                    continue
                lab[t][ellipse(h, w, cy + vy * t, cx + vx * t, ry, rx)] = k + 1
        return lab

    def perturb(lab, n_obj, shift=(2, 3), p=0.3):
        out = np.zeros_like(lab)
        for k in range(1, n_obj + 1):
            for t in range(lab.shape[0]):
                m = np.roll(lab[t] == k, shift, (0, 1))
                out[t][jitter(m, rng, p)] = k
        return out

    # perfect prediction
    gt = moving(120, 200, 8, 2)
    cases.append({"name": "perfect", "gt": gt, "pred": gt.copy(), "unseen": [False, True]})
    # object 1 missing from the prediction (zero-padded by the scorer), object 2 shifted
    gt = moving(120, 200, 9, 2)
    pred = perturb(gt, 2)
    pred[pred == 1] = 0
    cases.append({"name": "missing_object", "gt": gt, "pred": pred, "unseen": [True, False]})
    # object 2 appears late, object 3 vanishes; false positives before/after
    gt = moving(96, 160, 10, 3, start={2: 4}, stop={3: 6})
    pred = perturb(gt, 3, shift=(1, -2))
    pred[1:3][ellipse(96, 160, 20, 20, 8, 10)[None].repeat(2, 0)] = 2
    pred[7:9][ellipse(96, 160, 70, 120, 6, 9)[None].repeat(2, 0)] = 3
    cases.append({"name": "late_and_vanishing", "gt": gt, "pred": pred, "unseen": [False, False, True]})
    # one-pixel objects, at the image corner and borders (seg2bmap's last-row/column rule)
    h, w, t_len = 240, 427, 7
    gt = np.zeros((t_len, h, w), np.uint8)
    pred = np.zeros_like(gt)
    for t in range(t_len):
        gt[t, h - 1, w - 1] = 1
        gt[t, 0, 5 + t] = 2
        gt[t, 100, w - 1] = 3
        pred[t, h - 1, w - 1 - (t % 3)] = 1
        if t % 2:
            pred[t, 0, 5 + t] = 2
        pred[t, 100 + t, w - 1 - t] = 3
    cases.append({"name": "one_pixel", "gt": gt, "pred": pred, "unseen": [True, True, False]})
    # full DAVIS resolution (radius 8), objects touching the borders, ragged boundaries
    h, w, t_len = 480, 854, 5
    gt = np.zeros((t_len, h, w), np.uint8)
    for t in range(t_len):
        gt[t][ellipse(h, w, 470, 100 + 10 * t, 80, 120)] = 1
        gt[t][ellipse(h, w, 200, 850, 120, 60 + 5 * t)] = 2
        gt[t, :30, 300:500] = 3
    pred = perturb(gt, 3, shift=(3, -4), p=0.5)
    cases.append({"name": "davis_resolution", "gt": gt, "pred": pred, "unseen": [False, True, False]})
    # a 300-frame video: the official decay bins wrap in uint8 (its decay is NaN, so it is kept out of "all")
    h, w, t_len = 16, 20, 300
    gt = np.zeros((t_len, h, w), np.uint8)
    pred = np.zeros_like(gt)
    for t in range(t_len):
        gt[t, 3:11, 4 + t % 5 : 12 + t % 5] = 1
        if rng.random() < 0.7:
            pred[t, 3 + (t % 3) : 11, 5 : 13 + t % 4] = 1
    cases.append({"name": "long_video", "gt": gt, "pred": pred, "unseen": [True]})
    return cases


def run_davis(davis_root: Path, cases: list[dict]) -> dict:
    sys.path.insert(0, str(davis_root))
    from davis2017.evaluation import DAVISEvaluation  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        root, res = Path(tmp) / "DAVIS", Path(tmp) / "results"
        (root / "ImageSets" / "2017").mkdir(parents=True)
        (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(c["name"] for c in cases) + "\n")
        for case in cases:
            for sub, key in ((root / "Annotations" / "480p", "gt"), (res, "pred")):
                (sub / case["name"]).mkdir(parents=True)
                for t, frame in enumerate(case[key]):
                    Image.fromarray(frame).save(sub / case["name"] / f"{t:05d}.png")
            (root / "JPEGImages" / "480p" / case["name"]).mkdir(parents=True)
            for t in range(len(case["gt"])):
                (root / "JPEGImages" / "480p" / case["name"] / f"{t:05d}.jpg").touch()
        # per case (each is one video) and all together
        per_case = {}
        for case in cases:
            ev = DAVISEvaluation(
                davis_root=str(root), task="semi-supervised", gt_set="val", sequences=case["name"]
            )
            per_case[case["name"]] = table(ev.evaluate(str(res)), cases)
        names = [c["name"] for c in cases if c["name"] != "long_video"]
        ev = DAVISEvaluation(davis_root=str(root), task="semi-supervised", gt_set="val", sequences=names)
        everything = table(ev.evaluate(str(res)), cases)
    return {"per_video": per_case, "all": everything, "all_excludes": ["long_video"]}


def table(metrics_res: dict, cases: list[dict]) -> dict:
    j, f = metrics_res["J"], metrics_res["F"]
    out = {
        "J&F-Mean": (np.mean(j["M"]) + np.mean(f["M"])) / 2.0,
        "J-Mean": np.mean(j["M"]),
        "J-Recall": np.mean(j["R"]),
        "J-Decay": np.mean(j["D"]),
        "F-Mean": np.mean(f["M"]),
        "F-Recall": np.mean(f["R"]),
        "F-Decay": np.mean(f["D"]),
    }
    unseen = {f"{c['name']}_{i + 1}": u for c in cases for i, u in enumerate(c["unseen"])}
    for name, flag in (("seen", False), ("unseen", True)):
        for key, res in (("J", j), ("F", f)):
            vals = [v for obj, v in res["M_per_object"].items() if unseen[obj] == flag]
            if vals:
                out[f"{key}-Mean-{name}"] = float(np.mean(vals))
    return {k: float(v) for k, v in out.items()}


def referring_cases(rng: np.random.Generator) -> list[dict]:
    """Videos with object tracks (K, T, H, W) and expressions (lists of object ids + a predicted track)."""
    videos = []
    h, w, t_len = 90, 150, 8
    objs = np.zeros((3, t_len, h, w), np.uint8)
    for t in range(t_len):
        objs[0, t][ellipse(h, w, 40, 30 + 4 * t, 20, 15)] = 1
        if t >= 3:  # appears late
            objs[1, t][ellipse(h, w, 60, 110, 15, 25)] = 1
        if t < 5:  # vanishes
            objs[2, t, 80:, 140:] = 1
    preds = np.zeros((5, t_len, h, w), np.uint8)
    preds[0] = objs[0]  # perfect
    preds[1] = np.roll(objs[1], (0, 2, 3), (0, 1, 2))  # shifted
    for t in range(t_len):
        preds[2, t] = jitter((objs[0, t] | objs[2, t]).astype(bool), rng, 0.4)
    preds[4, :, 10, 10] = 1  # one-pixel prediction for an absent target
    expressions = [[1], [2], [1, 3], [2], [3]]  # expression 3: empty prediction
    videos.append({"name": "vid_a", "objects": objs, "expressions": expressions, "preds": preds})
    h, w, t_len = 480, 854, 4
    objs = np.zeros((1, t_len, h, w), np.uint8)
    for t in range(t_len):
        objs[0, t][ellipse(h, w, 240, 400 + 20 * t, 150, 200)] = 1
        objs[0, t, 479, 853] = 1  # one pixel in the corner
    preds = np.stack(
        [np.stack([jitter(np.roll(m, (5, -6), (0, 1)).astype(bool), rng, 0.5) for m in objs[0]])]
    )
    videos.append({"name": "vid_b", "objects": objs, "expressions": [[1]], "preds": preds.astype(np.uint8)})
    return videos


def run_mevis(mevis_root: Path, videos: list[dict]) -> dict:
    import cv2  # noqa: PLC0415
    from pycocotools import mask as cocomask  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        meta, mask_dict, anno = {"videos": {}}, {}, 0
        for vid in videos:
            frames = [f"{t:05d}" for t in range(vid["objects"].shape[1])]
            ids = {}
            for k, track in enumerate(vid["objects"]):
                anno += 1
                ids[k + 1] = anno
                rles = []
                for m in track:
                    if m.any():
                        rle = cocomask.encode(np.asfortranarray(m))
                        rles.append({"size": rle["size"], "counts": rle["counts"].decode()})
                    else:
                        rles.append(None)
                mask_dict[str(anno)] = rles
            exps = {}
            for e, (objs, pred) in enumerate(zip(vid["expressions"], vid["preds"])):
                exps[str(e)] = {"exp": f"expression {e}", "anno_id": [ids[o] for o in objs]}
                out = tmp / "pred" / vid["name"] / str(e)
                out.mkdir(parents=True)
                for name, m in zip(frames, pred):
                    cv2.imwrite(str(out / f"{name}.png"), m * 255)
            meta["videos"][vid["name"]] = {"frames": frames, "expressions": exps}
        (tmp / "meta.json").write_text(json.dumps(meta))
        (tmp / "masks.json").write_text(json.dumps(mask_dict))
        cmd = [
            sys.executable, "eval_mevis.py", "--mevis_exp_path", str(tmp / "meta.json"),
            "--mevis_mask_path", str(tmp / "masks.json"), "--mevis_pred_path", str(tmp / "pred"),
            "--save_name", str(tmp / "out.json"),
        ]  # fmt: skip
        printed = subprocess.run(
            cmd, cwd=mevis_root / "tools", check=True, capture_output=True, text=True
        ).stdout
        per_exp = json.loads((tmp / "out.json").read_text())
    j = np.mean([v[0] for v in per_exp.values()])
    f = np.mean([v[1] for v in per_exp.values()])
    return {
        "J": float(j),
        "F": float(f),
        "J&F": float((j + f) / 2),
        "per_expression": per_exp,
        "printed": printed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--davis", type=Path, default=os.environ.get("DAVIS_EVAL_ROOT"))
    parser.add_argument("--mevis", type=Path, default=os.environ.get("MEVIS_ROOT"))
    args = parser.parse_args()
    if args.davis is None or args.mevis is None:
        parser.error("give --davis and --mevis (or DAVIS_EVAL_ROOT / MEVIS_ROOT)")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2017)

    cases = davis_cases(rng)
    numbers = run_davis(args.davis, cases)
    payload = {
        "scorer": "davis2017-evaluation davis2017/evaluation.py::DAVISEvaluation.evaluate (semi-supervised)",
        "cases": [
            {"name": c["name"], "gt": pack(c["gt"]), "pred": pack(c["pred"]), "unseen": c["unseen"]}
            for c in cases
        ],
        **numbers,
    }
    (FIXTURES / "jf_davis.json").write_text(json.dumps(payload, indent=1))

    videos = referring_cases(rng)
    numbers = run_mevis(args.mevis, videos)
    payload = {
        "scorer": "MeViS tools/eval_mevis.py (db_eval_iou / db_eval_boundary mean over frames per expression)",
        "videos": [
            {
                "name": v["name"],
                "objects": pack(v["objects"]),
                "expressions": v["expressions"],
                "preds": pack(v["preds"]),
            }
            for v in videos
        ],
        **numbers,
    }
    (FIXTURES / "jf_referring.json").write_text(json.dumps(payload, indent=1))
    print("referring (MeViS scorer):", numbers["printed"])


if __name__ == "__main__":
    main()
