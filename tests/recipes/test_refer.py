"""RefCOCO / RefCOCO+ / RefCOCOg (REFER pickles written as Python 2 writes them) and gRefCOCO (json refs
with multi-target and no-target expressions): every split, references, masks, conversations."""

from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.refer import FIXTURES
from data_recipes.framework.recipe import LayoutError, sample_key
from data_recipes.framework.writer import ConversionError
from data_recipes.refer import RECIPES, RefCOCO, RefCOCOg
from x2sam_lightning.data.conversations import build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import IMAGE, P_END, P_START, SEG

BY_NAME = {recipe.name: type(recipe) for recipe in RECIPES}


def _decoded(out, dataset: str, split: str) -> list:
    source = ShardSource(dataset, out / f"{dataset}-{split}.index.json")
    return list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_every_split_holds_each_expression_and_its_masks(tmp_path, dataset):
    recipe = BY_NAME[dataset]()
    truth = FIXTURES[dataset](tmp_path / "raw", scale=2)
    assert set(truth) == set(recipe.splits)
    for split in recipe.splits:
        convert(recipe, tmp_path / "raw", tmp_path / "out", split, items_per_shard=3)
        samples = assert_matches_truth(tmp_path / "out", recipe, split, truth[split])
        for sample_id, expected in truth[split].samples.items():
            got = samples[sample_key(dataset, sample_id)]["json"]
            assert got["references"] == expected.extra["references"], sample_id
            assert all(o["iscrowd"] is False for o in got["objects"])
            if split != "train":  # evaluation: one expression per sample
                assert len(got["references"]) == 1


def test_python2_pickle_text_is_read_as_written(tmp_path):
    """Byte-string keys come back as text; a UTF-8 byte string is not left as latin-1 mojibake."""
    truth = FIXTURES["refcoco"](tmp_path / "raw")
    convert(RefCOCO(), tmp_path / "raw", tmp_path / "out", "train")
    samples = assert_matches_truth(tmp_path / "out", RefCOCO(), "train", truth["train"])
    texts = [r["text"] for s in samples.values() for r in s["json"]["references"]]
    assert any(t.startswith("café ") for t in texts) and not any("Ã" in t for t in texts)


def test_a_pickle_that_names_a_callable_is_refused_without_running_it(tmp_path):
    FIXTURES["refcoco"](tmp_path / "raw")
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "raw" / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Exploit()], protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        convert(RefCOCO(), tmp_path / "raw", tmp_path / "out", "val")
    assert not marker.exists()


def test_evaluation_conversations_ask_the_first_reference_and_no_target_gets_no_seg(tmp_path):
    for dataset in ("refcoco", "grefcoco"):
        FIXTURES[dataset](tmp_path / dataset)
        convert(BY_NAME[dataset](), tmp_path / dataset, tmp_path / "out", "val")
        no_target = 0
        for sample in _decoded(tmp_path / "out", dataset, "val"):
            conversation = build_conversation(sample, "img_refseg", train=False)
            check_conversation(conversation)
            reference = sample.meta["references"][0]
            index = {i: n for n, i in enumerate(sample.targets.object_ids.tolist())}
            question, reply = conversation.messages[0]["content"], conversation.messages[1]["content"]
            assert question.startswith(f"{IMAGE}\n") and f"{P_START}{reference['text']}{P_END}" in question
            assert conversation.condition_objects == [sorted(index[i] for i in reference["object_ids"])]
            assert reply.count(SEG) == (1 if reference["object_ids"] else 0)
            no_target += not reference["object_ids"]
        assert no_target == (2 if dataset == "grefcoco" else 0)  # one per gRefCOCO val image


def test_training_samples_hold_every_expression_of_the_image_for_multi_turn_chats(tmp_path):
    FIXTURES["grefcoco"](tmp_path / "raw")
    convert(BY_NAME["grefcoco"](), tmp_path / "raw", tmp_path / "out", "train")
    sample = _decoded(tmp_path / "out", "grefcoco", "train")[0]
    assert [len(r["object_ids"]) for r in sample.meta["references"]] == [1, 2, 0]
    turns = set()
    for seed in range(12):
        conversation = build_conversation(sample, "img_refseg", np.random.default_rng(seed), train=True)
        check_conversation(conversation)
        turns.add(len(conversation.messages) // 2)
    assert turns == {1, 2, 3}


def test_missing_refs_file_or_split_is_a_layout_error(tmp_path):
    truth = FIXTURES["refcocog"](tmp_path / "raw")
    (tmp_path / "raw" / "refcocog" / "refs(umd).p").rename(tmp_path / "raw" / "refcocog" / "refs(google).p")
    with pytest.raises(LayoutError, match=r"refs\(umd\)\.p"):
        convert(RefCOCOg(), tmp_path / "raw", tmp_path / "out", "train")
    google = RefCOCOg()
    parser = argparse.ArgumentParser()
    google.add_arguments(parser)
    google.configure(parser.parse_args(["--refcocog-split-by", "google"]))
    assert convert(google, tmp_path / "raw", tmp_path / "out", "train").samples == len(truth["train"].samples)
    (tmp_path / "raw" / "refcocog" / "instances.json").unlink()
    with pytest.raises(LayoutError, match="instances.json"):
        convert(google, tmp_path / "raw", tmp_path / "out2", "val")


def test_images_elsewhere_are_found_with_the_images_option(tmp_path):
    FIXTURES["refcocoplus"](tmp_path / "raw")
    moved = tmp_path / "coco" / "train2014"
    moved.parent.mkdir()
    (tmp_path / "raw" / "images" / "mscoco" / "images" / "train2014").rename(moved)
    recipe = BY_NAME["refcocoplus"]()
    with pytest.raises(LayoutError, match="--images"):
        convert(recipe, tmp_path / "raw", tmp_path / "out", "val")
    parser = argparse.ArgumentParser()
    recipe.add_arguments(parser)
    recipe.configure(parser.parse_args(["--images", str(moved)]))
    assert convert(recipe, tmp_path / "raw", tmp_path / "out", "val").samples > 0
    with pytest.raises(ConversionError):  # every image missing: nothing converted is an error
        recipe.configure(parser.parse_args(["--images", str(tmp_path)]))
        convert(recipe, tmp_path / "raw", tmp_path / "out3", "val")
