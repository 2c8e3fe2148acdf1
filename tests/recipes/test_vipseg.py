"""VIPSeg: 16-bit label PNGs (stuff ``class + 1``, thing instances ``(class + 1) * 100 + k``), 0-based
category ids, frame-name gaps, a frame without its label PNG, a missing video."""

import json

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.vipseg import CATEGORIES, write_vipseg
from data_recipes.framework import LayoutError
from data_recipes.framework.recipe import sample_key
from data_recipes.vipseg import VIPSeg


def test_vipseg_tracks_per_label_value(tmp_path):
    truth = write_vipseg(tmp_path / "raw")
    null_frames = 0
    for split in ("train", "val"):
        convert(VIPSeg(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", VIPSeg(), split, truth[split])
        index = json.loads((tmp_path / "out" / f"vipseg-{split}.index.json").read_text())
        assert index["categories"] == [
            {"id": c["id"], "name": c["name"], "isthing": bool(c["isthing"])} for c in CATEGORIES
        ]
        for sample_id, expected in truth[split].samples.items():
            record = samples[sample_key("vipseg", sample_id)]["json"]
            np.testing.assert_allclose(record["frame_times"], expected.extra["frame_times"], atol=1e-6)
            categories = {o["id"]: o["category_id"] for o in record["objects"]}
            assert categories == expected.extra["categories"]
            null_frames += sum(
                all(o["masks"][t] is None for o in record["objects"]) for t in range(expected.num_frames)
            )
    assert null_frames >= 1  # the frame whose label PNG is missing
    stuff = {v for s in truth["train"].samples.values() for v in s.masks if v < 125}
    instances = {v for s in truth["train"].samples.values() for v in s.masks if v >= 125}
    assert {1, 14} <= stuff and {6101, 12401} <= instances


def test_missing_category_list_is_a_layout_error(tmp_path):
    write_vipseg(tmp_path / "raw")
    (tmp_path / "raw" / "VIPSeg_720P" / "panoVIPSeg_categories.json").unlink()
    with pytest.raises(LayoutError, match="panoVIPSeg_categories.json"):
        convert(VIPSeg(), tmp_path / "raw", tmp_path / "out", "train")
