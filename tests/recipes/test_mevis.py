"""MeViS and ReVOS: multi-object and no-target expressions, RLE in list and string form, null frames,
ReVOS types (referring / reasoning / no target), video ids with a source prefix, skipped videos."""

import pytest
from helpers.recipes import assert_referring_splits, convert

from data_recipes.fixtures.mevis import write_mevis, write_revos
from data_recipes.framework.recipe import LayoutError
from data_recipes.mevis import MeViS, ReVOS


def _check(recipe_cls, truth, tmp_path):
    return assert_referring_splits(recipe_cls(), tmp_path / "raw", tmp_path / "out", truth)


def test_mevis_multi_object_and_no_target_expressions(tmp_path):
    truth = write_mevis(tmp_path / "raw")
    by_id = _check(MeViS, truth, tmp_path)
    refs = [s["references"][0] for s in by_id.values()]
    assert any(len(r["object_ids"]) == 2 for r in refs), "a multi-object expression"
    assert any(r["object_ids"] == [] for r in refs), "a no-target expression"
    assert all(s["task"] == "vid_refseg" for s in by_id.values())


def test_revos_keeps_the_expression_type(tmp_path):
    truth = write_revos(tmp_path / "raw")
    by_id = _check(ReVOS, truth, tmp_path)
    types = {r["type"] for s in by_id.values() for r in s["references"]}
    assert types == {"referring", "reasoning", "no_target"}
    assert all(s["task"] == "vid_reaseg" for s in by_id.values())
    assert any("/" in s["video"] for s in by_id.values())


def test_mask_dict_layout_errors(tmp_path):
    write_mevis(tmp_path / "raw")
    (tmp_path / "raw" / "valid_u" / "mask_dict.json").unlink()
    with pytest.raises(LayoutError, match="valid_u/mask_dict.json"):
        MeViS().check_layout(tmp_path / "raw", "val")
    write_revos(tmp_path / "revos")
    (tmp_path / "revos" / "meta_expressions_valid_.json").unlink()
    with pytest.raises(LayoutError, match="meta_expressions_valid_.json"):
        ReVOS().check_layout(tmp_path / "revos", "val")


def test_converted_samples_build_their_evaluation_conversation(tmp_path):
    from x2sam_lightning.data.conversations import build_conversation, check_conversation
    from x2sam_lightning.data.shards import ClipSampler, iter_source
    from x2sam_lightning.data.sources import ShardSource
    from x2sam_lightning.data.transforms import ResizePadNormalize

    write_revos(tmp_path / "raw")
    convert(ReVOS(), tmp_path / "raw", tmp_path / "out", "val")
    source = ShardSource("revos_val", tmp_path / "out" / "revos-val.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert samples
    for sample in samples:
        conversation = build_conversation(sample, train=False)
        check_conversation(conversation)
        reference = sample.meta["references"][0]
        assert reference["text"].rstrip("?.! ") in conversation.messages[0]["content"]
        assert len(conversation.condition_objects[0]) == len(reference["object_ids"])
