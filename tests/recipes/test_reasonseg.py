"""ReasonSeg: LabelMe-style json beside each image, LISA's target / ignore drawing rules, queries."""

from __future__ import annotations

import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.reasonseg import write_reasonseg
from data_recipes.framework.recipe import LayoutError, sample_key
from data_recipes.reasonseg import IGNORE_ID, TARGET_ID, ReasonSeg
from x2sam_lightning.data.conversations import build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, SEG


def test_every_split_holds_target_and_ignore_masks_and_the_queries(tmp_path):
    truth = write_reasonseg(tmp_path / "raw", scale=2)
    explained = 0
    for split in ReasonSeg.splits:
        convert(ReasonSeg(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=4)
        samples = assert_matches_truth(tmp_path / "out", ReasonSeg(), split, truth[split])
        for sample_id, expected in truth[split].samples.items():
            got = samples[sample_key("reasonseg", sample_id)]["json"]
            assert got["query"] == expected.extra["query"]
            assert got["references"] == [
                {"text": q, "object_ids": [TARGET_ID]} for q in expected.extra["queries"]
            ]
            assert got["is_sentence"] is expected.extra["is_sentence"]
            assert got.get("explanation") == expected.extra.get("explanation")
            explained += "explanation" in got
            crowd = {o["id"]: o["iscrowd"] for o in got["objects"]}
            assert crowd == {TARGET_ID: False, IGNORE_ID: True}  # every fixture image has an ignore region
    assert explained == 1
    assert any(
        "café" in q for s in truth.values() for t in s.samples.values() for q in t.extra["queries"]
    )  # the cp1252 file was read


def test_evaluation_asks_the_first_query_and_the_ignore_region_is_never_a_target(tmp_path):
    write_reasonseg(tmp_path / "raw")
    convert(ReasonSeg(), tmp_path / "raw", tmp_path / "out", "val")
    source = ShardSource("reasonseg_val", tmp_path / "out" / "reasonseg-val.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert len(samples) == 3
    for sample in samples:
        conversation = build_conversation(sample, "img_reaseg", train=False)
        check_conversation(conversation)
        query = sample.meta["query"].rstrip("?.! ")
        assert conversation.messages[0]["content"].startswith(f"{IMAGE}\n{P_START}{query}{P_END}")
        target = sample.targets.object_ids.tolist().index(TARGET_ID)
        assert conversation.condition_objects == [[target]]
        assert conversation.messages[1]["content"].count(SEG) == 1


def test_a_missing_split_folder_is_a_layout_error(tmp_path):
    write_reasonseg(tmp_path / "raw")
    for path in (tmp_path / "raw" / "ReasonSeg" / "test").iterdir():
        path.unlink()
    (tmp_path / "raw" / "ReasonSeg" / "test").rmdir()
    with pytest.raises(LayoutError, match=r"ReasonSeg test folder.*ReasonSeg/test"):
        convert(ReasonSeg(), tmp_path / "raw", tmp_path / "out", "test")
