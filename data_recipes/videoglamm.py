"""The video grounded-conversation (GCG) sets of VideoGLaMM (Munasinghe et al., CVPR 2025), task
vid_gcgseg: one sample per video, a caption whose phrases are grounded in per-frame object masks.

The release has one format per source set, so one recipe each; ``--root`` is the folder that holds them
(X2SAM's ``datas/vid_gcgseg/video_glamm``):

- ``videoglamm_mevis`` / ``videoglamm_ytvos``: ``mevis_gcg/<split>/<video>.json`` and
  ``ytvos_gcg/<split>/<video>.json`` hold ``{"caption": "... [a fox standing on a tube](1) ..."}``: phrase
  in brackets, object ids in parentheses. The masks are the source dataset's: MeViS's ``mask_dict.json``
  (object id -> anno_id through ``meta_expressions.json``) under ``mevis/<split>/``; Ref-YouTube-VOS's
  palette PNGs (index = object id) under ``ytrvos21/``.
- ``videoglamm_vidstg`` / ``videoglamm_hcstvg``: ``<set>/<split>_captions/<video>.json`` (the same caption
  form) and ``<set>/<split>/<video>/frames/<frame>.png|jpg`` with SAM2-propagated masks
  ``<set>/<split>/<video>/masks/<object id, 3 digits>/<frame>.png`` (0 / 255; no file = no mask).
- ``videoglamm_burst``: ``video_gcg/instruction_data/<split>.json`` (BURST + YouTube-VIS 2019):
  ``videos[]`` with ``file_names``, ``dataset_split``, ``dense_cap`` (``caption``, ``token_pos`` = word
  indices into ``caption.split(" ")``, ``mask_id`` = the annotation grounding each of those words) and
  ``annotations[]`` with per-frame ``segmentations`` (RLE or null). Frames: ``video_gcg/yt19/train/
  JPEGImages/<file>`` for ``yt19`` videos, ``video_gcg/<dataset_split>/<train|val>/<file>`` otherwise.

The frame rate of these frame sets is not published: ``frame_times`` are the frame numbers in the file
names over ``--fps`` (default 30, nominal). The ActivityNet-Entities GCG set (box-grounded, one mask
frame per phrase) is not converted: X2SAM leaves it out of training for its quality.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_recipes._video import (
    binary_png_mask,
    frame_times,
    palette_tracks,
    parse_linked_caption,
    rle_track,
    sort_frames,
)
from data_recipes.framework import ConvertedSample, Recipe, SkipItem
from data_recipes.framework.cli import add_option, main
from data_recipes.framework.layout import load_json, require_dir, require_file, require_keys
from data_recipes.framework.masks import mask_to_rle
from data_recipes.framework.media import frame_media
from data_recipes.framework.recipe import Plan

NOMINAL_FPS = 30.0
_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class GCGItem:
    """One video: its frame files, caption (plain), phrase spans with the dataset's object ids, and where
    each object's masks come from (RLE tracks, a palette folder, or a mask-PNG folder)."""

    video: str
    frames: tuple[str, ...]  # frame file paths
    caption: str
    phrases: tuple[tuple[int, int, tuple[str, ...]], ...]
    rle: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # object id -> per-frame RLE
    palette_dir: str = ""
    mask_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def gcg_sample(
    item: GCGItem, tracks: dict[str, list[Any]], height: int, width: int, fps: float
) -> dict[str, Any]:
    """Caption + phrases over the objects with a mask somewhere; object ids become ints (the dataset's own
    when numeric, else their order); a phrase without an annotated object stays plain text."""
    annotated = [o for o, t in tracks.items() if any(m is not None for m in t)]
    numeric = all(o.isdigit() for o in annotated)
    number = {o: int(o) if numeric else n + 1 for n, o in enumerate(sorted(annotated, key=_id_order))}
    phrases = []
    for start, end, ids in item.phrases:
        linked = sorted({number[o] for o in ids if o in number})
        if linked:
            phrases.append({"span": [start, end], "object_ids": linked})
    if not phrases:
        raise SkipItem("no grounded phrase")
    used = sorted({i for p in phrases for i in p["object_ids"]})
    by_number = {n: o for o, n in number.items()}
    return {
        "video": item.video,
        "height": height,
        "width": width,
        "num_frames": len(item.frames),
        "frame_times": frame_times([Path(f).name for f in item.frames], fps),
        "objects": [{"id": i, "iscrowd": False, "masks": tracks[by_number[i]]} for i in used],
        "caption": item.caption,
        "phrases": phrases,
    }


def _id_order(object_id: str) -> tuple[int, str]:
    return (int(object_id), object_id) if object_id.isdigit() else (sys.maxsize, object_id)


def _caption(path: Path) -> str:
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("caption"), str):
        raise ValueError(f"{path} should be {{'caption': str}}")
    return record["caption"]


class _GCG(Recipe):
    modality = "video"
    task = "vid_gcgseg"
    items_per_shard = 50

    def __init__(self) -> None:
        self.fps = NOMINAL_FPS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_option(parser, "--fps", type=float, default=None, help="frame rate of the frame numbers")

    def configure(self, args: argparse.Namespace) -> None:
        self.fps = args.fps or NOMINAL_FPS

    def options(self) -> dict[str, Any]:
        return {"fps": self.fps}

    def describe(self, item: GCGItem) -> str:
        return f"video {item.video}"

    def _media(self, item: GCGItem) -> tuple[dict[str, bytes], int, int]:
        paths = [Path(f) for f in item.frames]
        if not paths or not all(p.is_file() for p in paths):
            raise SkipItem("video frames missing")
        media, (height, width) = frame_media(paths)
        return media, height, width

    def _tracks(self, item: GCGItem, height: int, width: int) -> dict[str, list[Any]]:
        raise NotImplementedError

    def convert(self, item: GCGItem) -> Iterator[ConvertedSample]:
        media, height, width = self._media(item)
        sample = gcg_sample(item, self._tracks(item, height, width), height, width, self.fps)
        yield ConvertedSample(id=item.video, json=sample, media=media)


# ------------------------------------------------------------------------------------ MeViS / YT-VOS
class VideoGLaMMMeViS(_GCG):
    name = "videoglamm_mevis"
    splits = ("train", "val")
    layout = (
        "mevis_gcg/{train,valid_u}/<video>.json captions and the MeViS release in mevis/{train,valid_u}/ "
        "(JPEGImages/, meta_expressions.json, mask_dict.json)"
    )

    @staticmethod
    def _folder(split: str) -> str:
        return "train" if split == "train" else "valid_u"

    def check_layout(self, root: Path, split: str) -> None:
        folder = self._folder(split)
        require_dir(root / "mevis_gcg" / folder, f"VideoGLaMM MeViS captions mevis_gcg/{folder}")
        require_dir(root / "mevis" / folder / "JPEGImages", f"MeViS frames mevis/{folder}/JPEGImages")
        require_file(
            root / "mevis" / folder / "meta_expressions.json", f"mevis/{folder}/meta_expressions.json"
        )
        require_file(root / "mevis" / folder / "mask_dict.json", f"mevis/{folder}/mask_dict.json")

    def plan(self, root: Path, split: str) -> Plan:
        folder = self._folder(split)
        expressions_path = root / "mevis" / folder / "meta_expressions.json"
        videos = load_json(expressions_path, "meta_expressions.json")
        require_keys(videos, ("videos",), "meta_expressions.json", expressions_path)
        mask_dict = load_json(root / "mevis" / folder / "mask_dict.json", "mask_dict.json")
        items = []
        for path in sorted((root / "mevis_gcg" / folder).glob("*.json")):
            video = path.stem
            record = videos["videos"].get(video)
            if record is None:
                raise ValueError(f"{path}: video {video} is not in {expressions_path}")
            caption, phrases = parse_linked_caption(_caption(path))
            anno_of: dict[str, str] = {}
            for e in record["expressions"].values():
                for o, a in zip(e.get("obj_id", []), e.get("anno_id", [])):
                    anno_of.setdefault(str(o), str(a))
            ids = sorted({o for _, _, os_ in phrases for o in os_ if o in anno_of}, key=_id_order)
            frames_dir = root / "mevis" / folder / "JPEGImages" / video
            items.append(
                GCGItem(
                    video=video,
                    frames=tuple(str(frames_dir / f"{f}.jpg") for f in record["frames"]),
                    caption=caption,
                    phrases=tuple((s, e, tuple(os_)) for s, e, os_ in phrases),
                    rle=tuple((o, tuple(mask_dict.get(anno_of[o], ()))) for o in ids),
                )
            )
        return Plan(items=items, num_items=len(items))

    def _tracks(self, item: GCGItem, height: int, width: int) -> dict[str, list[Any]]:
        tracks = {}
        for object_id, rles in item.rle:
            if len(rles) != len(item.frames):
                raise ValueError(f"object {object_id} has {len(rles)} masks for {len(item.frames)} frames")
            tracks[object_id] = rle_track(rles, height, width)
        return tracks


class VideoGLaMMYouTubeVOS(_GCG):
    name = "videoglamm_ytvos"
    splits = ("train",)
    layout = (
        "ytvos_gcg/train/<video>.json captions and Ref-YouTube-VOS in ytrvos21/ (train/JPEGImages, "
        "train/Annotations palette PNGs, meta_expressions/train/meta_expressions.json)"
    )

    def check_layout(self, root: Path, split: str) -> None:
        require_dir(root / "ytvos_gcg" / split, f"VideoGLaMM YouTube-VOS captions ytvos_gcg/{split}")
        require_dir(
            root / "ytrvos21" / "train" / "JPEGImages", "Ref-YouTube-VOS frames ytrvos21/train/JPEGImages"
        )
        require_dir(
            root / "ytrvos21" / "train" / "Annotations", "Ref-YouTube-VOS PNGs ytrvos21/train/Annotations"
        )
        require_file(
            root / "ytrvos21" / "meta_expressions" / "train" / "meta_expressions.json",
            "ytrvos21/meta_expressions/train/meta_expressions.json",
        )

    def plan(self, root: Path, split: str) -> Plan:
        expressions_path = root / "ytrvos21" / "meta_expressions" / "train" / "meta_expressions.json"
        videos = load_json(expressions_path, "meta_expressions.json")
        require_keys(videos, ("videos",), "meta_expressions.json", expressions_path)
        items = []
        for path in sorted((root / "ytvos_gcg" / split).glob("*.json")):
            video = path.stem
            record = videos["videos"].get(video)
            if record is None:
                raise ValueError(f"{path}: video {video} is not in {expressions_path}")
            caption, phrases = parse_linked_caption(_caption(path))
            frames_dir = root / "ytrvos21" / "train" / "JPEGImages" / video
            items.append(
                GCGItem(
                    video=video,
                    frames=tuple(str(frames_dir / f"{f}.jpg") for f in sort_frames(record["frames"])),
                    caption=caption,
                    phrases=tuple((s, e, tuple(os_)) for s, e, os_ in phrases),
                    palette_dir=str(root / "ytrvos21" / "train" / "Annotations" / video),
                )
            )
        return Plan(items=items, num_items=len(items))

    def _tracks(self, item: GCGItem, height: int, width: int) -> dict[str, list[Any]]:
        ids = sorted({o for _, _, os_ in item.phrases for o in os_ if o.isdigit()}, key=int)
        pngs = [Path(item.palette_dir) / f"{Path(f).stem}.png" for f in item.frames]
        tracks = palette_tracks(pngs, [int(o) for o in ids], height, width)
        return {str(i): t for i, t in tracks.items()}


# ----------------------------------------------------------------------------------- VidSTG / HC-STVG
class _MaskFolderGCG(_GCG):
    folder = ""
    splits: tuple[str, ...] = ("train",)

    @property
    def layout(self) -> str:  # type: ignore[override]
        return (
            f"{self.folder}/<split>_captions/<video>.json, {self.folder}/<split>/<video>/frames/<frame>.png "
            f"and {self.folder}/<split>/<video>/masks/<object id:03d>/<frame>.png"
        )

    def check_layout(self, root: Path, split: str) -> None:
        require_dir(
            root / self.folder / f"{split}_captions", f"VideoGLaMM captions {self.folder}/{split}_captions"
        )
        require_dir(root / self.folder / split, f"VideoGLaMM frames and masks {self.folder}/{split}")

    def plan(self, root: Path, split: str) -> Plan:
        items = []
        for path in sorted((root / self.folder / f"{split}_captions").glob("*.json")):
            video = path.name.split(".")[0]
            caption, phrases = parse_linked_caption(_caption(path))
            frames_dir = root / self.folder / split / video / "frames"
            frames = (
                [f for f in frames_dir.iterdir() if f.suffix.lower() in _FRAME_SUFFIXES]
                if frames_dir.is_dir()
                else []
            )
            by_stem = {f.stem: f for f in frames}
            items.append(
                GCGItem(
                    video=video,
                    frames=tuple(str(by_stem[s]) for s in sort_frames(by_stem)),
                    caption=caption,
                    phrases=tuple((s, e, tuple(os_)) for s, e, os_ in phrases),
                    mask_dir=str(root / self.folder / split / video / "masks"),
                )
            )
        return Plan(items=items, num_items=len(items))

    def _tracks(self, item: GCGItem, height: int, width: int) -> dict[str, list[Any]]:
        tracks: dict[str, list[Any]] = {}
        for object_id in sorted({o for _, _, os_ in item.phrases for o in os_}, key=_id_order):
            folder = Path(item.mask_dir) / (object_id.zfill(3) if object_id.isdigit() else object_id)
            track = []
            for frame in item.frames:
                png = folder / f"{Path(frame).stem}.png"
                mask = binary_png_mask(png, height, width) if png.is_file() else None
                track.append(mask_to_rle(mask) if mask is not None and mask.any() else None)
            tracks[object_id] = track
        return tracks


class VideoGLaMMVidSTG(_MaskFolderGCG):
    name = "videoglamm_vidstg"
    folder = "vidstg_gcg"
    splits = ("train", "val")


class VideoGLaMMHCSTVG(_MaskFolderGCG):
    name = "videoglamm_hcstvg"
    folder = "hcstvg_gcg"
    splits = ("train",)


# ------------------------------------------------------------------------------------- BURST-YTVIS
def word_spans(caption: str, positions: list[int]) -> dict[int, tuple[int, int]]:
    """Character span of each word index of ``caption.split(" ")`` (empty words from double spaces
    count, as in the release's ``token_pos``)."""
    spans, offset = {}, 0
    for n, word in enumerate(caption.split(" ")):
        if n in positions:
            if not word:
                raise ValueError(f"token_pos {n} is an empty word of the caption")
            spans[n] = (offset, offset + len(word))
        offset += len(word) + 1
    if missing := sorted(set(positions) - set(spans)):
        raise ValueError(f"token_pos {missing} beyond the caption's {n + 1} words")
    return spans


class VideoGLaMMBurst(_GCG):
    name = "videoglamm_burst"
    splits = ("train", "val", "test")
    layout = (
        "video_gcg/instruction_data/{train,val,test}.json, frames in video_gcg/yt19/train/JPEGImages/ "
        "(YouTube-VIS 2019 videos) and video_gcg/<dataset_split>/{train,val}/ (BURST videos)"
    )
    items_per_shard = 20

    def check_layout(self, root: Path, split: str) -> None:
        require_file(
            root / "video_gcg" / "instruction_data" / f"{split}.json",
            f"VideoGLaMM BURST-YTVIS GCG video_gcg/instruction_data/{split}.json",
        )

    def plan(self, root: Path, split: str) -> Plan:
        path = root / "video_gcg" / "instruction_data" / f"{split}.json"
        data = load_json(path, f"instruction_data/{split}.json")
        require_keys(data, ("videos", "annotations"), f"instruction_data/{split}.json", path)
        annotations = {a["id"]: a for a in data["annotations"]}
        items = []
        for video in data["videos"]:
            require_keys(video, ("id", "file_names", "dense_cap"), "a video", path)
            source = video.get("dataset_split") or video.get("metadata", {}).get("dataset", "")
            if source == "yt19":
                base = root / "video_gcg" / "yt19" / "train" / "JPEGImages"
            else:
                base = root / "video_gcg" / source / ("train" if split == "train" else "val")
            dense = video["dense_cap"]
            caption, positions, mask_ids = dense["caption"], list(dense["token_pos"]), list(dense["mask_id"])
            if len(positions) != len(mask_ids):
                raise ValueError(
                    f"{path}: video {video['id']} has {len(positions)} token_pos, {len(mask_ids)} mask_id"
                )
            grouped: dict[int, list[str]] = defaultdict(list)
            for position, mask_id in zip(positions, mask_ids):
                grouped[position].append(str(mask_id))
            spans = word_spans(caption, positions)
            phrases = tuple((*spans[p], tuple(ids)) for p, ids in sorted(grouped.items()))
            order = sorted(range(len(video["file_names"])), key=lambda i: video["file_names"][i])
            rle = tuple(
                (str(m), tuple(annotations[m]["segmentations"][i] for i in order))
                for m in sorted({int(m) for m in mask_ids})
                if m in annotations
            )
            items.append(
                GCGItem(
                    video=f"{source}/{video['id']}",
                    frames=tuple(str(base / video["file_names"][i]) for i in order),
                    caption=caption,
                    phrases=phrases,
                    rle=rle,
                )
            )
        return Plan(items=items, num_items=len(items))

    def _tracks(self, item: GCGItem, height: int, width: int) -> dict[str, list[Any]]:
        return {o: rle_track(rles, height, width) for o, rles in item.rle}


RECIPES = [
    VideoGLaMMMeViS(),
    VideoGLaMMYouTubeVOS(),
    VideoGLaMMVidSTG(),
    VideoGLaMMHCSTVG(),
    VideoGLaMMBurst(),
]

if __name__ == "__main__":
    sys.exit(main(RECIPES))
