"""The synthetic generator: deterministic per sample, held-out val, idempotent, atomic layout."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers.synthetic import TINY

from x2sam_lightning.data import synthetic
from x2sam_lightning.data.schema import validate_index, validate_sample

CFG = synthetic.SyntheticConfig(**TINY)


def test_image_sample_is_deterministic_and_val_differs():
    first_json, first_png, first_masks = synthetic.make_image_sample(3, "train", CFG)
    again_json, again_png, again_masks = synthetic.make_image_sample(3, "train", CFG)
    assert first_json == again_json and first_png == again_png
    assert all(np.array_equal(a, b) for a, b in zip(first_masks, again_masks))
    val_json, val_png, _ = synthetic.make_image_sample(3, "val", CFG)
    assert val_png != first_png and val_json != first_json
    other_seed = synthetic.make_image_sample(3, "train", replace(CFG, seed=1))[1]
    assert other_seed != first_png


def test_video_sample_is_deterministic_and_val_differs():
    first_json, first_mp4, _ = synthetic.make_video_sample(1, "train", CFG)
    for _ in range(40):  # x264's CRF mode once gave one of two bitstreams, about one call in 40
        again_json, again_mp4, _ = synthetic.make_video_sample(1, "train", CFG)
        assert first_json == again_json and first_mp4 == again_mp4
    assert synthetic.make_video_sample(1, "val", CFG)[1] != first_mp4


@pytest.mark.parametrize("index", range(6))
def test_objects_are_visible_disjoint_and_described(index):
    sample, _, masks = synthetic.make_image_sample(index, "train", CFG)
    validate_sample(sample, url="mem", key=str(index))
    assert 1 <= len(sample["objects"]) <= 6 and len(masks) == len(sample["objects"])
    # Painter's order: visible masks never overlap, and each keeps enough pixels.
    assert int(np.sum(masks, axis=0).max()) <= 1
    assert min(int(m.sum()) for m in masks) >= synthetic.MIN_VISIBLE_PIXELS
    for obj in sample["objects"]:
        attrs = obj["attributes"]
        assert set(attrs) == {"color", "shape", "size", "position"}
        assert synthetic.CATEGORIES[obj["category_id"] - 1]["name"] == attrs["shape"]
        assert obj["expressions"] and all(attrs["shape"] in e for e in obj["expressions"])


def test_video_tracks_have_null_where_absent():
    for index in range(4):
        sample, _, tracks = synthetic.make_video_sample(index, "train", CFG)
        for obj, track in zip(sample["objects"], tracks):
            assert len(obj["masks"]) == CFG.frames
            assert [m is None for m in obj["masks"]] == [m is None for m in track]
            assert any(m is not None for m in track)


def test_layout_index_and_idempotence(tiny_root, tiny_kwargs):
    assert tiny_kwargs == TINY
    for dataset, split, shards in [
        ("synthetic_img", "train", 3),
        ("synthetic_img", "val", 2),
        ("synthetic_vid", "train", 2),
        ("synthetic_vid", "val", 1),
    ]:
        path = tiny_root / f"{dataset}-{split}.index.json"
        index = validate_index(json.loads(path.read_text()), path=str(path))
        assert index["dataset"] == dataset and index["split"] == split
        assert [s["url"] for s in index["shards"]] == [
            f"{dataset}-{split}-{i:06d}.tar" for i in range(shards)
        ]
        assert all((tiny_root / s["url"]).is_file() for s in index["shards"])
        assert index["categories"] == synthetic.CATEGORIES
    assert synthetic.generate_synthetic(tiny_root, **TINY) == {}  # same config: nothing to do
    assert not list(tiny_root.glob(".*"))  # no temp folder left behind


def test_changed_config_regenerates_only_what_changed(tmp_path):
    small = {**TINY, "num_train_videos": 0, "num_val_videos": 0, "num_train_images": 4, "num_val_images": 2}
    assert set(synthetic.generate_synthetic(tmp_path, **small)) == {
        "synthetic_img-train",
        "synthetic_img-val",
    }
    done = synthetic.generate_synthetic(tmp_path, **{**small, "num_train_images": 5})
    assert set(done) == {"synthetic_img-train"}
    index = json.loads((tmp_path / "synthetic_img-train.index.json").read_text())
    assert index["num_samples"] == 5 and index["config"]["num_samples"] == 5
    (tmp_path / "synthetic_img-val-000000.tar").unlink()  # a missing shard also triggers regeneration
    assert synthetic.ensure_synthetic(tmp_path, **small) == tmp_path
    assert (tmp_path / "synthetic_img-val-000000.tar").is_file()
