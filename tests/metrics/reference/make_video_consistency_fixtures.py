"""Write the mVC fixtures with VSPW's official video-consistency scorer.

Scorer: github.com/VSPW-dataset/VSPW_code, ``VC_perclip.py``: its window function ``get_common`` (the same
code is in ``utils.py``, imported from there because ``VC_perclip.py`` runs at import), driven as its script
does: videos with ``len(frames) <= clip_num`` skipped, window scores of all videos pooled, ``np.nanmean``.
``clip_num`` is 8 and 16 (mVC8, mVC16). Output: ``tests/fixtures/metrics/video_consistency.json``.

Regenerate (needs a VSPW_code checkout; its code is not part of this repository)::

    python tests/metrics/reference/make_video_consistency_fixtures.py --vspw /path/to/VSPW_code
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "video_consistency.json"
WINDOWS = [8, 16]
H, W = 9, 12


def load_get_common(root: Path):
    spec = importlib.util.spec_from_file_location("vspw_utils", root / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_common


def smooth_video(rng: np.random.Generator, t: int, num_classes: int = 5) -> np.ndarray:
    """Label maps with regions that persist, shift and change class over time, and ignore (255) pixels."""
    base = rng.integers(0, num_classes, (H // 3 + 1, W // 3 + 1)).repeat(3, 0).repeat(3, 1)[:H, :W]
    frames = []
    for _ in range(t):
        if rng.random() < 0.3:
            base = np.roll(base, int(rng.integers(-1, 2)), axis=int(rng.integers(2)))
        if rng.random() < 0.2:
            y, x = int(rng.integers(0, H - 2)), int(rng.integers(0, W - 2))
            base = base.copy()
            base[y : y + 2, x : x + 3] = rng.integers(0, num_classes)
        frame = base.copy()
        if rng.random() < 0.3:
            frame[int(rng.integers(H)), :] = 255
        frames.append(frame)
    return np.stack(frames)


def flicker(rng: np.random.Generator, video: np.ndarray, p: float) -> np.ndarray:
    noise = rng.random(video.shape) < p
    return np.where(noise, rng.integers(0, 5, video.shape), np.where(video == 255, 0, video))


def make_cases(rng: np.random.Generator) -> list[dict]:
    def case(name, videos):
        return {"name": name, "videos": [{"pred": p.tolist(), "target": g.tolist()} for p, g in videos]}

    cases = []
    g = smooth_video(rng, 18)
    cases.append(case("perfect", [(g, g)]))
    g = smooth_video(rng, 20)
    cases.append(case("constant_prediction", [(np.zeros_like(g), g)]))
    g = rng.integers(0, 2, (12, H, W))  # almost no pixel keeps its label over 8 frames
    g[:, 0, 0] = 1
    g[5, 0, 0] = 0  # a window range where not one pixel is consistent (skipped as NaN)
    cases.append(case("inconsistent_ground_truth", [(flicker(rng, g, 0.1), g)]))
    short = smooth_video(rng, 8)  # T <= 8: no window at all
    cases.append(case("short_video_skipped", [(flicker(rng, short, 0.1), short), (g, g)]))
    videos = []
    for t in (9, 16, 17, 25, 30):
        g = smooth_video(rng, t)
        videos.append((flicker(rng, g, float(rng.uniform(0.0, 0.05))), g))
    cases.append(case("random_set", videos))
    return cases


def score(get_common, case: dict) -> dict:
    expected = {}
    for clip_num in WINDOWS:
        total_acc = []
        for vid in case["videos"]:
            imglist = list(np.asarray(vid["target"]))
            predlist = list(np.asarray(vid["pred"]))
            if len(imglist) <= clip_num:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                total_acc.extend(get_common(imglist, predlist, clip_num, H, W))
        with warnings.catch_warnings():  # nanmean of an all-NaN list warns
            warnings.simplefilter("ignore")
            acc = float(np.nanmean(np.array(total_acc))) if total_acc else float("nan")
        expected[f"mvc{clip_num}"] = None if math.isnan(acc) else acc
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vspw", type=Path, required=True, help="VSPW_code checkout")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    get_common = load_get_common(args.vspw)
    cases = make_cases(np.random.default_rng(0))
    for case in cases:
        case["expected"] = score(get_common, case)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"windows": WINDOWS, "cases": cases}, separators=(",", ":")))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
