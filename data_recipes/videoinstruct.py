"""VideoInstruct100K (Video-ChatGPT's instruction data on ActivityNet videos), task ``vid_chat``.

``VideoInstruct100K.json`` is a list of question-answer pairs ``{"q", "a", "video_id"}`` (about 100K pairs
on about 13K ActivityNet videos, ``video_id`` = ``v_<YouTube id>``); the videos are the ActivityNet files
``<video_id>.mp4``. One sample per video, as the X2SAM code groups them: the video's pairs, in file order,
become one conversation of alternating user / assistant turns (``<video>`` is added by the conversation
builder). The video is stored as its file's bytes (``mp4`` member, not re-encoded; decord reads other
containers by their content too), with ``num_frames`` and the frame size as decord decodes them and
``frame_times`` = frame index / decord's average frame rate. Whole videos are stored, as the schema
wants one sample per video: an ActivityNet video is a few minutes long (tens of MB), so shards hold few
samples (``items_per_shard`` 16). Pairs whose video file is missing are skipped, counted per video.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import main
from data_recipes.framework.layout import load_json, require_dir
from data_recipes.framework.recipe import Plan
from x2sam_lightning.imports import require

#: Where the videos are, relative to --root, unless --videos says otherwise (the X2SAM layout).
DEFAULT_VIDEOS = "ActivityNet/train"
#: File endings tried for a video id, in order.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def probe_video(data: bytes) -> tuple[int, int, int, float]:
    """``(num_frames, height, width, fps)`` of a video file's bytes, as the shard reader (decord) sees them.

    Raises:
        ValueError: decord cannot open it, or it has no frames.
    """
    decord = require("decord")
    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        count = len(reader)
        # get_batch, as the shard reader decodes: it fails on some frame sizes where indexing does not.
        height, width = reader.get_batch([0]).asnumpy().shape[1:3] if count else (0, 0)
        fps = float(reader.get_avg_fps())
    except Exception as error:  # decord raises DECORDError / RuntimeError
        raise ValueError(f"decord cannot read it: {str(error).splitlines()[0][:200]}") from None
    if count == 0:
        raise ValueError("no video frames")
    if not fps > 0:
        raise ValueError(f"no usable frame rate ({fps})")
    return count, int(height), int(width), fps


class VideoInstruct100K(Recipe):
    name = "videoinstruct100k"
    task = "vid_chat"
    modality = "video"
    splits = ("train",)
    items_per_shard = 16
    layout = f"VideoInstruct100K.json and the videos <video_id>.mp4 in {DEFAULT_VIDEOS}/ (or --videos)"
    videos = DEFAULT_VIDEOS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--videos",
            default=DEFAULT_VIDEOS,
            help=f"video folder, relative to --root (default {DEFAULT_VIDEOS})",
        )

    def configure(self, args: argparse.Namespace) -> None:
        self.videos = args.videos

    def options(self) -> dict[str, Any]:
        return {"videos": self.videos}

    def check_layout(self, root: Path, split: str) -> None:
        path = root / "VideoInstruct100K.json"
        if not path.is_file():
            raise LayoutError(
                f"expected the question-answer file VideoInstruct100K.json at {path}, found nothing"
            )
        require_dir(root / self.videos, "the ActivityNet videos")

    def plan(self, root: Path, split: str) -> Plan:
        path = root / "VideoInstruct100K.json"
        records = load_json(path, "the question-answer file")
        if not isinstance(records, list):
            raise LayoutError(f"{path} should hold a list of {{'q', 'a', 'video_id'}} records")
        pairs: dict[str, list[tuple[str, str]]] = {}
        for n, record in enumerate(records):
            if not isinstance(record, dict) or not all(k in record for k in ("q", "a", "video_id")):
                raise LayoutError(f"record {n} of {path} lacks 'q', 'a' or 'video_id': {str(record)[:120]}")
            pairs.setdefault(str(record["video_id"]), []).append((str(record["q"]), str(record["a"])))
        folder = str(root / self.videos)
        items = [(video_id, folder, turns) for video_id, turns in pairs.items()]
        return Plan(items=items, num_items=len(items))

    def describe(self, item: Any) -> str:
        return f"video {item[0]}"

    def convert(self, item: tuple[str, str, list[tuple[str, str]]]) -> Iterator[ConvertedSample]:
        video_id, folder, pairs = item
        path = next((p for s in VIDEO_SUFFIXES if (p := Path(folder) / f"{video_id}{s}").is_file()), None)
        if path is None:
            raise SkipItem("video file missing")
        data = path.read_bytes()
        try:
            num_frames, height, width, fps = probe_video(data)
        except ValueError:
            raise SkipItem("video not decodable") from None
        conversation = []
        for question, reply in pairs:
            conversation += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        sample = {
            "height": height,
            "width": width,
            "num_frames": num_frames,
            "frame_times": [round(n / fps, 6) for n in range(num_frames)],
            "objects": [],
            "conversation": conversation,
        }
        yield ConvertedSample(id=video_id, json=sample, media={"mp4": data})


RECIPES = [VideoInstruct100K()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
