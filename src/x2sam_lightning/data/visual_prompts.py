"""Visual prompts (point, scribble, box, mask) from an object mask, and their rendering as prompt masks.

Two steps, so a shard can store prompts and a model can read them at any input size:

1. :func:`prompt_geometry` draws the *geometry* of one prompt type from a binary mask and a seeded
   generator; :func:`prompt_from_mask` draws several types into the shard format of an object's
   ``prompt``: ``{"frame": int, "point": [x, y], "scribble": [[x, y], ...], "box": [x0, y0, x1, y1],
   "mask": <COCO RLE>}``.
2. :func:`render_prompt` draws stored geometry as a bool mask at a target size (the model input after
   :class:`~x2sam_lightning.data.transforms.ResizePadNormalize`: content ``h x w`` in the top-left corner
   of an ``H x W`` canvas). A rendered prompt is never empty: a one-pixel object still gives a pixel.

Coordinates are continuous pixel coordinates of the stored media: x to the right, y down, pixel
``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` (COCO's box convention). A point is stored as the
centre of a mask pixel, so it lies inside the mask at any resolution it is rendered at.

How each type is drawn (PAPER_NOTES.md, "visual prompts from a mask"):

- point: a random offset from the mask centroid within half the shorter side of the mask's box (a few
  tries), kept when it falls inside the mask, else the mask pixel nearest the centroid; rendered as a disk.
- scribble: the mask box jittered (each side scaled by U(0.5, 1.2), centre shifted up to 10% of the side,
  kept when IoU with the box >= 0.5), its diagonal (one of the two, either direction) with a sine wiggle
  across it (amplitude U(10, 20), frequency U(0.2, 1) radians per pixel), as a polyline; rendered
  dilated.
- box: the mask box, width and height scaled by U(0.9, 1.1) about its centre, clipped; rendered filled.
- mask: the mask blurred (Gaussian, sigma 2) and thresholded at the blurred map's mean (a coarse,
  slightly grown mask); rendered by nearest-neighbour resizing as the targets are.

The pixel constants (disk radius 10, dilation 5, wiggle amplitude 10-20 and period, blur sigma 2) are
meant for images whose longer side is about :data:`REFERENCE_SIDE` = 1024 px: they are multiplied by
``longer side / 1024`` (the stored media's side when drawing geometry, the rendered content's side when
rendering), and the disk and dilation radii are at least one pixel. A 128 px image thus gets a point disk
of radius ~1.3 px, a 1024 px image the paper's 10 px.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from x2sam_lightning.data.schema import PROMPT_TYPES  # the shard format names the types; re-exported

#: The image side the pixel constants below are meant for.
REFERENCE_SIDE = 1024
POINT_RADIUS = 10.0
SCRIBBLE_DILATION = 5.0
SCRIBBLE_AMPLITUDE = (10.0, 20.0)
SCRIBBLE_FREQUENCY = (0.2, 1.0)  # radians per reference pixel along the diagonal
SCRIBBLE_BOX_SCALE = (0.5, 1.2)
SCRIBBLE_MIN_IOU = 0.5
BOX_SCALE = (0.9, 1.1)
MASK_BLUR_SIGMA = 2.0
#: Most points a stored scribble polyline has (two per stored pixel of diagonal, up to this many).
MAX_SCRIBBLE_POINTS = 256
_TRIES = 20


def pixel_scale(height: int, width: int) -> float:
    """How much the 1024-px pixel constants shrink or grow for an image of this size."""
    return max(int(height), int(width)) / REFERENCE_SIDE


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a prompt is drawn from one [H, W] mask, got shape {list(mask.shape)}")
    if not mask.any():
        raise ValueError("cannot draw a visual prompt from an empty mask")
    return mask


def point_geometry(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    """``[x, y]``: the centre of a mask pixel near the centroid (see the module docstring)."""
    mask = _check_mask(mask)
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    x0, y0, x1, y1 = _mask_box(mask)
    radius = 0.5 * min(x1 - x0, y1 - y0)
    h, w = mask.shape
    for _ in range(_TRIES):
        angle, rho = rng.uniform(0.0, 2 * math.pi), radius * math.sqrt(rng.uniform())
        j, i = math.floor(cx + rho * math.cos(angle)), math.floor(cy + rho * math.sin(angle))
        if 0 <= i < h and 0 <= j < w and mask[i, j]:
            return [j + 0.5, i + 0.5]
    nearest = int(np.argmin((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2))  # e.g. a ring's empty centre
    return [float(xs[nearest]) + 0.5, float(ys[nearest]) + 0.5]


def _jittered_box(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float]:
    box = _mask_box(mask)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    for _ in range(_TRIES):
        sw, sh = rng.uniform(*SCRIBBLE_BOX_SCALE, size=2)
        dx, dy = rng.uniform(-0.1, 0.1, size=2) * (w, h)
        cx, cy = (x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy
        candidate = (cx - sw * w / 2, cy - sh * h / 2, cx + sw * w / 2, cy + sh * h / 2)
        if _box_iou(candidate, box) >= SCRIBBLE_MIN_IOU:
            return candidate
    return box


def scribble_geometry(mask: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> list[list[float]]:
    """``[[x, y], ...]``: a wiggly diagonal of the jittered mask box, clipped to the image.

    Args:
        mask: ``[H, W]`` bool, not empty.
        rng: the generator.
        scale: :func:`pixel_scale` of the image (amplitude and frequency follow it).
    """
    mask = _check_mask(mask)
    x0, y0, x1, y1 = _jittered_box(mask, rng)
    corners = [(x0, y0), (x1, y1)] if rng.random() < 0.5 else [(x1, y0), (x0, y1)]
    if rng.random() < 0.5:
        corners.reverse()
    (ax, ay), (bx, by) = corners
    length = math.hypot(bx - ax, by - ay)
    amplitude = rng.uniform(*SCRIBBLE_AMPLITUDE) * scale
    frequency = rng.uniform(*SCRIBBLE_FREQUENCY) / max(scale, 1e-6)  # radians per stored pixel
    n = int(min(MAX_SCRIBBLE_POINTS, max(8, math.ceil(2 * length))))
    t = np.linspace(0.0, length, n)
    ux, uy = ((bx - ax) / length, (by - ay) / length) if length > 0 else (1.0, 0.0)
    offset = amplitude * np.sin(frequency * t)
    h, w = mask.shape
    xs = np.clip(ax + ux * t - uy * offset, 0.0, w)
    ys = np.clip(ay + uy * t + ux * offset, 0.0, h)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in zip(xs, ys)]


def box_geometry(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    """``[x0, y0, x1, y1]``: the mask box with width and height scaled by U(0.9, 1.1), clipped."""
    mask = _check_mask(mask)
    x0, y0, x1, y1 = _mask_box(mask)
    sw, sh = rng.uniform(*BOX_SCALE, size=2)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * sw, (y1 - y0) * sh
    height, width = mask.shape
    box = [
        max(0.0, cx - w / 2),
        max(0.0, cy - h / 2),
        min(float(width), cx + w / 2),
        min(float(height), cy + h / 2),
    ]
    return [round(v, 2) for v in box]


def mask_geometry(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``[H, W]`` bool: the mask blurred (sigma ``2 * scale``, at least 0.5) and thresholded at its mean."""
    mask = _check_mask(mask)
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), sigma=max(MASK_BLUR_SIGMA * scale, 0.5))
    coarse = blurred > blurred.mean()
    return coarse if coarse.any() else mask


def prompt_geometry(mask: np.ndarray, kind: str, rng: np.random.Generator, scale: float | None = None) -> Any:
    """The geometry of one prompt type drawn from ``mask`` (``mask`` geometry is a bool array here).

    Args:
        mask: ``[H, W]`` bool, not empty.
        kind: one of :data:`PROMPT_TYPES`.
        rng: the generator (the same generator state gives the same prompt).
        scale: :func:`pixel_scale` of the image; default from the mask's size.

    Raises:
        ValueError: for an unknown kind or an empty mask.
    """
    scale = pixel_scale(*np.shape(mask)) if scale is None else scale
    if kind == "point":
        return point_geometry(mask, rng)
    if kind == "scribble":
        return scribble_geometry(mask, rng, scale)
    if kind == "box":
        return box_geometry(mask, rng)
    if kind == "mask":
        return mask_geometry(mask, scale)
    raise ValueError(f"unknown prompt type {kind!r}; expected one of {PROMPT_TYPES}")


def prompt_from_mask(
    mask: np.ndarray, rng: np.random.Generator, kinds: Sequence[str] = PROMPT_TYPES, *, frame: int = 0
) -> dict[str, Any]:
    """The shard record of an object's prompts: ``{"frame", <kind>: geometry, ...}``, mask as COCO RLE."""
    from x2sam_lightning.data.rle import encode_mask

    record: dict[str, Any] = {"frame": int(frame)}
    for kind in kinds:
        geometry = prompt_geometry(mask, kind, rng)
        record[kind] = encode_mask(geometry) if kind == "mask" else geometry
    return record


# --------------------------------------------------------------------------------------------- rendering
def _disk(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= radius**2


def _render_points(
    points: np.ndarray, radius: float, content: tuple[int, int], canvas: tuple[int, int]
) -> np.ndarray:
    """Pixels containing ``points`` ([K, 2] x, y in canvas pixels), dilated by a disk of ``radius``."""
    h, w = content
    out = np.zeros(canvas, dtype=bool)
    cols = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, h - 1)
    out[rows, cols] = True
    if radius >= 1:  # dilate only the window around the points (a 1024 px canvas is large)
        r = int(math.floor(radius))
        i0, i1 = max(0, int(rows.min()) - r), min(h, int(rows.max()) + r + 1)
        j0, j1 = max(0, int(cols.min()) - r), min(w, int(cols.max()) + r + 1)
        out[i0:i1, j0:j1] = ndimage.binary_dilation(out[i0:i1, j0:j1], structure=_disk(radius))
    return out


def _polyline_samples(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points every ``step`` pixels along a polyline ``[K, 2]`` (its vertices included)."""
    samples = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / step))
        samples.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(samples)


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with PyTorch's ``nearest-exact`` rule (what the target masks get)."""
    h0, w0 = mask.shape
    h, w = size
    rows = np.minimum(((np.arange(h) + 0.5) * h0 / h).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * w0 / w).astype(np.int64), w0 - 1)
    return mask[rows[:, None], cols[None, :]]


def _as_mask(value: Any) -> np.ndarray:
    if isinstance(value, Mapping):
        from x2sam_lightning.imports import require

        return require("pycocotools.mask").decode(dict(value)).astype(bool)
    return np.asarray(value, dtype=bool)


def render_prompt(
    kind: str,
    geometry: Any,
    *,
    source_size: tuple[int, int],
    content_size: tuple[int, int] | None = None,
    canvas_size: tuple[int, int] | None = None,
    hflip: bool = False,
) -> np.ndarray:
    """Draw one prompt's geometry as a bool mask at a target size; never empty.

    Args:
        kind: one of :data:`PROMPT_TYPES`.
        geometry: as stored (point ``[x, y]``, scribble ``[[x, y], ...]``, box ``[x0, y0, x1, y1]``, mask
            COCO RLE or ``[h0, w0]`` bool array), in pixels of an image of ``source_size``.
        source_size: ``(h0, w0)`` the geometry's coordinates refer to.
        content_size: ``(h, w)`` the source image is resized to (default: ``source_size``).
        canvas_size: ``(H, W)`` of the output, content in its top-left corner (default: ``content_size``).
        hflip: mirror the prompt horizontally (as a flipped image).

    Returns:
        ``[H, W]`` bool with at least one True pixel inside the content area.
    """
    h0, w0 = source_size
    h, w = content_size or source_size
    canvas = canvas_size or (h, w)
    sx, sy = w / w0, h / h0
    scale = pixel_scale(h, w)
    if kind == "mask":
        source = _as_mask(geometry)
        if source.shape != (h0, w0):
            raise ValueError(f"mask prompt of size {list(source.shape)} for a source of size {[h0, w0]}")
        resized = _resize_nearest(source, (h, w))
        if not resized.any() and source.any():  # an object smaller than one target pixel
            ys, xs = np.nonzero(source)
            resized[min(int((ys.mean() + 0.5) * sy), h - 1), min(int((xs.mean() + 0.5) * sx), w - 1)] = True
        out = np.zeros(canvas, dtype=bool)
        out[:h, :w] = resized
    elif kind == "box":
        x0, y0, x1, y1 = (float(v) for v in geometry)
        x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
        # Pixels whose centre is inside the box; at least the pixel holding the box centre.
        c0, c1 = max(0, math.ceil(x0 - 0.5)), min(w, math.ceil(x1 - 0.5))
        r0, r1 = max(0, math.ceil(y0 - 0.5)), min(h, math.ceil(y1 - 0.5))
        if c1 <= c0:
            c0 = min(max(int((x0 + x1) / 2), 0), w - 1)
            c1 = c0 + 1
        if r1 <= r0:
            r0 = min(max(int((y0 + y1) / 2), 0), h - 1)
            r1 = r0 + 1
        out = np.zeros(canvas, dtype=bool)
        out[r0:r1, c0:c1] = True
    elif kind in ("point", "scribble"):
        points = np.asarray(geometry, dtype=np.float64).reshape(-1, 2) * (sx, sy)
        if kind == "scribble":
            points = _polyline_samples(points)
        radius = max(1.0, (POINT_RADIUS if kind == "point" else SCRIBBLE_DILATION) * scale)
        out = _render_points(points, radius, (h, w), canvas)
    else:
        raise ValueError(f"unknown prompt type {kind!r}; expected one of {PROMPT_TYPES}")
    if hflip:
        out[:h, :w] = out[:h, :w][:, ::-1]
    return out


__all__ = [
    "PROMPT_TYPES",
    "REFERENCE_SIDE",
    "box_geometry",
    "mask_geometry",
    "pixel_scale",
    "point_geometry",
    "prompt_from_mask",
    "prompt_geometry",
    "render_prompt",
    "scribble_geometry",
]
