"""YouTube-VOS family: Ref-YouTube-VOS 2021 (``ref_ytvos``, vid_refseg) and YouTube-VOS 2019 (``ytvos19``,
vid_objseg, the mask of each object's first annotated frame as its prompt).

Both keep every 5th frame of 30 fps videos, named by the original frame number (``00000.jpg``,
``00005.jpg``, ...): the gaps stay gaps in ``frame_times``. Annotations are palette PNGs whose index is the
object id. Neither official ``valid`` split publishes its masks beyond what the task gives as input, so:

- ``ref_ytvos`` ``val`` is held out of the public train videos (every ``--val-every``-th video of the
  sorted list; ``train`` is the rest; ``--val-every 0`` keeps every video for training and has no ``val``).
  The official valid expressions are scored by the challenge server only.
- ``ytvos19`` ``val`` is the official valid split: each object's mask on its first frame (the prompt), the
  other frames ``null``: for writing predictions the server scores (J&F, seen / unseen categories).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_recipes._video import (
    JPEG_SUFFIXES,
    add_unit_argument,
    frame_times,
    list_frames,
    palette_tracks,
    per_expression,
    sort_frames,
)
from data_recipes.framework import ConvertedSample, LayoutError, Recipe, SkipItem
from data_recipes.framework.cli import add_option, main
from data_recipes.framework.layout import load_json, require_dir, require_file, require_keys
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import Plan

YOUTUBE_FPS = 30.0


@dataclass(frozen=True)
class VideoItem:
    """One sample to make: a video, its frame names, and the expressions (or objects) it holds."""

    video: str
    frames: tuple[str, ...]
    frames_dir: str
    annotations_dir: str
    expressions: tuple[tuple[str, str, tuple[int, ...]], ...] = ()  # (exp_id, text, object ids)
    categories: tuple[tuple[int, str], ...] = ()
    sample_id: str = ""


def _frame_paths(item: VideoItem) -> list[Path]:
    folder = Path(item.frames_dir)
    paths = [folder / f"{name}.jpg" for name in item.frames]
    if not folder.is_dir() or not all(p.is_file() for p in paths):
        raise SkipItem("video frames missing")
    return paths


def referring_sample(
    item: VideoItem, tracks: dict[int, list[Any]], height: int, width: int, fps: float
) -> dict[str, Any]:
    """The json of a referring sample: the objects the expressions name (those with a mask somewhere)
    and one reference per expression; an expression none of whose objects is ever annotated is left out
    (it would read as a no-target expression); a sample left with none is skipped."""
    annotated = {i for i, track in tracks.items() if any(m is not None for m in track)}
    references = []
    for exp_id, text, ids in item.expressions:
        text = " ".join(text.split())
        if not text or (ids and not set(ids) & annotated):
            continue
        references.append({"id": exp_id, "text": text, "object_ids": [i for i in ids if i in annotated]})
    if not references:
        raise SkipItem("referred objects never annotated")
    used = sorted({i for r in references for i in r["object_ids"]})
    category = dict(item.categories)
    objects = []
    for i in used:
        obj: dict[str, Any] = {"id": i, "iscrowd": False, "masks": tracks[i]}
        if i in category:
            obj["attributes"] = {"category": category[i]}
        objects.append(obj)
    return {
        "video": item.video,
        "height": height,
        "width": width,
        "num_frames": len(item.frames),
        "frame_times": frame_times(item.frames, fps),
        "objects": objects,
        "references": references,
    }


class RefYouTubeVOS(Recipe):
    name = "ref_ytvos"
    task = "vid_refseg"
    modality = "video"
    splits = ("train", "val")
    layout = (
        "train/JPEGImages/<video>/<frame>.jpg, train/Annotations/<video>/<frame>.png (palette, index = "
        "object id), train/meta.json, meta_expressions/train/meta_expressions.json"
    )
    items_per_shard = 50

    def __init__(self) -> None:
        self.fps, self.val_every, self.unit = YOUTUBE_FPS, 50, "auto"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_option(parser, "--fps", type=float, default=None, help="frame rate of the frame numbers")
        add_option(
            parser,
            "--val-every",
            type=int,
            default=50,
            help="ref_ytvos: hold out every N-th train video as val (0: no val, train keeps all)",
        )
        add_unit_argument(parser)

    def configure(self, args: argparse.Namespace) -> None:
        self.fps = args.fps or YOUTUBE_FPS
        self.val_every, self.unit = args.val_every, args.unit

    def options(self) -> dict[str, Any]:
        return {"fps": self.fps, "val_every": self.val_every, "unit": self.unit}

    def _files(self, root: Path) -> tuple[Path, Path, Path, Path]:
        return (
            root / "train" / "JPEGImages",
            root / "train" / "Annotations",
            root / "train" / "meta.json",
            root / "meta_expressions" / "train" / "meta_expressions.json",
        )

    def check_layout(self, root: Path, split: str) -> None:
        if split == "val" and self.val_every <= 0:
            raise LayoutError("ref_ytvos val is held out of train: it needs --val-every > 0")
        frames, annotations, meta, expressions = self._files(root)
        require_dir(frames, "Ref-YouTube-VOS train frames")
        require_dir(annotations, "Ref-YouTube-VOS train annotation PNGs")
        require_file(meta, "Ref-YouTube-VOS train/meta.json")
        require_file(expressions, "Ref-YouTube-VOS meta_expressions/train/meta_expressions.json")

    def plan(self, root: Path, split: str) -> Plan:
        frames_root, annotations_root, meta_path, expressions_path = self._files(root)
        videos = load_json(expressions_path, "meta_expressions.json")
        require_keys(videos, ("videos",), "meta_expressions.json", expressions_path)
        meta = load_json(meta_path, "meta.json")
        require_keys(meta, ("videos",), "meta.json", meta_path)
        items = []
        for n, video in enumerate(sorted(videos["videos"])):
            held_out = self.val_every > 0 and n % self.val_every == 0
            if held_out != (split == "val"):
                continue
            record = videos["videos"][video]
            require_keys(record, ("expressions", "frames"), f"video {video}", expressions_path)
            objects = meta["videos"].get(video, {}).get("objects", {})
            categories = tuple(
                (int(k), v["category"]) for k, v in sorted(objects.items()) if v.get("category") is not None
            )
            expressions = tuple(
                (str(exp_id), e["exp"], (int(e["obj_id"]),))
                for exp_id, e in sorted(record["expressions"].items(), key=lambda kv: _number_first(kv[0]))
            )
            base = VideoItem(
                video=video,
                frames=tuple(sort_frames(record["frames"])),
                frames_dir=str(frames_root / video),
                annotations_dir=str(annotations_root / video),
                categories=categories,
            )
            if per_expression(self.unit, split):
                items += [_replace(base, expressions=(e,), sample_id=f"{video}/{e[0]}") for e in expressions]
            else:
                items.append(_replace(base, expressions=expressions, sample_id=video))
        return Plan(items=items, num_items=len(items))

    def describe(self, item: VideoItem) -> str:
        return f"video {item.video} ({item.sample_id})"

    def convert(self, item: VideoItem) -> Iterator[ConvertedSample]:
        media, (height, width) = frame_media(_frame_paths(item))
        ids = sorted({i for _, _, ids in item.expressions for i in ids})
        pngs = [Path(item.annotations_dir) / f"{name}.png" for name in item.frames]
        tracks = palette_tracks(pngs, ids, height, width)
        sample = referring_sample(item, tracks, height, width, self.fps)
        yield ConvertedSample(id=item.sample_id, json=sample, media=media)


def _number_first(key: str) -> tuple[int, str]:
    """Expression ids are ``"0"``, ``"1"``, ...: in numeric order (``"10"`` after ``"9"``)."""
    return (int(key), key) if key.isdigit() else (sys.maxsize, key)


def _replace(item: VideoItem, **changes: Any) -> VideoItem:
    from dataclasses import replace

    return replace(item, **changes)


def object_prompt(track: list[Any]) -> dict[str, Any] | None:
    """The semi-supervised VOS input: the object's mask on its first annotated frame."""
    for t, rle in enumerate(track):
        if rle is not None:
            return {"frame": t, "mask": rle, "type": "mask"}
    return None


def objseg_objects(
    tracks: dict[int, list[Any]], categories: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """Objects with their first-frame mask prompt; objects never annotated are left out."""
    objects = []
    for i in sorted(tracks):
        prompt = object_prompt(tracks[i])
        if prompt is None:
            continue
        obj: dict[str, Any] = {"id": i, "iscrowd": False, "masks": tracks[i], "prompt": prompt}
        if categories and i in categories:
            obj["attributes"] = {"category": categories[i]}
        objects.append(obj)
    if not objects:
        raise SkipItem("no annotated object")
    return objects


class YouTubeVOS2019(Recipe):
    name = "ytvos19"
    task = "vid_objseg"
    modality = "video"
    splits = ("train", "val")
    layout = (
        "train/ and valid/, each with JPEGImages/<video>/<frame>.jpg, Annotations/<video>/<frame>.png "
        "(palette, index = object id) and meta.json"
    )
    items_per_shard = 50

    def __init__(self) -> None:
        self.fps = YOUTUBE_FPS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_option(parser, "--fps", type=float, default=None, help="frame rate of the frame numbers")

    def configure(self, args: argparse.Namespace) -> None:
        self.fps = args.fps or YOUTUBE_FPS

    def options(self) -> dict[str, Any]:
        return {"fps": self.fps}

    @staticmethod
    def _folder(root: Path, split: str) -> Path:
        return root / ("train" if split == "train" else "valid")

    def check_layout(self, root: Path, split: str) -> None:
        folder = self._folder(root, split)
        require_dir(folder / "JPEGImages", f"YouTube-VOS {folder.name} frames")
        require_dir(folder / "Annotations", f"YouTube-VOS {folder.name} annotation PNGs")
        require_file(folder / "meta.json", f"YouTube-VOS {folder.name}/meta.json")

    def plan(self, root: Path, split: str) -> Plan:
        folder = self._folder(root, split)
        meta = load_json(folder / "meta.json", "meta.json")
        require_keys(meta, ("videos",), "meta.json", folder / "meta.json")
        items = []
        for video in sorted(meta["videos"]):
            objects = meta["videos"][video].get("objects", {})
            categories = tuple(
                (int(k), v["category"]) for k, v in sorted(objects.items()) if v.get("category") is not None
            )
            items.append(
                VideoItem(
                    video=video,
                    frames=(),
                    frames_dir=str(folder / "JPEGImages" / video),
                    annotations_dir=str(folder / "Annotations" / video),
                    expressions=tuple(("", "", (int(k),)) for k in sorted(objects, key=int)),
                    categories=categories,
                    sample_id=video,
                )
            )
        return Plan(items=items, num_items=len(items))

    def describe(self, item: VideoItem) -> str:
        return f"video {item.video}"

    def convert(self, item: VideoItem) -> Iterator[ConvertedSample]:
        folder = Path(item.frames_dir)
        if not folder.is_dir():
            raise SkipItem("video frames missing")
        files = list_frames(folder, JPEG_SUFFIXES)
        if not files:
            raise SkipItem("video frames missing")
        names = [f.stem for f in files]
        media, (height, width) = frame_media(files)
        ids = [ids[0] for _, _, ids in item.expressions]
        tracks = palette_tracks([Path(item.annotations_dir) / f"{n}.png" for n in names], ids, height, width)
        sample = {
            "video": item.video,
            "height": height,
            "width": width,
            "num_frames": len(names),
            "frame_times": frame_times(names, self.fps),
            "objects": objseg_objects(tracks, dict(item.categories)),
        }
        yield ConvertedSample(id=item.sample_id, json=sample, media=media)


RECIPES = [RefYouTubeVOS(), YouTubeVOS2019()]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
