"""DAVIS 2017 (first-frame mask prompts) and its referring expressions (Khoreva et al.): palette PNGs with
void pixels, late / vanishing objects, Latin-1 text files, misspelt video names, skipped videos."""

import json

import numpy as np
import pytest
from helpers.recipes import assert_matches_truth, assert_referring_splits, convert, read_back

from data_recipes.davis import Davis2017, Davis2017Referring, read_expressions
from data_recipes.fixtures.davis import write_davis17, write_davis17_ref
from data_recipes.framework.recipe import LayoutError
from x2sam_lightning.data.rle import decode_rle


def test_davis17_objects_prompted_by_their_first_mask(tmp_path):
    truth = write_davis17(tmp_path / "raw")
    for split in ("train", "val"):
        convert(Davis2017(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", Davis2017(), split, truth[split])
        for sample in samples.values():
            expected = truth[split].samples[sample["json"]["video"]]
            assert sample["json"]["frame_times"] == pytest.approx(expected.extra["times"], abs=1e-6)
            assert 255 not in {o["id"] for o in sample["json"]["objects"]}
            for obj in sample["json"]["objects"]:
                first = next(t for t, m in enumerate(expected.masks[obj["id"]]) if m is not None)
                assert obj["prompt"]["frame"] == first and obj["prompt"]["type"] == "mask"
                np.testing.assert_array_equal(
                    decode_rle(obj["prompt"]["mask"]).astype(bool), expected.masks[obj["id"]][first]
                )
    late = [s for s in truth["train"].samples.values() if s.masks[2][0] is None]
    assert late, "the fixture has objects that appear after the first frame"


def test_davis17_ref_expressions_per_video_in_train_per_expression_in_val(tmp_path):
    truth = write_davis17_ref(tmp_path / "raw")
    assert_referring_splits(Davis2017Referring(), tmp_path / "raw", tmp_path / "out", truth)
    # The misspelt "clasic-car" lines reach the DAVIS video, annotator 2's Latin-1 text decodes.
    texts = [r["text"] for r in truth["train"].samples["classic-car"].extra["references"]]
    assert texts == [r["text"] for r in by_id_train(tmp_path)["classic-car"]["references"]]
    annot2 = read_expressions(tmp_path / "raw" / "davis_text_annotations" / "Davis17_annot2.txt")
    assert any("café" in text for _, _, text in annot2)


def by_id_train(tmp_path):
    index = json.loads((tmp_path / "out" / "davis17_ref-train.index.json").read_text())
    assert index["summary"]["skipped"] == {"video frames missing": 1}

    return {
        s["json"]["video"]: s["json"] for s in read_back(tmp_path / "out", "davis17_ref", "train").values()
    }


def test_davis17_ref_layout_error_names_the_text_file(tmp_path):
    write_davis17_ref(tmp_path / "raw")
    (tmp_path / "raw" / "davis_text_annotations" / "Davis17_annot1.txt").unlink()
    with pytest.raises(LayoutError, match="Davis17_annot1.txt"):
        Davis2017Referring().check_layout(tmp_path / "raw", "train")
    (tmp_path / "raw" / "DAVIS" / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(LayoutError, match="ImageSets/2017/val.txt"):
        Davis2017().check_layout(tmp_path / "raw", "val")
