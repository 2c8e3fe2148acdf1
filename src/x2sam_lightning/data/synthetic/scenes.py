"""Coloured-shape scenes: drawing, the stage-1 image and video samples, and the task scenes.

Scenes: a textured background (linear gradient, smooth colour noise or stripes) plus shapes (the category
vocabulary, all things) of several colours and three sizes, painted back to front. Each object's mask is
its *visible* pixels; objects left with fewer than :data:`MIN_VISIBLE_PIXELS` pixels are dropped (images)
or marked absent with an empty mask on that frame (videos, schema 2: every frame is annotated, so no mask
is ``null``). Video objects move, rotate and scale, and may enter or leave the frame.

Every object stores ``attributes`` (``color``, ``shape``, ``size``, ``position``); the stage-1 sets also
store ``expressions``: referring phrases ordered from short to specific that are unique among the sample's
objects (the most specific phrase is kept even when it is not unique, e.g. two identical shapes in the
same ninth).

Task scenes (:func:`task_scene`, for the stage-2 datasets) keep every object at least half visible, so
what the text says about an object (its colour, size, where it is, how many there are) can be seen.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.schema import SCHEMA_VERSION
from x2sam_lightning.data.synthetic.config import DATASET_CODE, DATASETS, SPLIT_CODE, SyntheticConfig
from x2sam_lightning.imports import require

#: Objects (or per-frame appearances) with fewer visible pixels than this are dropped / marked absent.
MIN_VISIBLE_PIXELS = 8
#: Task scenes drop objects (before painting) until each is at least this visible.
MIN_VISIBLE_FRACTION = 0.5
#: Task scenes are stored as JPEG at this quality, without chroma subsampling (small shapes keep colour).
JPEG_QUALITY = 95

SHAPES = ("circle", "square", "triangle", "ellipse", "star", "ring")
#: Category vocabulary of the stage-1 datasets: ``id`` is 1-based as in COCO.
CATEGORIES = [{"id": i + 1, "name": name, "isthing": True} for i, name in enumerate(SHAPES)]
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "pink": (245, 120, 190),
}
#: Circumradius as a fraction of the shorter image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.05, 0.09), "medium": (0.10, 0.15), "large": (0.16, 0.24)}
BACKGROUNDS = ("gradient", "noise", "stripes")


def sample_rng(
    cfg: SyntheticConfig, dataset: str, split: str, index: int, *stream: int
) -> np.random.Generator:
    """The generator of one sample (``stream`` separates e.g. the prompts from the scene)."""
    return np.random.default_rng([cfg.seed, DATASET_CODE[dataset], SPLIT_CODE[split], index, *stream])


# ----------------------------------------------------------------------------------------------- drawing
def _shape_polygon(shape: str, radius: float, angle: float, aspect: float) -> np.ndarray:
    """Unit-centred polygon(s) of a shape: ``[K, 2]`` (x, y) offsets; rings return the outer outline."""
    if shape in ("circle", "ring"):
        theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(theta), np.sin(theta)], 1) * radius
    elif shape == "ellipse":
        theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(theta), aspect * np.sin(theta)], 1) * radius
    elif shape == "square":
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64) * radius / math.sqrt(2)
    elif shape == "triangle":
        theta = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(theta), np.sin(theta)], 1) * radius
    elif shape == "star":
        theta = -np.pi / 2 + np.arange(10) * np.pi / 5
        rho = np.where(np.arange(10) % 2 == 0, 1.0, 0.45) * radius
        pts = np.stack([np.cos(theta) * rho, np.sin(theta) * rho], 1)
    else:  # pragma: no cover - the vocabulary is closed
        raise ValueError(f"unknown shape {shape!r}")
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T


def _draw_mask(
    obj: dict[str, Any], cx: float, cy: float, scale: float, angle: float, size: int
) -> np.ndarray:
    """Rasterise one object at a pose: ``[size, size]`` bool (PIL's polygon fill is fast C code)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    radius = obj["radius"] * scale
    outline = _shape_polygon(obj["shape"], radius, angle, obj["aspect"]) + (cx, cy)
    draw.polygon([tuple(p) for p in outline], fill=1)
    if obj["shape"] == "ring":
        inner = _shape_polygon("circle", radius * 0.55, angle, 1.0) + (cx, cy)
        draw.polygon([tuple(p) for p in inner], fill=0)
    return np.asarray(canvas, dtype=bool)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A muted textured background: ``[size, size, 3]`` float32 in 0..255, and its kind."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    grey = rng.uniform(70, 190, size=2)
    c0, c1 = (g + rng.uniform(-30, 30, size=3) for g in grey)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, 2 * np.pi)
    ramp = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == "gradient":
        t = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    elif kind == "stripes":
        t = (np.sin(2 * np.pi * rng.uniform(3, 10) * ramp + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    else:  # smooth colour blotches: low-resolution noise upsampled bilinearly
        low = rng.uniform(0, 255, size=(6, 6)).astype(np.uint8)
        t = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255
    return (c0 + t[..., None] * (c1 - c0)).astype(np.float32), kind


def _position_word(mask: np.ndarray) -> str:
    """Where the visible pixels' centroid lies in a 3x3 grid: "top left", "center", "bottom", ..."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    row = ("top", "", "bottom")[min(int(3 * ys.mean() / h), 2)]
    col = ("left", "", "right")[min(int(3 * xs.mean() / w), 2)]
    return " ".join(p for p in (row, col) if p) or "center"


def _expressions(objects: list[dict[str, Any]]) -> None:
    """Attach referring expressions unique within the sample (most specific kept as a fallback)."""

    def candidates(a: dict[str, str]) -> list[str]:
        where = a["position"]
        return [
            f"the {a['shape']}",
            f"the {a['color']} {a['shape']}",
            f"the {a['size']} {a['color']} {a['shape']}",
            f"the {a['color']} {a['shape']} at the {where}",
            f"the {a['size']} {a['color']} {a['shape']} at the {where}",
        ]

    all_candidates = [candidates(o["attributes"]) for o in objects]
    for obj, cands in zip(objects, all_candidates):
        unique = [c for c in cands if sum(c in other for other in all_candidates) == 1]
        obj["expressions"] = unique or cands[-1:]


def _sample_objects(rng: np.random.Generator, size: int, video: bool) -> list[dict[str, Any]]:
    """Draw 1-6 objects (shape, colour, size, pose and, for videos, motion)."""
    colour_names = list(COLORS)
    objects = []
    for _ in range(int(rng.integers(1, 7))):
        size_name = ("small", "medium", "large")[rng.integers(3)]
        lo, hi = SIZES[size_name]
        obj = {
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "color": colour_names[rng.integers(len(colour_names))],
            "size": size_name,
            "radius": rng.uniform(lo, hi) * size,
            "aspect": rng.uniform(0.45, 0.7),
            "angle": rng.uniform(0, 2 * np.pi),
            "cx": rng.uniform(0.1, 0.9) * size,
            "cy": rng.uniform(0.1, 0.9) * size,
            "shade": rng.uniform(0.85, 1.1),
        }
        if video:
            obj["vx"], obj["vy"] = rng.uniform(-0.03, 0.03, size=2) * size
            obj["spin"] = rng.uniform(-0.15, 0.15)
            obj["grow"] = rng.uniform(-0.02, 0.02)
            if rng.random() < 0.25:  # enters from outside the frame, moving inwards
                side = rng.integers(4)
                axis, sign = ("cx", "cy")[side % 2], (-1, 1)[side // 2]
                obj[axis] = size / 2 + sign * (size / 2 + obj["radius"] * rng.uniform(0.6, 1.2))
                obj["v" + axis[1]] = -sign * rng.uniform(0.04, 0.08) * size
        objects.append(obj)
    return objects


def _visible(full: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Painter's order: an object's visible pixels are those no later object covers."""
    visible, covered = [np.empty(0)] * len(full), np.zeros_like(full[0])
    for k in range(len(full) - 1, -1, -1):
        visible[k] = full[k] & ~covered
        covered |= full[k]
    return visible


def _render(objects: list[dict[str, Any]], background: np.ndarray, t: int, rng: np.random.Generator):
    """Paint the objects at frame ``t`` back to front; return the uint8 frame and visible masks."""
    size = background.shape[0]
    frame = background.copy()
    full = []
    for obj in objects:
        cx = obj["cx"] + obj.get("vx", 0.0) * t
        cy = obj["cy"] + obj.get("vy", 0.0) * t
        scale = (1.0 + obj.get("grow", 0.0)) ** t
        mask = _draw_mask(obj, cx, cy, scale, obj["angle"] + obj.get("spin", 0.0) * t, size)
        frame[mask] = np.asarray(COLORS[obj["color"]], dtype=np.float32) * obj["shade"]
        full.append(mask)
    visible = _visible(full)
    frame += rng.normal(0.0, 3.0, size=frame.shape).astype(np.float32)  # sensor-like noise
    return np.clip(frame, 0, 255).astype(np.uint8), visible


def _object_record(obj_id: int, obj: dict[str, Any], masks: list[np.ndarray | None]) -> dict[str, Any]:
    first = next(m for m in masks if m is not None and m.any())  # where it is first seen
    return {
        "id": obj_id,
        "category_id": SHAPES.index(obj["shape"]) + 1,
        "iscrowd": False,
        "masks": [None if m is None else encode_mask(m) for m in masks],
        "attributes": {
            "color": obj["color"],
            "shape": obj["shape"],
            "size": obj["size"],
            "position": _position_word(first),
        },
    }


def make_image_sample(index: int, split: str, cfg: SyntheticConfig) -> tuple[dict[str, Any], bytes, list]:
    """Generate image sample ``index`` of ``split``.

    Returns:
        The sample json, the PNG bytes and the visible masks (``[H, W]`` bool per kept object).
    """
    rng = sample_rng(cfg, "synthetic_img", split, index)
    size = cfg.image_size
    objects = _sample_objects(rng, size, video=False)
    frame, visible = _render(objects, _background(rng, size)[0], 0, rng)
    kept = [(o, m) for o, m in zip(objects, visible) if m.sum() >= MIN_VISIBLE_PIXELS]
    records = [_object_record(i + 1, o, [m]) for i, (o, m) in enumerate(kept)]
    _expressions(records)
    sample = _sample_json("synthetic_img", index, size, [0.0], records)
    buf = io.BytesIO()
    # Level 1: PNG is lossless at any level, and encoding dominates generation time.
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return sample, buf.getvalue(), [m for _, m in kept]


def make_video_sample(index: int, split: str, cfg: SyntheticConfig) -> tuple[dict[str, Any], bytes, list]:
    """Generate video sample ``index`` of ``split``.

    Returns:
        The sample json, the mp4 bytes (H.264, yuv420p) and, per kept object, its per-frame visible masks
        (``[H, W]`` bool, empty where absent).
    """
    rng = sample_rng(cfg, "synthetic_vid", split, index)
    size = cfg.image_size
    objects = _sample_objects(rng, size, video=True)
    background, _ = _background(rng, size)
    frames, tracks = [], [[] for _ in objects]
    for t in range(cfg.frames):
        frame, visible = _render(objects, background, t, rng)
        frames.append(frame)
        for track, mask in zip(tracks, visible):
            track.append(mask if mask.sum() >= MIN_VISIBLE_PIXELS else np.zeros_like(mask))
    kept = [(o, tr) for o, tr in zip(objects, tracks) if any(m.any() for m in tr)]
    records = [_object_record(i + 1, o, tr) for i, (o, tr) in enumerate(kept)]
    _expressions(records)
    times = [round(t / cfg.fps, 6) for t in range(cfg.frames)]
    sample = _sample_json("synthetic_vid", index, size, times, records)
    return sample, encode_mp4(np.stack(frames), cfg.fps), [tr for _, tr in kept]


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """Encode ``[T, H, W, 3]`` uint8 RGB frames as an H.264 mp4 in memory, reproducibly.

    Constant quantiser, one thread, explicit timestamps, bitexact muxing: the same frames give the same
    bytes. (x264's CRF rate control was seen to give one of two bitstreams for the same input, about one
    call in 40, on 2026-11-25; constant QP did not.)
    """
    av = require("av")
    buf = io.BytesIO()
    # bitexact: no encoder version string, and a zero creation time instead of the wall clock in the
    # mp4 header, so the same frames always give the same bytes.
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        container.metadata["creation_time"] = "1970-01-01T00:00:00Z"
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "17", "preset": "veryfast", "threads": "1", "flags": "+bitexact"}
        for t, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _sample_json(
    dataset: str, index: int, size: int, times: list[float], objects: list, categories: list | None = None
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "task": DATASETS[dataset]["task"],
        "dataset": dataset,
        "modality": DATASETS[dataset]["modality"],
        "height": size,
        "width": size,
        "num_frames": len(times),
        "frame_times": times,
        "categories": CATEGORIES if categories is None else categories,
        "objects": objects,
    }


# ------------------------------------------------------------------------------------------ task scenes
class TaskScene:
    """One image of a stage-2 task dataset, before its text.

    Attributes:
        records: per object, the shard record (``id``, ``category_id``, ``iscrowd``, ``masks``,
            ``attributes``), ids 1..N in painting order.
        masks: per object, its visible ``[size, size]`` bool mask.
        facts: per object, geometry of the visible mask in pixels (``x0, y0, x1, y1`` box, ``cx, cy``
            centroid, ``area``).
        jpg: the encoded image.
        background: the background kind (``"gradient"``, ``"noise"`` or ``"stripes"``).
        size: image side.
    """

    def __init__(self, records, masks, facts, jpg, background, size) -> None:
        self.records, self.masks, self.facts = records, masks, facts
        self.jpg, self.background, self.size = jpg, background, size

    @property
    def attributes(self) -> list[dict[str, str]]:
        return [r["attributes"] for r in self.records]


def _mask_facts(mask: np.ndarray) -> dict[str, float]:
    ys, xs = np.nonzero(mask)
    return {
        "x0": float(xs.min()),
        "y0": float(ys.min()),
        "x1": float(xs.max() + 1),
        "y1": float(ys.max() + 1),
        "cx": float(xs.mean() + 0.5),
        "cy": float(ys.mean() + 0.5),
        "area": float(len(xs)),
    }


def _grid_position(facts: dict[str, float], size: int) -> str:
    """:func:`_position_word` from the centroid in ``facts``."""
    row = ("top", "", "bottom")[min(int(3 * (facts["cy"] - 0.5) / size), 2)]
    col = ("left", "", "right")[min(int(3 * (facts["cx"] - 0.5) / size), 2)]
    return " ".join(p for p in (row, col) if p) or "center"


def task_scene(
    rng: np.random.Generator,
    size: int,
    *,
    count: tuple[int, int] = (1, 6),
    shapes: Sequence[str] = SHAPES,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> TaskScene:
    """Draw a scene whose objects are all at least :data:`MIN_VISIBLE_FRACTION` visible.

    Args:
        rng: the sample's generator.
        size: image side.
        count: least and most objects drawn (occluded ones are then removed before painting).
        shapes: shapes to draw from (colours are any of :data:`COLORS`).
        pairs: ``(colour, shape)`` pairs to draw from instead (open-vocabulary scenes).
    """
    colour_names = list(COLORS)
    objects = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        if pairs is not None:
            colour, shape = pairs[rng.integers(len(pairs))]
        else:
            colour, shape = colour_names[rng.integers(len(colour_names))], shapes[rng.integers(len(shapes))]
        size_name = ("small", "medium", "large")[rng.integers(3)]
        radius = rng.uniform(*SIZES[size_name]) * size
        objects.append(
            {
                "shape": shape,
                "color": colour,
                "size": size_name,
                "radius": radius,
                "aspect": rng.uniform(0.45, 0.7),
                "angle": rng.uniform(0, 2 * np.pi),
                "cx": rng.uniform(radius, size - radius),  # whole shape inside the image
                "cy": rng.uniform(radius, size - radius),
                "shade": rng.uniform(0.85, 1.1),
            }
        )
    background, kind = _background(rng, size)
    full = [_draw_mask(o, o["cx"], o["cy"], 1.0, o["angle"], size) for o in objects]
    keep = [k for k in range(len(objects)) if full[k].sum() >= MIN_VISIBLE_PIXELS]
    visible: list[np.ndarray] = []
    while keep:  # remove the most hidden object until every one left is visible enough
        visible = _visible([full[k] for k in keep])
        areas = [int(v.sum()) for v in visible]
        fractions = [a / full[k].sum() for a, k in zip(areas, keep)]
        bad = [
            i
            for i, (f, a) in enumerate(zip(fractions, areas))
            if f < MIN_VISIBLE_FRACTION or a < MIN_VISIBLE_PIXELS
        ]
        if not bad:
            break
        del keep[min(bad, key=lambda i: fractions[i])]
    frame = background
    for k in keep:
        frame[full[k]] = np.asarray(COLORS[objects[k]["color"]], dtype=np.float32) * objects[k]["shade"]
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * 3.0  # sensor-like noise
    facts = [_mask_facts(m) for m in visible]
    records = []
    for i, (k, mask, fact) in enumerate(zip(keep, visible, facts)):
        obj = objects[k]
        records.append(
            {
                "id": i + 1,
                "category_id": SHAPES.index(obj["shape"]) + 1,
                "iscrowd": False,
                "masks": [encode_mask(mask)],
                "attributes": {
                    "color": obj["color"],
                    "shape": obj["shape"],
                    "size": obj["size"],
                    "position": _grid_position(fact, size),
                },
            }
        )
    buf = io.BytesIO()
    # JPEG (like most real datasets), full-resolution colour: 15x faster to write than PNG and 4x smaller.
    image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return TaskScene(records, visible, facts, buf.getvalue(), kind, size)
