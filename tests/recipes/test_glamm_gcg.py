"""GLaMM's GCG sets (GranD-f train / val / test, RefCOCOg, OpenPSG, Flickr30k): captions, phrase spans
that index the stored caption, one object per mask, and the grounded answer they build."""

from __future__ import annotations

import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.glamm_gcg import FIXTURES
from data_recipes.framework.recipe import LayoutError, sample_key
from data_recipes.glamm_gcg import RECIPES, GranDfGCG, clean_phrases
from x2sam_lightning.data.conversations import build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import P_END, P_START, SEG

BY_NAME = {recipe.name: type(recipe) for recipe in RECIPES}


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_captions_phrases_and_masks_match_the_annotations(tmp_path, dataset):
    recipe = BY_NAME[dataset]()
    truth = FIXTURES[dataset](tmp_path / "raw", scale=2)
    for split, expected_split in truth.items():
        convert(recipe, tmp_path / "raw", tmp_path / "out", split, items_per_shard=3)
        samples = assert_matches_truth(tmp_path / "out", recipe, split, expected_split)
        for sample_id, expected in expected_split.samples.items():
            got = samples[sample_key(dataset, sample_id)]["json"]
            assert got["caption"] == expected.extra["caption"]
            assert got["phrases"] == expected.extra["phrases"], sample_id


def test_grandf_evaluation_answer_marks_each_phrase_in_the_caption(tmp_path):
    FIXTURES["grandf_gcg"](tmp_path / "raw")
    convert(GranDfGCG(), tmp_path / "raw", tmp_path / "out", "test")
    source = ShardSource("grandf_gcg_test", tmp_path / "out" / "grandf_gcg-test.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert [s.key for s in samples] == ["grandf_gcg/sa_test_0", "grandf_gcg/sa_test_1"]  # string image ids
    for sample in samples:
        conversation = build_conversation(sample, "img_gcgseg", train=False)
        check_conversation(conversation)
        assert conversation.messages[1]["content"] == (
            f"{P_START}A dog{P_END}{SEG} watches {P_START}a dog{P_END}{SEG} on "
            f"{P_START}the grass{P_END}{SEG}."
        )
        ids = sample.targets.object_ids.tolist()
        assert conversation.condition_objects == [[0], [1], [2]]  # label k goes with mask k
        assert len(ids) == 3 + int(sample.key.endswith("1"))  # the unlabelled extra mask stays an object


def test_span_cleaning_trims_merges_and_cuts_overlaps():
    caption = "the man in a red shirt and a dog"
    phrases = clean_phrases(
        caption, [(0, 22, [1]), (11, 22, [2]), (26, 32, [3]), (27, 32, [4]), (26, 32, [5])]
    )
    assert phrases == [
        {"span": [0, 10], "object_ids": [1]},
        {"span": [11, 22], "object_ids": [2]},
        {"span": [27, 32], "object_ids": [3, 4, 5]},  # " a dog" trimmed to "a dog", then merged
    ]
    assert [caption[slice(*p["span"])] for p in phrases] == ["the man in", "a red shirt", "a dog"]
    with pytest.raises(ValueError, match="not inside the caption"):
        clean_phrases(caption, [(30, 40, [1])])


def test_a_missing_annotation_file_is_a_layout_error(tmp_path):
    FIXTURES["flickr_gcg"](tmp_path / "raw")
    with pytest.raises(LayoutError, match=r"GranDf/annotations/val_test/val_gcg_coco_caption_gt\.json"):
        convert(GranDfGCG(), tmp_path / "raw", tmp_path / "out", "val")
    with pytest.raises(LayoutError, match="GranDf_HA_images"):
        (tmp_path / "raw" / "GranDf" / "annotations" / "train" / "GranDf_HA_GCG_train.json").write_text("[]")
        convert(GranDfGCG(), tmp_path / "raw", tmp_path / "out", "train")
