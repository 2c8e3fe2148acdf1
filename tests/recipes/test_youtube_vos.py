"""Ref-YouTube-VOS and YouTube-VOS 2019: frame-name gaps, palette PNGs, late / vanishing objects, a frame
without its PNG, a never-annotated referred object, a video without frames, first-frame prompts."""

import json

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.youtube_vos import write_ref_ytvos, write_ytvos19
from data_recipes.framework.recipe import LayoutError
from data_recipes.youtube_vos import RefYouTubeVOS, YouTubeVOS2019
from x2sam_lightning.data.rle import decode_rle


def _recipe(cls, **options):
    recipe = cls()
    for name, value in options.items():
        setattr(recipe, name, value)
    return recipe


def test_ref_ytvos_train_is_one_sample_per_video_val_one_per_expression(tmp_path):
    truth = write_ref_ytvos(tmp_path / "raw")
    for split in ("train", "val"):
        convert(RefYouTubeVOS(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", RefYouTubeVOS(), split, truth[split])
        by_id = {
            s["json"]["video"] + ("/" + s["json"]["references"][0]["id"] if split == "val" else ""): s
            for s in samples.values()
        }
        for sample_id, expected in truth[split].samples.items():
            got = by_id[sample_id]
            sample = got["json"]
            assert sample["task"] == "vid_refseg" and sample["modality"] == "video"
            assert sample["references"] == expected.extra["references"]
            assert sample["frame_times"] == pytest.approx(expected.extra["times"])
            assert sample["frame_times"][1] == pytest.approx(5 / 30, abs=1e-6)  # every 5th frame of 30 fps
            assert got["members"] == [*(f"{t:04d}.jpg" for t in range(expected.num_frames)), "json"]
            if split == "train":
                categories = {o["id"]: o["attributes"]["category"] for o in sample["objects"]}
                assert categories == expected.extra["categories"]
    # A frame listed without a PNG is null for every object; the never-annotated object 4 is nowhere.
    train = json.loads((tmp_path / "out" / "ref_ytvos-train.index.json").read_text())
    assert train["summary"]["skipped"] == {"video frames missing": 1}


def test_ref_ytvos_unit_video_keeps_every_expression_of_a_val_video(tmp_path):
    truth = write_ref_ytvos(tmp_path / "raw")
    recipe = _recipe(RefYouTubeVOS, unit="video")
    convert(recipe, tmp_path / "raw", tmp_path / "out", "val")
    index = json.loads((tmp_path / "out" / "ref_ytvos-val.index.json").read_text())
    assert index["num_samples"] == 1
    assert index["summary"]["objects"] == len({i for s in truth["val"].samples.values() for i in s.masks})


def test_ref_ytvos_without_val_every_has_no_val_and_layout_errors_name_the_file(tmp_path):
    write_ref_ytvos(tmp_path / "raw")
    with pytest.raises(LayoutError, match="--val-every"):
        _recipe(RefYouTubeVOS, val_every=0).check_layout(tmp_path / "raw", "val")
    (tmp_path / "raw" / "meta_expressions" / "train" / "meta_expressions.json").unlink()
    with pytest.raises(LayoutError, match="meta_expressions/train/meta_expressions.json"):
        RefYouTubeVOS().check_layout(tmp_path / "raw", "train")


def test_ytvos19_prompts_are_the_first_annotated_masks(tmp_path):
    truth = write_ytvos19(tmp_path / "raw")
    for split in ("train", "val"):
        convert(YouTubeVOS2019(), tmp_path / "raw", tmp_path / "out", split)
        samples = assert_matches_truth(tmp_path / "out", YouTubeVOS2019(), split, truth[split])
        for sample in samples.values():
            expected = truth[split].samples[sample["json"]["video"]]
            assert sample["json"]["task"] == "vid_objseg"
            assert sample["json"]["frame_times"] == pytest.approx(expected.extra["times"])
            for obj in sample["json"]["objects"]:
                prompt = obj["prompt"]
                assert prompt["type"] == "mask" and prompt["frame"] == expected.extra["first"][obj["id"]]
                truth_mask = expected.masks[obj["id"]][prompt["frame"]]
                np.testing.assert_array_equal(decode_rle(prompt["mask"]).astype(bool), truth_mask)
                if split == "train":
                    assert obj["attributes"]["category"] == expected.extra["categories"][obj["id"]]
                else:  # valid: only the first frame is given
                    assert sum(m is not None for m in obj["masks"]) == 1
    # Object 2 appears late (no mask on frame 0), object 3 vanishes before the end.
    train = truth["train"].samples
    assert all(s.masks[2][0] is None and s.masks[3][-1] is None for s in train.values())


def test_ytvos19_missing_meta_is_a_layout_error(tmp_path):
    write_ytvos19(tmp_path / "raw")
    (tmp_path / "raw" / "valid" / "meta.json").unlink()
    with pytest.raises(LayoutError, match="valid/meta.json"):
        YouTubeVOS2019().check_layout(tmp_path / "raw", "val")
