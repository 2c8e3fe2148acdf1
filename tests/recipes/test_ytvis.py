"""YouTube-VIS 2019 and 2021: both annotation layouts, list and string RLE, frame-name gaps, 1-based
category ids, null frames, the held-out val split and the unannotated valid split."""

import json

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.ytvis import CATEGORIES, write_ytvis19, write_ytvis21
from data_recipes.framework import LayoutError
from data_recipes.framework.recipe import sample_key
from data_recipes.ytvis import YTVIS19, YTVIS21
from x2sam_lightning.data.conversations import build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import P_START, VIDEO


def _check_split(recipe, out, split, truth):
    samples = assert_matches_truth(out, recipe, split, truth)
    for sample_id, expected in truth.samples.items():
        got = samples[sample_key(recipe.name, sample_id)]
        record = got["json"]
        assert got["members"] == [f"{t:04d}.jpg" for t in range(expected.num_frames)] + ["json"]
        np.testing.assert_allclose(record["frame_times"], expected.extra["frame_times"], atol=1e-6)
        assert record["video_id"] == expected.extra["video_id"]
        for obj in record["objects"]:
            assert obj["category_id"] == expected.extra["categories"][obj["id"]]
            assert obj["iscrowd"] == expected.extra["crowd"][obj["id"]]
    index = json.loads((out / f"{recipe.name}-{split}.index.json").read_text())
    assert index["task"] == recipe.task and index["modality"] == "video"
    assert index["categories"] == [{"id": c["id"], "name": c["name"], "isthing": True} for c in CATEGORIES]
    return samples


def test_ytvis19_train_val_and_valid(tmp_path):
    truth = write_ytvis19(tmp_path / "raw")
    gaps = [t for s in truth["train"].samples.values() for t in np.diff(s.extra["frame_times"])]
    assert {round(g * 30) for g in gaps} == {5, 10}  # the fixture has both steps
    for split in ("train", "val", "valid"):
        convert(YTVIS19(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = _check_split(YTVIS19(), tmp_path / "out", split, truth[split])
        if split == "valid":  # no public masks: videos without objects
            assert samples and all(s["json"]["objects"] == [] for s in samples.values())
    held_out = [s.extra["video_id"] for s in truth["val"].samples.values()]
    assert held_out and all(v % 10 == 0 for v in held_out)
    assert any(any(m is None for m in o) for s in truth["train"].samples.values() for o in s.masks.values())


def test_ytvis21_reads_instances_json_with_string_and_list_rle(tmp_path):
    truth = write_ytvis21(tmp_path / "raw")
    annotations = json.loads((tmp_path / "raw" / "train" / "instances.json").read_text())["annotations"]
    forms = {type(s["counts"]).__name__ for a in annotations for s in a["segmentations"] if s is not None}
    assert forms == {"list", "str"}
    for split in ("train", "val"):
        convert(YTVIS21(), tmp_path / "raw", tmp_path / "out", split)
        _check_split(YTVIS21(), tmp_path / "out", split, truth[split])


def test_genseg_video_builds_its_evaluation_conversation(tmp_path):
    write_ytvis19(tmp_path / "raw")
    convert(YTVIS19(), tmp_path / "raw", tmp_path / "out", "val")
    source = ShardSource("ytvis19_val", tmp_path / "out" / "ytvis19-val.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert samples
    for sample in samples:
        conversation = build_conversation(sample, "vid_genseg", train=False)
        check_conversation(conversation)
        assert conversation.messages[0]["content"].startswith(VIDEO + "\n")
        assert conversation.messages[0]["content"].count(P_START) == len(CATEGORIES)  # the whole vocabulary


def test_missing_annotation_file_is_a_layout_error(tmp_path):
    write_ytvis19(tmp_path / "raw")
    (tmp_path / "raw" / "train.json").unlink()
    with pytest.raises(LayoutError, match=r"train\.json.*train/instances\.json"):
        convert(YTVIS19(), tmp_path / "raw", tmp_path / "out", "train")
