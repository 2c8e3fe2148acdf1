"""Visual prompts: each type where PAPER_NOTES puts it, deterministic by seed, never empty when rendered."""

from __future__ import annotations

import math

import numpy as np
import pytest

from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.visual_prompts import (
    PROMPT_TYPES,
    box_geometry,
    mask_geometry,
    point_geometry,
    prompt_from_mask,
    prompt_geometry,
    render_prompt,
    scribble_geometry,
)


def _disk_mask(size=128, cx=60, cy=50, r=20) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r**2


def _ring_mask(size=128) -> np.ndarray:
    return _disk_mask(size, 64, 64, 30) & ~_disk_mask(size, 64, 64, 18)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("mask", [_disk_mask(), _ring_mask()], ids=["disk", "ring"])
def test_point_is_inside_the_mask_near_the_centroid(mask):
    x0, y0, x1, y1 = _box(mask)
    ys, xs = np.nonzero(mask)
    for seed in range(30):
        x, y = point_geometry(mask, np.random.default_rng(seed))
        assert mask[math.floor(y), math.floor(x)]
        if mask[int(ys.mean()), int(xs.mean())]:  # the ring's centroid is in its hole: nearest pixel
            assert math.hypot(x - xs.mean() - 0.5, y - ys.mean() - 0.5) <= 0.5 * min(x1 - x0, y1 - y0) + 1


def test_scribble_box_and_mask_stay_near_the_object():
    mask = _disk_mask()
    x0, y0, x1, y1 = _box(mask)
    w, h = x1 - x0, y1 - y0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        points = np.asarray(scribble_geometry(mask, rng, scale=128 / 1024))
        # Jittered box: sides scaled <= 1.2, centre moved <= 10%, plus the wiggle amplitude (<= 2.5 px).
        slack_x, slack_y = 0.1 * w + 0.1 * w + 2.5, 0.1 * h + 0.1 * h + 2.5
        assert points[:, 0].min() >= x0 - slack_x and points[:, 0].max() <= x1 + slack_x
        assert points[:, 1].min() >= y0 - slack_y and points[:, 1].max() <= y1 + slack_y
        drawn = render_prompt("scribble", points.tolist(), source_size=mask.shape)
        assert (drawn & mask).sum() > 0.3 * drawn.sum()  # a diagonal of a box of IoU >= 0.5 with the disk's
        bx0, by0, bx1, by1 = box_geometry(mask, rng)
        assert 0.9 * w - 1e-6 <= bx1 - bx0 <= 1.1 * w + 1e-6 and 0.9 * h - 1e-6 <= by1 - by0 <= 1.1 * h + 1e-6
        assert abs((bx0 + bx1) / 2 - (x0 + x1) / 2) < 1e-6
    coarse = mask_geometry(mask, scale=1.0)
    assert coarse[mask].mean() > 0.95 and coarse.sum() < 1.5 * mask.sum()


def test_prompts_are_deterministic_by_seed_and_vary_with_it():
    mask = _ring_mask()
    first = prompt_from_mask(mask, np.random.default_rng(3))
    assert first == prompt_from_mask(mask, np.random.default_rng(3))
    assert set(first) == {"frame", *PROMPT_TYPES} and first["mask"] == encode_mask(mask_geometry(mask, 0.125))
    second = prompt_from_mask(mask, np.random.default_rng(4))
    assert first["point"] != second["point"] and first["scribble"] != second["scribble"]


@pytest.mark.parametrize("target", [8, 64, 1024])
def test_one_pixel_object_renders_at_least_one_pixel_at_any_size(target):
    mask = np.zeros((100, 100), dtype=bool)
    mask[70, 13] = True
    rng = np.random.default_rng(0)
    for kind in PROMPT_TYPES:
        geometry = prompt_geometry(mask, kind, rng)
        stored = encode_mask(geometry) if kind == "mask" else geometry
        drawn = render_prompt(
            kind, stored, source_size=(100, 100), content_size=(target, target), canvas_size=(target + 5,) * 2
        )
        assert drawn.shape == (target + 5,) * 2 and drawn.any(), kind
        ys, xs = np.nonzero(drawn)
        assert ys.max() < target and xs.max() < target  # inside the content, not the padding
        # Near the object: its pixel (70, 13) maps to about (0.7, 0.13) of the target.
        assert abs(ys.mean() / target - 0.705) < 0.2 and abs(xs.mean() / target - 0.135) < 0.2, kind


def test_render_scales_with_the_target_and_keeps_aspect():
    point = [50.5, 20.5]  # in a 100 x 200 (h x w) image
    disk = render_prompt(
        "point", point, source_size=(100, 200), content_size=(512, 1024), canvas_size=(1024, 1024)
    )
    ys, xs = np.nonzero(disk)
    assert abs(xs.mean() - 50.5 * 5.12) < 1 and abs(ys.mean() - 20.5 * 5.12) < 1
    assert abs(disk.sum() - math.pi * 10**2) < 0.1 * math.pi * 10**2  # radius 10 at a 1024 px side
    small = render_prompt("point", point, source_size=(100, 200), content_size=(64, 128))
    assert small.shape == (64, 128) and 1 <= small.sum() <= 9  # radius >= 1 px
    box = render_prompt("box", [10, 10, 30, 20], source_size=(100, 200), content_size=(50, 100))
    assert box.sum() == 10 * 5 and box[5:10, 5:15].all()
    flipped = render_prompt(
        "box", [10, 10, 30, 20], source_size=(100, 200), content_size=(50, 100), hflip=True
    )
    assert flipped[5:10, 85:95].all() and flipped.sum() == 50


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="empty mask"):
        point_geometry(np.zeros((4, 4), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown prompt type"):
        render_prompt("lasso", [1, 1], source_size=(4, 4))
