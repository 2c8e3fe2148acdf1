"""VSPW: palette mask PNGs (0 "others" and 255 void are no objects, nor is a stray 254), string class
indices, one object per class present, a frame without its mask, skipped videos."""

import json

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.vspw import CLASSES, LABELS, write_vspw
from data_recipes.framework import LayoutError
from data_recipes.framework.recipe import sample_key
from data_recipes.vspw import VSPW


def test_vspw_one_object_per_class(tmp_path):
    truth = write_vspw(tmp_path / "raw")
    names = {int(v): k for k, v in LABELS.items()}
    for split in ("train", "val"):
        convert(VSPW(), tmp_path / "raw", tmp_path / "out", split)
        samples = assert_matches_truth(tmp_path / "out", VSPW(), split, truth[split])
        index = json.loads((tmp_path / "out" / f"vspw-{split}.index.json").read_text())
        assert index["categories"] == [{"id": c, "name": names[c], "isthing": False} for c in CLASSES]
        for sample_id, expected in truth[split].samples.items():
            record = samples[sample_key("vspw", sample_id)]["json"]
            assert record["ignore_label"] == 255
            assert all(o["id"] == o["category_id"] for o in record["objects"])
            np.testing.assert_allclose(record["frame_times"], expected.extra["frame_times"], atol=1e-6)
    val = next(iter(truth["val"].samples.values()))
    assert all(frames[1] is None for frames in val.masks.values())  # the frame without a mask


def test_missing_class_list_is_a_layout_error(tmp_path):
    write_vspw(tmp_path / "raw")
    (tmp_path / "raw" / "label_num_dic_final.json").unlink()
    with pytest.raises(LayoutError, match="label_num_dic_final.json"):
        convert(VSPW(), tmp_path / "raw", tmp_path / "out", "val")
