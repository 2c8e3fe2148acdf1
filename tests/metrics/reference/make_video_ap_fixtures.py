"""Write the YouTube-VIS video AP and V-VGD AP fixtures by running the official YouTube-VIS scorer.

Scorer: https://github.com/youtubevos/cocoapi, ``PythonAPI/pycocotools/ytvos.py::YTVOS`` (``loadRes``) and
``PythonAPI/pycocotools/ytvoseval.py::YTVOSeval`` (``evaluate``, ``accumulate``, ``summarize``; ``stats``
holds the twelve numbers). Its code is read from a local checkout and never copied into this repository.
Minimal patches, applied in memory when the two modules are loaded, for current numpy / packaging:
``from . import mask`` -> ``from pycocotools import mask`` (the pip pycocotools C masks, same functions),
the matplotlib imports (used only by ``showAnns``) dropped, ``np.float`` -> ``float``, and the float
``num`` of the two ``np.linspace`` calls in ``Params`` wrapped in ``int``.

Cases are written in the scorer's input format: a ground-truth json (``videos``, ``annotations`` with
per-frame COCO RLE ``segmentations`` and ``areas``, None where the object is absent, ``categories``) and
a results json (per-frame RLE for every frame, ``score``, ``category_id``).

V-VGD (X2SAM's video visual-grounded benchmark) has no released scorer; following X-SAM's image VGD
evaluator (``xsam/evaluation/evaluators/img_vgdseg_evaluator.py``: COCO segm AP where each prediction
carries the category of the object its visual prompt was drawn from) it is scored with the same
YouTube-VIS video AP: one predicted track per prompt, labelled with the prompted object's category,
against all annotated tracks; point- and box-prompted predictions are scored separately. The V-VGD cases are
also scored the way X2SAM's own evaluator reports V-VGD (``x2sam/evaluation/evaluators/
vid_vgdseg_evaluator.py`` in github.com/wanghao9610/X2SAM): every frame an image of pycocotools' ``COCOeval``
(``segm``; the pip package), the frame masks of all predicted tracks as its detections (empty ones included:
that evaluator keeps every instance), the tracks present on the frame as its ground truth.

Regenerate (from the repository root)::

    git clone https://github.com/youtubevos/cocoapi /tmp/refs/ytvos
    python tests/metrics/reference/make_video_ap_fixtures.py --ytvos /tmp/refs/ytvos

(or set ``YTVOS_COCOAPI_ROOT``). Writes ``tests/fixtures/metrics/video_ap_ytvis.json`` and
``tests/fixtures/metrics/video_ap_vvgd.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"


def pack(array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return {"shape": list(data.shape), "data": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode()}


def load_scorer(root: Path) -> tuple[type, type]:
    """Load ``ytvos.py`` and ``ytvoseval.py`` with the patches listed in the module docstring."""
    pkg = types.ModuleType("ytvosapi")
    pkg.__path__ = []
    sys.modules["ytvosapi"] = pkg
    classes = []
    for name, cls in (("ytvos", "YTVOS"), ("ytvoseval", "YTVOSeval")):
        src = (root / "PythonAPI" / "pycocotools" / f"{name}.py").read_text()
        src = src.replace("from . import mask as maskUtils", "from pycocotools import mask as maskUtils")
        src = src.replace("import matplotlib.pyplot as plt\n", "")
        src = src.replace("from matplotlib.collections import PatchCollection\n", "")
        src = src.replace("from matplotlib.patches import Polygon\n", "")
        src = src.replace("dtype=np.float)", "dtype=float)")
        src = src.replace("np.round((0.95 - .5) / .05) + 1", "int(np.round((0.95 - .5) / .05) + 1)")
        src = src.replace("np.round((1.00 - .0) / .01) + 1", "int(np.round((1.00 - .0) / .01) + 1)")
        module = types.ModuleType(f"ytvosapi.{name}")
        exec(compile(src, str(root / "PythonAPI" / "pycocotools" / f"{name}.py"), "exec"), module.__dict__)
        sys.modules[f"ytvosapi.{name}"] = module
        classes.append(getattr(module, cls))
    return classes[0], classes[1]


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def moving(h, w, t_len, cy, cx, ry, rx, vy=0.0, vx=0.0, start=0, stop=None) -> np.ndarray:
    track = np.zeros((t_len, h, w), bool)
    for t in range(start, t_len if stop is None else stop):
        track[t] = ellipse(h, w, cy + vy * t, cx + vx * t, ry, rx)
    return track


def video(gt, gt_labels, preds, scores, labels, iscrowd=None) -> dict:
    gt = np.stack(gt) if gt else np.zeros((0,), bool)
    shape = preds[0].shape if preds else gt.shape[1:]
    return {
        "gt": gt.reshape(-1, *shape),
        "gt_labels": list(gt_labels),
        "iscrowd": list(iscrowd or [0] * len(gt_labels)),
        "pred": np.stack(preds).reshape(-1, *shape) if preds else np.zeros((0, *shape), bool),
        "scores": [float(s) for s in scores],
        "labels": list(labels),
    }


def ytvis_cases(rng: np.random.Generator) -> list[dict]:
    h, w, t_len = 40, 60, 6
    vids = []
    # perfect
    a = moving(h, w, t_len, 15, 15, 8, 10, vx=2)
    b = moving(h, w, t_len, 28, 40, 6, 9, vy=-1)
    vids.append(video([a, b], [1, 2], [a, b], [0.9, 0.8], [1, 2]))
    # late and vanishing objects, predictions with false positives outside the gt frames
    a = moving(h, w, t_len, 12, 20, 7, 7, start=3)
    b = moving(h, w, t_len, 26, 40, 8, 8, vx=-2, stop=4)
    pa = moving(h, w, t_len, 12, 21, 7, 7, start=1)
    pb = moving(h, w, t_len, 26, 40, 8, 8, vx=-2)
    vids.append(video([a, b], [1, 1], [pa, pb], [0.7, 0.75], [1, 1]))
    # id switch: two predictions swap objects half way; a weaker correct one; a score tie
    a = moving(h, w, t_len, 12, 12, 7, 8, vx=3)
    b = moving(h, w, t_len, 28, 45, 7, 8, vx=-3)
    s1, s2 = a.copy(), b.copy()
    s1[3:], s2[3:] = b[3:], a[3:]
    vids.append(video([a, b], [2, 2], [s1, s2, a, np.roll(b, 1, 2)], [0.95, 0.6, 0.6, 0.3], [2, 2, 2, 2]))
    # missing predictions for category 3; predictions of category 1 that has no gt here
    a = moving(h, w, t_len, 20, 30, 10, 12)
    vids.append(video([a], [3], [moving(h, w, t_len, 10, 10, 5, 5)], [0.5], [1]))
    # one-pixel objects (one at the frame corner)
    a = np.zeros((t_len, h, w), bool)
    a[:, h - 1, w - 1] = True
    b = np.zeros((t_len, h, w), bool)
    b[:, 5, 5 + np.arange(t_len)] = True
    pb = np.zeros_like(b)
    pb[:4, 5, 5 + np.arange(4)] = True
    vids.append(video([a, b], [2, 2], [a.copy(), pb, np.roll(a, -1, 1)], [0.4, 0.85, 0.2], [2, 2, 2]))
    # empty predictions, and a crowd region with a detection on it
    a = moving(h, w, t_len, 15, 20, 8, 8)
    crowd = np.zeros((t_len, h, w), bool)
    crowd[:, 25:, 35:] = True
    empty = np.zeros((t_len, h, w), bool)
    vids.append(
        video(
            [a, crowd],
            [1, 1],
            [empty, empty, crowd[:, :, :].copy()],
            [0.99, 0.1, 0.65],
            [1, 3, 1],
            iscrowd=[0, 1],
        )
    )
    # many detections of one category (maxDets 1 and 10 matter), jittered masks, random scores
    gts = [moving(h, w, t_len, 10 + 6 * k, 8 + 10 * k, 4, 5, vx=0.5 * k) for k in range(4)]
    preds, scores = [], []
    for k in range(12):
        base = gts[k % 4]
        noise = rng.random(base.shape) < 0.15
        preds.append(np.roll(base, int(rng.integers(-2, 3)), 2) ^ (noise & np.roll(base, 1, 1)))
        scores.append(round(float(rng.random()), 3))
    scores[5] = 0.8  # ties with the first video's second detection (order across videos)
    vids.append(video(gts, [3] * 4, preds, scores, [3] * 12))
    # large frames: small / medium / large objects under the YouTube-VIS area ranges (128², 256²)
    h, w, t_len = 300, 420, 3
    big = moving(h, w, t_len, 150, 200, 145, 160)  # ~73k px
    mid = moving(h, w, t_len, 70, 130, 60, 100, stop=2)  # ~19k px
    small = moving(h, w, t_len, 250, 380, 20, 25, vy=-3)  # ~1.6k px
    preds = [np.roll(big, 6, 2), np.roll(mid, 3, 1), np.roll(small, 2, 1), np.roll(big, 40, 1)]
    vids.append(video([big, mid, small], [1, 2, 1], preds, [0.9, 0.85, 0.55, 0.5], [1, 2, 1, 1]))
    return vids


def vvgd_cases(rng: np.random.Generator) -> list[dict]:
    """One predicted track per prompted object (point and box prompts), labelled with its category."""
    h, w, t_len = 48, 64, 8
    vids = []
    for v in range(5):
        n = 2 + v % 3
        gts, labels = [], []
        for k in range(n):
            start = 0 if k == 0 else int(rng.integers(0, 4))
            stop = None if k != 2 else int(rng.integers(5, 8))
            cy, cx = rng.uniform(10, 38), rng.uniform(10, 54)
            gts.append(
                moving(h, w, t_len, cy, cx, rng.uniform(3, 9), rng.uniform(3, 9), 0.5, -0.5, start, stop)
            )
            labels.append(int(rng.integers(1, 4)))
        if v == 4:  # a one-pixel target
            gts[1] = np.zeros((t_len, h, w), bool)
            gts[1][:, 0, 0] = True
        vid = {"gt": np.stack(gts), "gt_labels": labels, "iscrowd": [0] * n}
        for prompt, quality in (("point", 0.6), ("box", 0.85)):
            preds, scores = [], []
            for k, g in enumerate(gts):
                if rng.random() > quality:
                    other = gts[(k + 1) % n]  # the prompt grounded the wrong object from some frame on
                    cut = int(rng.integers(1, t_len))
                    p = np.concatenate([g[:cut], other[cut:]])
                else:
                    p = np.roll(g, int(rng.integers(-1, 2)), 2)
                preds.append(p)
                scores.append(round(float(rng.uniform(0.2, 1.0)), 4))
            if prompt == "point" and v == 1:  # a prompt with no prediction at all (empty track)
                preds[0] = np.zeros_like(preds[0])
            vid[f"pred_{prompt}"] = np.stack(preds)
            vid[f"scores_{prompt}"] = scores
            vid[f"labels_{prompt}"] = labels
        vids.append(vid)
    return vids


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils  # noqa: PLC0415

    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode()}


def run_ytvoseval(ytvos_cls, eval_cls, vids, key="pred", score_key="scores", label_key="labels") -> dict:
    gt_json = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    results = []
    for vid_id, vid in enumerate(vids, start=1):
        t_len, h, w = vid["gt"].shape[1:]
        files = [f"v{vid_id}/{t:05d}.jpg" for t in range(t_len)]
        gt_json["videos"].append(
            {"id": vid_id, "width": int(w), "height": int(h), "length": t_len, "file_names": files}
        )
        for track, label, crowd in zip(vid["gt"], vid["gt_labels"], vid["iscrowd"]):
            segs = [rle(m) if m.any() else None for m in track]
            gt_json["annotations"].append(
                {
                    "id": len(gt_json["annotations"]) + 1,
                    "video_id": vid_id,
                    "category_id": int(label),
                    "segmentations": segs,
                    "areas": [int(m.sum()) if m.any() else None for m in track],
                    "bboxes": [None] * t_len,
                    "iscrowd": int(crowd),
                    "width": int(w),
                    "height": int(h),
                    "length": t_len,
                }
            )
        for track, score, label in zip(vid[key], vid[score_key], vid[label_key]):
            results.append(
                {
                    "video_id": vid_id,
                    "category_id": int(label),
                    "score": score,
                    "segmentations": [rle(m) for m in track],
                }
            )
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "res.json"
        gt_path.write_text(json.dumps(gt_json))
        res_path.write_text(json.dumps(results))
        with contextlib.redirect_stdout(io.StringIO()):
            gt = ytvos_cls(str(gt_path))
            dt = gt.loadRes(str(res_path))
        out = {}
        for name, vid_ids in [("all", None)] + [(f"video_{i}", [i]) for i in range(1, len(vids) + 1)]:
            ev = eval_cls(gt, dt, "segm")
            if vid_ids is not None:
                ev.params.vidIds = vid_ids
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            out[name] = [float(s) for s in ev.stats]
            if name == "all":
                out["printed"] = printed.getvalue()
    return out


def run_frame_cocoeval(vids, key: str, score_key: str, label_key: str) -> dict:
    """COCO segm AP with every frame of every video an image (X2SAM's V-VGD evaluator)."""
    from pycocotools.coco import COCO  # noqa: PLC0415
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    images, anns, results = [], [], []
    for vid_id, vid in enumerate(vids, start=1):
        t_len, h, w = vid["gt"].shape[1:]
        for t in range(t_len):
            image_id = vid_id * 1000 + t
            images.append({"id": image_id, "height": int(h), "width": int(w)})
            for track, label, crowd in zip(vid["gt"], vid["gt_labels"], vid["iscrowd"]):
                if track[t].any():
                    seg = rle(track[t])
                    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(label),
                                 "segmentation": seg, "area": float(track[t].sum()), "iscrowd": int(crowd),
                                 "bbox": [0.0, 0.0, 1.0, 1.0]})  # fmt: skip
            for track, score, label in zip(vid[key], vid[score_key], vid[label_key]):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label),
                        "segmentation": rle(track[t]),
                        "score": score,
                    }
                )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"all": [float(s) for s in ev.stats], "printed": printed.getvalue()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ytvos", type=Path, default=os.environ.get("YTVOS_COCOAPI_ROOT"))
    args = parser.parse_args()
    if args.ytvos is None:
        parser.error("give --ytvos (or YTVOS_COCOAPI_ROOT)")
    ytvos_cls, eval_cls = load_scorer(args.ytvos)
    rng = np.random.default_rng(2019)
    FIXTURES.mkdir(parents=True, exist_ok=True)

    vids = ytvis_cases(rng)
    stats = run_ytvoseval(ytvos_cls, eval_cls, vids)
    payload = {
        "scorer": "youtubevos/cocoapi PythonAPI/pycocotools/ytvoseval.py::YTVOSeval (stats order of summarize)",
        "videos": [
            {
                "gt": pack(v["gt"]),
                "gt_labels": v["gt_labels"],
                "iscrowd": v["iscrowd"],
                "pred": pack(v["pred"]),
                "scores": v["scores"],
                "labels": v["labels"],
            }
            for v in vids
        ],
        "stats": stats,
    }
    (FIXTURES / "video_ap_ytvis.json").write_text(json.dumps(payload, indent=1))
    print(stats["printed"])

    vids = vvgd_cases(rng)
    payload = {
        "scorer": "ytvoseval (V-VGD: one track per prompt, prompted category)",
        "scorer_frame": "pycocotools COCOeval segm, every frame an image (X2SAM vid_vgdseg_evaluator.py)",
        "videos": [],
        "stats": {},
        "stats_frame": {},
    }
    for prompt in ("point", "box"):
        keys = (f"pred_{prompt}", f"scores_{prompt}", f"labels_{prompt}")
        payload["stats"][prompt] = run_ytvoseval(ytvos_cls, eval_cls, vids, *keys)
        payload["stats_frame"][prompt] = run_frame_cocoeval(vids, *keys)
    for v in vids:
        entry = {"gt": pack(v["gt"]), "gt_labels": v["gt_labels"]}
        for prompt in ("point", "box"):
            entry[f"pred_{prompt}"] = pack(v[f"pred_{prompt}"])
            entry[f"scores_{prompt}"] = v[f"scores_{prompt}"]
        payload["videos"].append(entry)
    (FIXTURES / "video_ap_vvgd.json").write_text(json.dumps(payload, indent=1))
    print({p: payload["stats"][p]["all"][:2] for p in ("point", "box")})


if __name__ == "__main__":
    main()
