"""Time J&F (DAVIS-2017 protocol) and YouTube-VIS video AP against the official scorers on the same inputs.

Inputs (synthetic, realistic sizes):

* J&F: 30 videos x 50 frames x 480 x 854 (DAVIS 480p), 2 objects per video: moving ellipses with wavy
  boundaries, predictions shifted and with a different wobble. Official: ``davis2017-evaluation``
  ``DAVISEvaluation._evaluate_semisupervised`` + ``utils.db_statistics`` on the in-memory masks (the PNG
  reading of ``evaluate`` is not timed). Ours: ``DAVISJandF.update`` per video + ``compute``. The
  referring-VOS protocol runs the same per-frame J / F, so it is not timed separately.
* YouTube-VIS AP: 100 videos x 20 frames x 360 x 640, 2-3 ground-truth tracks and 10 predicted tracks per
  video over 40 categories. Official: ``youtubevos/cocoapi`` ``YTVOS.loadRes`` + ``YTVOSeval.evaluate /
  accumulate / summarize`` from the RLE json it reads (timed without, and separately with, the RLE encoding
  of the predictions it needs). Ours: ``YouTubeVISAveragePrecision.update`` per video + ``compute`` from the
  mask tensors. (V-VGD and image VGD AP run the same code.)

One thread for both (``torch.set_num_threads(1)``); each is run once after a warm-up on the first video,
timed with ``torch.utils.benchmark.Timer`` per video and summed. Results must agree (checked).

    python benchmarks/bench_metrics_video.py --davis /tmp/refs/davis --ytvos /tmp/refs/ytvos [--quick]

(or ``DAVIS_EVAL_ROOT`` / ``YTVOS_COCOAPI_ROOT``; ``--quick``: 3 videos x 20 frames and 10 YT-VIS videos).
Without a checkout the official side is skipped and the result says so. Writes
``benchmarks/results/metrics_video.{json,md}``.
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
from pathlib import Path

import numpy as np
import torch
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metrics" / "reference"))
sys.path.insert(0, str(ROOT / "src"))

from x2sam_lightning.metrics.davis_jf import DAVISJandF  # noqa: E402
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision  # noqa: E402

DATE = "2026-11-25"
MACHINE = f"{os.cpu_count()}-core CPU, 1 thread, 1-min load average {os.getloadavg()[0]:.1f} at start"


def _time(fn) -> float:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).timeit(1).mean


def wavy(h: int, w: int, cy: float, cx: float, r: float, phase: float, amp: float = 0.15) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    ang = np.arctan2(yy - cy, (xx - cx) / 1.4)
    rad = r * (1 + amp * np.sin(5 * ang + phase) + 0.5 * amp * np.sin(11 * ang - phase))
    return ((yy - cy) ** 2 + ((xx - cx) / 1.4) ** 2) < rad**2


def davis_video(
    rng: np.random.Generator, t_len: int, h: int = 480, w: int = 854
) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((2, t_len, h, w), bool)
    pred = np.zeros_like(gt)
    for k in range(2):
        cy, cx, r = rng.uniform(150, 330), rng.uniform(200, 650), rng.uniform(50, 120)
        vy, vx = rng.uniform(-1.5, 1.5), rng.uniform(-3, 3)
        for t in range(t_len):
            y, x = cy + vy * t, cx + vx * t
            gt[k, t] = wavy(h, w, y, x, r, 0.1 * t)
            if rng.random() > 0.05:  # the tracker sometimes loses the object
                pred[k, t] = wavy(h, w, y + rng.normal(0, 3), x + rng.normal(0, 4), r * 0.97, 0.1 * t + 0.8)
    # label-map semantics (no overlap), as DAVIS PNGs
    gt[1] &= ~gt[0]
    pred[1] &= ~pred[0]
    return gt, pred


def bench_jf(davis_root: Path | None, n_videos: int, t_len: int) -> dict:
    rng = np.random.default_rng(0)
    ours_s = official_s = 0.0
    metric = DAVISJandF()
    official = {"J": [], "F": []}
    if davis_root is not None:
        sys.path.insert(0, str(davis_root))
        from davis2017 import utils as davis_utils  # noqa: PLC0415
        from davis2017.evaluation import DAVISEvaluation  # noqa: PLC0415
    for v in range(n_videos):
        gt, pred = davis_video(rng, t_len)
        gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
        if v == 0:  # warm-up
            DAVISJandF().update(pred_t[:, :4], gt_t[:, :4])
        ours_s += _time(lambda pred_t=pred_t, gt_t=gt_t: metric.update(pred_t, gt_t))
        if davis_root is not None:

            def run_official(gt=gt, pred=pred):
                j, f = DAVISEvaluation._evaluate_semisupervised(gt[:, 1:-1], pred[:, 1:-1], None, ("J", "F"))
                for ii in range(gt.shape[0]):
                    official["J"].append(davis_utils.db_statistics(j[ii]))
                    official["F"].append(davis_utils.db_statistics(f[ii]))

            official_s += _time(run_official)
    ours_s += _time(metric.compute)
    result = {k: float(v) for k, v in metric.compute().items()}
    out = {
        "inputs": f"{n_videos} videos x {t_len} frames x 480x854, 2 objects",
        "ours_s": ours_s,
        "ours": result,
    }
    if davis_root is not None:
        jm, fm = np.mean([s[0] for s in official["J"]]), np.mean([s[0] for s in official["F"]])
        out.update(official_s=official_s, speedup=official_s / ours_s, official={"J&F-Mean": (jm + fm) / 2})
        assert abs(out["official"]["J&F-Mean"] - result["J&F-Mean"]) < 1e-4, (out, result)
    return out


def ytvis_video(rng: np.random.Generator, t_len: int, h: int = 360, w: int = 640) -> dict:
    n_gt = int(rng.integers(2, 4))
    gts, gt_labels = [], []
    for _ in range(n_gt):
        cy, cx, r = rng.uniform(60, 300), rng.uniform(80, 560), rng.uniform(15, 90)
        vy, vx = rng.uniform(-2, 2), rng.uniform(-4, 4)
        start = int(rng.integers(0, t_len // 3))
        track = np.zeros((t_len, h, w), bool)
        for t in range(start, t_len):
            track[t] = wavy(h, w, cy + vy * t, cx + vx * t, r, 0.2 * t)
        gts.append(track)
        gt_labels.append(int(rng.integers(1, 41)))
    preds, scores, labels = [], [], []
    for d in range(10):
        g = d % n_gt
        shift = (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))) if d < n_gt else (40 * d, 25 * d)
        preds.append(np.roll(gts[g], shift, (1, 2)))
        scores.append(float(rng.uniform(0.9, 1.0) if d < n_gt else rng.uniform(0.01, 0.5)))
        labels.append(gt_labels[g] if d < 2 * n_gt else int(rng.integers(1, 41)))
    return {
        "gt": np.stack(gts),
        "gt_labels": gt_labels,
        "pred": np.stack(preds),
        "scores": scores,
        "labels": labels,
    }


def bench_ytvis(ytvos_root: Path | None, n_videos: int, t_len: int) -> dict:
    rng = np.random.default_rng(1)
    videos = [ytvis_video(rng, t_len) for _ in range(n_videos)]
    metric = YouTubeVISAveragePrecision()
    ours_s = 0.0
    for i, v in enumerate(videos, start=1):
        args = (
            torch.from_numpy(v["pred"]),
            torch.tensor(v["scores"]),
            torch.tensor(v["labels"]),
            torch.from_numpy(v["gt"]),
            torch.tensor(v["gt_labels"]),
        )
        if i == 1:
            YouTubeVISAveragePrecision().update(*args)
        ours_s += _time(lambda args=args, i=i: metric.update(*args, video_id=i))
    ours_s += _time(metric.compute)
    result = {k: float(v) for k, v in metric.compute().items()}
    out = {"inputs": f"{n_videos} videos x {t_len} frames x 360x640, 10 predicted tracks", "ours_s": ours_s}
    out["ours"] = {k: result[k] for k in ("AP", "AP50")}
    if ytvos_root is None:
        return out
    from make_video_ap_fixtures import load_scorer, rle  # noqa: PLC0415

    ytvos_cls, eval_cls = load_scorer(ytvos_root)
    gt_json = {
        "videos": [],
        "annotations": [],
        "categories": [{"id": c, "name": str(c)} for c in range(1, 41)],
    }
    for vid_id, v in enumerate(videos, start=1):
        t, h, w = v["gt"].shape[1:]
        gt_json["videos"].append({"id": vid_id, "width": w, "height": h, "length": t})
        for track, label in zip(v["gt"], v["gt_labels"]):
            gt_json["annotations"].append(
                {"id": len(gt_json["annotations"]) + 1, "video_id": vid_id, "category_id": label, "iscrowd": 0,
                 "segmentations": [rle(m) if m.any() else None for m in track],
                 "areas": [int(m.sum()) if m.any() else None for m in track], "width": w, "height": h}
            )  # fmt: skip
    results = []

    def encode():
        results.clear()
        for vid_id, v in enumerate(videos, start=1):
            for track, score, label in zip(v["pred"], v["scores"], v["labels"]):
                segs = [rle(m) for m in track]
                results.append(
                    {"video_id": vid_id, "category_id": label, "score": score, "segmentations": segs}
                )

    encode_s = _time(encode)
    stats = []
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "res.json"
        gt_path.write_text(json.dumps(gt_json))
        res_path.write_text(json.dumps(results))

        def run_official():
            with contextlib.redirect_stdout(io.StringIO()):
                gt = ytvos_cls(str(gt_path))
                dt = gt.loadRes(str(res_path))
                ev = eval_cls(gt, dt, "segm")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            stats[:] = list(ev.stats)

        official_s = _time(run_official)
    assert abs(stats[0] - result["AP"]) < 1e-6 and abs(stats[1] - result["AP50"]) < 1e-6, (stats, result)
    out.update(
        official_s=official_s,
        official_rle_encoding_s=encode_s,
        speedup=official_s / ours_s,
        speedup_with_encoding=(official_s + encode_s) / ours_s,
        official={"AP": stats[0], "AP50": stats[1]},
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--davis", type=Path, default=os.environ.get("DAVIS_EVAL_ROOT"))
    parser.add_argument("--ytvos", type=Path, default=os.environ.get("YTVOS_COCOAPI_ROOT"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, path in (("davis", args.davis), ("ytvos", args.ytvos)):
        if path is None or not Path(path).exists():
            print(f"official {name} scorer not found: timing ours only for it")
    davis = args.davis if args.davis and Path(args.davis).exists() else None
    ytvos = args.ytvos if args.ytvos and Path(args.ytvos).exists() else None
    jf = bench_jf(davis, 3 if args.quick else 30, 20 if args.quick else 50)
    print("J&F:", json.dumps(jf))
    ap = bench_ytvis(ytvos, 10 if args.quick else 100, 20)
    print("YT-VIS AP:", json.dumps(ap))
    report = {
        "date": DATE,
        "machine": f"{MACHINE}; {platform.processor() or platform.machine()}; torch {torch.__version__}",
        "quick": args.quick,
        "jf_davis": jf,
        "ytvis_ap": ap,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_video.json").write_text(json.dumps(report, indent=1))
    rows = ["| metric | inputs | official (s) | ours (s) | speed-up |", "|---|---|---|---|---|"]
    for name, r in (("J&F (DAVIS-2017)", jf), ("YouTube-VIS AP", ap)):
        off = f"{r['official_s']:.2f}" if "official_s" in r else "n/a (scorer absent)"
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else "-"
        rows.append(f"| {name} | {r['inputs']} | {off} | {r['ours_s']:.2f} | {speed} |")
    if "official_rle_encoding_s" in ap:
        rows.append(
            f"\nYouTube-VIS: the official scorer also needs the predictions as RLE json; encoding them took "
            f"{ap['official_rle_encoding_s']:.2f} s more ({ap['speedup_with_encoding']:.1f}x with it)."
        )
    md = f"# Video metrics vs official scorers\n\n{DATE}, {report['machine']}\n\n" + "\n".join(rows) + "\n"
    (args.out / "metrics_video.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
