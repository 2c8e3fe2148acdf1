"""Video task scenes: moving shapes that pass behind one another, leave the frame and come back.

The stage-2 video task sets (:mod:`.video_tasks`) draw their clips here. A scene holds 2-5 shapes (the
image task scenes' shapes, colours and size classes) on a textured background; each shape either stands
still or moves at a constant speed in one of four directions, so its motion is one word. On top of that a
scene plans, with known probabilities, the two events that make a memory matter:

- **occlusion** (:data:`OCCLUSION_SHARE` of the scenes): a small shape crosses behind a large still one
  (a circle or a square, painted after it), fully hidden on a few middle frames and visible before and
  after;
- **exit** (:data:`EXIT_SHARE`): a shape moves out of the frame, stays out for a frame or two, and comes
  back the way it left (it bounces off a wall outside the frame), so its motion is "leaving and coming
  back".

A planned event is checked on the rendered masks (visible, then absent on a middle frame, then visible
again) and the scene is drawn again until it holds, so the shares are exact. Every shape is visible on
frame 0 (the first-frame prompt of object segmentation needs it). Masks are the *visible* pixels; a frame
where a shape shows fewer than :data:`~.scenes.MIN_VISIBLE_PIXELS` pixels is *absent* there: an empty
mask (schema 2; every frame of a synthetic video is annotated, so none is ``null``).

The sample's ``tags`` say what its masks show: ``"occlusion"`` when a shape is absent on some frame
while inside the image (hidden by others) and visible before and after, ``"exit"`` when a shape is absent
because it is outside the image and visible before and after, and ``"reappearance"`` when either holds.
Each object's ``attributes`` add ``motion`` and, when its masks show one, ``events`` (``["exit"]``,
``["occlusion"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.synthetic.scenes import (
    COLORS,
    MIN_VISIBLE_PIXELS,
    SHAPES,
    SIZES,
    _background,
    _draw_mask,
    _mask_facts,
    _visible,
    encode_mp4,
)

#: Share of scenes with a planned occlusion, and with a planned exit and return (independent draws).
OCCLUSION_SHARE = 0.5
EXIT_SHARE = 0.35
#: One-word motions of a shape moving at a constant velocity (or standing still).
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
STILL = "standing still"
COMEBACK = "leaving and coming back"
MOTIONS = (*(f"moving {d}" for d in DIRECTIONS), STILL, COMEBACK)
#: Shapes that hide what passes behind them completely (a ring has a hole, a star and a triangle gaps).
OCCLUDER_SHAPES = ("circle", "square")
#: Draws of a scene before its planned events are given up (never reached in practice).
MAX_ATTEMPTS = 50


@dataclass
class VideoScene:
    """One video of a stage-2 video task set, before its text.

    Attributes:
        records: per object the shard record (``id``, ``category_id``, ``iscrowd``, ``masks`` one RLE per
            frame, empty where absent; ``attributes``), ids 1..N in painting order.
        tracks: per object, ``T`` visible ``[size, size]`` bool masks.
        facts: per object, geometry of its visible mask on its first visible frame (``x0, y0, x1, y1``,
            ``cx, cy``, ``area``) and that ``frame``; ``radius``, the drawn size.
        tags: what the masks show (module docstring).
        mp4: the encoded frames.
        background: the background kind.
    """

    records: list[dict[str, Any]]
    tracks: list[list[np.ndarray]]
    facts: list[dict[str, float]]
    tags: list[str]
    mp4: bytes
    background: str

    @property
    def attributes(self) -> list[dict[str, str]]:
        return [r["attributes"] for r in self.records]


def _shape(
    rng: np.random.Generator, size: int, shapes: Sequence[str], pairs: Sequence[tuple[str, str]] | None
) -> dict[str, Any]:
    colours = list(COLORS)
    if pairs is not None:
        colour, shape = pairs[rng.integers(len(pairs))]
    else:
        colour, shape = colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]
    size_name = ("small", "medium", "large")[rng.integers(3)]
    return {
        "shape": shape,
        "color": colour,
        "size": size_name,
        "radius": rng.uniform(*SIZES[size_name]) * size,
        "aspect": rng.uniform(0.45, 0.7),
        "angle": rng.uniform(0, 2 * np.pi),
        "shade": rng.uniform(0.85, 1.1),
    }


def _mover(obj: dict[str, Any], rng: np.random.Generator, size: int, frames: int) -> None:
    """A constant velocity (or none) whose whole path stays inside the image."""
    r = obj["radius"]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))] if rng.random() < 0.75 else None
    speed = 0.0 if direction is None else rng.uniform(0.015, 0.035) * size
    dx, dy = DIRECTIONS[direction] if direction else (0.0, 0.0)
    travel = speed * (frames - 1)
    room = size - 2 * r
    if direction is not None and travel > room:  # slow down until the path fits
        speed, travel = room / (frames - 1), room
    # Start so the path [start, start + travel * d] stays within [r, size - r] on the moving axis.
    lo_x = r + max(0.0, -dx * travel)
    hi_x = size - r - max(0.0, dx * travel)
    lo_y = r + max(0.0, -dy * travel)
    hi_y = size - r - max(0.0, dy * travel)
    obj["cx"], obj["cy"] = rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y))
    obj["vx"], obj["vy"] = dx * speed, dy * speed
    spin = rng.uniform(-0.08, 0.08)
    obj["spin"] = 0.0 if direction is None else spin  # "standing still" does not even turn
    obj["motion"] = STILL if direction is None else f"moving {direction}"


def _occlusion(
    occluder: dict[str, Any],
    hidden: dict[str, Any],
    rng: np.random.Generator,
    size: int,
    frames: int,
    pairs: Sequence[tuple[str, str]] | None,
) -> None:
    """A still large occluder and a small shape crossing behind its centre at a middle frame."""
    options = [p for p in pairs if p[1] in OCCLUDER_SHAPES] if pairs is not None else None
    if options:  # open vocabulary: the occluder stays one of the allowed colour-shape pairs
        occluder["color"], occluder["shape"] = options[rng.integers(len(options))]
    else:
        occluder["shape"] = OCCLUDER_SHAPES[rng.integers(len(OCCLUDER_SHAPES))]
    occluder["size"], occluder["radius"] = "large", rng.uniform(0.19, 0.24) * size
    hidden["size"], hidden["radius"] = "small", rng.uniform(0.05, 0.07) * size
    middle = (frames - 1) / 2 + (rng.uniform(-1, 1) if frames >= 10 else 0.0)
    # Fully clear of the occluder (the radii's sum away) on frames 0 and T-1.
    speed = (occluder["radius"] + hidden["radius"]) / max(min(middle, frames - 1 - middle), 1e-6)
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    # The crossing stays inside the image: the occluder's centre is that far from the edges it moves to.
    reach = min(size / 2, speed * max(middle, frames - 1 - middle) + hidden["radius"])
    across = rng.uniform(occluder["radius"], size - occluder["radius"])
    along = rng.uniform(reach, size - reach)
    occluder["cx"], occluder["cy"] = (along, across) if dx else (across, along)
    occluder.update(vx=0.0, vy=0.0, spin=0.0, motion=STILL)
    hidden["cx"] = occluder["cx"] - dx * speed * middle
    hidden["cy"] = occluder["cy"] - dy * speed * middle
    hidden.update(vx=dx * speed, vy=dy * speed, spin=0.0, motion=f"moving {direction}")


def _exit(obj: dict[str, Any], rng: np.random.Generator, size: int, frames: int) -> None:
    """A shape that reaches an edge, leaves, turns at a wall outside the image and comes back."""
    r = obj["radius"]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    turn = (frames - 1) / 2 + (rng.uniform(-1, 1) if frames >= 10 else 0.0)
    # p(t) along the direction, from the image centre: starts touching the edge from inside (size/2 - r),
    # is fully out past size/2 + r, turns at the wall; speed so the turn comes at ``turn``.
    start, out = size / 2 - r, size / 2 + r
    speed = (out - start) / max(turn - 0.75, 0.25)
    wall = start + speed * turn
    side = rng.uniform(r, size - r)
    obj.update(path=(dx, dy, start, speed, wall, side), spin=rng.uniform(-0.08, 0.08), motion=COMEBACK)


def _pose(obj: dict[str, Any], t: int, size: int) -> tuple[float, float]:
    if "path" in obj:
        dx, dy, start, speed, wall, side = obj["path"]
        p = wall - abs(wall - (start + speed * t))  # bounces off the wall
        along = size / 2 + p
        return (along if dx > 0 else size - along, side) if dx else (side, along if dy > 0 else size - along)
    return obj["cx"] + obj["vx"] * t, obj["cy"] + obj["vy"] * t


def _gaps(track: Sequence[np.ndarray], inside: Sequence[bool]) -> set[str]:
    """``"occlusion"`` / ``"exit"`` for a track absent on a frame between two visible ones, by cause
    (``inside[t]``: some of the shape lies inside the image on frame ``t``)."""
    shown = [bool(m.any()) for m in track]
    kinds = set()
    for t, seen in enumerate(shown):
        if not seen and any(shown[:t]) and any(shown[t + 1 :]):
            kinds.add("occlusion" if inside[t] else "exit")
    return kinds


def video_task_scene(
    rng: np.random.Generator,
    size: int,
    frames: int,
    fps: float,
    *,
    count: tuple[int, int] = (2, 5),
    shapes: Sequence[str] = SHAPES,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> VideoScene:
    """Draw, render and encode one scene (module docstring); ``pairs`` as in :func:`~.scenes.task_scene`.

    ``category_id`` is the shape's index in :data:`~.scenes.SHAPES` plus one (callers with another
    vocabulary rewrite it).
    """
    background, kind = _background(rng, size)
    plan_occlusion, plan_exit = rng.random() < OCCLUSION_SHARE, rng.random() < EXIT_SHARE
    for _ in range(MAX_ATTEMPTS):
        # Enough shapes for the plans: the exit uses the first, the occlusion the last two.
        number = max(int(rng.integers(count[0], count[1] + 1)), int(plan_exit) + 2 * int(plan_occlusion))
        objects = [_shape(rng, size, shapes, pairs) for _ in range(number)]
        for obj in objects:
            _mover(obj, rng, size, frames)
        planned: list[tuple[int, str]] = []
        if plan_exit:
            _exit(objects[0], rng, size, frames)
            planned.append((0, "exit"))
        if plan_occlusion:
            # The last two: nothing is painted over the occluder, nothing between the two.
            _occlusion(objects[-1], objects[-2], rng, size, frames, pairs)
            planned.append((len(objects) - 2, "occlusion"))
        full = [
            [_draw_mask(o, *_pose(o, t, size), 1.0, o["angle"] + o["spin"] * t, size) for o in objects]
            for t in range(frames)
        ]
        visible = [_visible(per_frame) for per_frame in full]
        tracks = [
            [v[k] if v[k].sum() >= MIN_VISIBLE_PIXELS else np.zeros_like(v[k]) for v in visible]
            for k in range(len(objects))
        ]
        inside = [[bool(full[t][k].any()) for t in range(frames)] for k in range(len(objects))]
        gaps = [_gaps(track, inside[k]) for k, track in enumerate(tracks)]
        first_ok = all(
            track[0].sum() >= max(MIN_VISIBLE_PIXELS, 0.5 * full[0][k].sum())
            for k, track in enumerate(tracks)
        )
        if first_ok and all(event in gaps[k] for k, event in planned):
            break
    # (Never seen: after MAX_ATTEMPTS the last draw is kept, and its tags say what it shows.)
    image = [background.copy() for _ in range(frames)]
    for t in range(frames):
        for obj, mask in zip(objects, full[t]):
            image[t][mask] = np.asarray(COLORS[obj["color"]], dtype=np.float32) * obj["shade"]
        image[t] += rng.standard_normal(image[t].shape, dtype=np.float32) * 3.0  # sensor-like noise
    pixels = np.clip(np.stack(image), 0, 255).astype(np.uint8)
    records, facts = [], []
    for k, (obj, track) in enumerate(zip(objects, tracks)):
        first = next(t for t, m in enumerate(track) if m.any())
        attributes = {
            "color": obj["color"],
            "shape": obj["shape"],
            "size": obj["size"],
            "motion": obj["motion"],
        }
        if gaps[k]:  # what its masks show, planned or not: "exit", "occlusion"
            attributes["events"] = sorted(gaps[k])
        records.append(
            {
                "id": k + 1,
                "category_id": SHAPES.index(obj["shape"]) + 1,
                "iscrowd": False,
                "masks": [encode_mask(m) for m in track],
                "attributes": attributes,
            }
        )
        facts.append({**_mask_facts(track[first]), "frame": float(first), "radius": float(obj["radius"])})
    shown = set().union(*gaps)
    tags = [tag for tag in ("occlusion", "exit") if tag in shown]
    tags += ["reappearance"] if tags else []
    return VideoScene(records, tracks, facts, tags, encode_mp4(pixels, fps), kind)
