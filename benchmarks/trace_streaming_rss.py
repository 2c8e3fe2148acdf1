"""Resident memory along one long video streamed through the whole write path: does it level off?

``bench_streaming.py`` compares whole videos of 8 to 1,000 frames; its RSS after the first and the last
chunk rose ~30 MiB over 1,000 frames. This streams one video of ``--frames`` frames (default 3,000)
through ``VideoPredictor.segment_video`` and ``FrameWriter`` (decoding in chunks, the stage-1 CPU preset
with the tiny mask memory, masks RLE-encoded into JSON lines), in one process, and records the resident
set (``VmRSS``) and time per frame every ``--every`` frames. A leak grows with the frame index; allocator
warm-up rises early and then stays.

    python benchmarks/trace_streaming_rss.py [--frames 3000] [--every 100]

Writes ``benchmarks/results/streaming_rss.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_streaming import CHUNK, SIZE, _status_mib, synthetic_frames, write_mp4
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.inference.video_predictor import VideoPredictor
from x2sam_lightning.inference.video_stream import FrameWriter, VideoFile

HERE = Path(__file__).parent


def trace(num_frames: int, every: int) -> list[dict]:
    """``[{frame, rss_mib, ms_per_frame}]`` every ``every`` frames of one streamed video."""
    folder = Path(tempfile.mkdtemp())
    video = write_mp4(folder / "video.mp4", synthetic_frames(num_frames))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = compose_config("agnostic", [f"data.image_size={SIZE}", "model/mask_memory=tiny"])
    predictor = VideoPredictor(instantiate(cfg.model), SIZE, score_threshold=0.0)
    marks, last = [], time.perf_counter()
    video_file = VideoFile(video)
    with FrameWriter(folder / "frames.jsonl") as writer:
        writer.header("trace", video_file)
        for frame in predictor.segment_video(video_file, chunk_frames=CHUNK):
            writer.write("trace", frame)
            if (frame.frame + 1) % every == 0:
                now = time.perf_counter()
                marks.append(
                    {
                        "frame": frame.frame + 1,
                        "rss_mib": _status_mib("VmRSS"),
                        "ms_per_frame": (now - last) * 1e3 / every,
                    }
                )
                last = now
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    load_before = os.getloadavg()
    marks = trace(args.frames, args.every)
    first, tenth, final = marks[0], marks[min(len(marks) - 1, max(0, len(marks) // 10 - 1))], marks[-1]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU; torch {torch.__version__}",
        "frames": args.frames,
        "load_before": [round(v, 1) for v in load_before],
        "load_after": [round(v, 1) for v in os.getloadavg()],
        "marks": marks,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streaming_rss.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "## Streaming inference: resident memory along one long video",
        "",
        f"Date {result['date']}; machine: {result['machine']}, 1 thread. Command: "
        f"`python benchmarks/trace_streaming_rss.py --frames {args.frames} --every {args.every}`. One "
        f"{args.frames}-frame {SIZE}x{SIZE} synthetic video streamed through `VideoPredictor.segment_video` "
        f"and `FrameWriter` in chunks of {CHUNK} (stage-1 CPU preset, tiny mask memory), resident set "
        f"(VmRSS) and time per frame every {args.every} frames. Load average before "
        f"{' '.join(map(str, result['load_before']))}, after {' '.join(map(str, result['load_after']))}.",
        "",
        f"RSS: {first['rss_mib']:.1f} MiB at frame {first['frame']}, {tenth['rss_mib']:.1f} at frame "
        f"{tenth['frame']}, {final['rss_mib']:.1f} at frame {final['frame']}: "
        f"**{final['rss_mib'] - tenth['rss_mib']:+.1f} MiB** over the last "
        f"{final['frame'] - tenth['frame']} frames ({first['frame']}-{tenth['frame']}: "
        f"{tenth['rss_mib'] - first['rss_mib']:+.1f} MiB).",
        "",
        "| frame | RSS MiB | ms per frame (last interval) |",
        "|---:|---:|---:|",
        *(f"| {m['frame']} | {m['rss_mib']:.1f} | {m['ms_per_frame']:.1f} |" for m in marks),
    ]
    (args.out / "streaming_rss.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
