"""ADE20K panoptic (detectron2's conversion): string image ids, 0-based category ids, open-vocabulary
evaluation conversations over the whole vocabulary."""

import json

import pytest
from helpers.image_conversations import eval_conversations
from helpers.recipes import assert_matches_truth, convert

from data_recipes.ade20k import ADE20KPanoptic
from data_recipes.fixtures.ade20k import ADE20K_NAMES, write_ade20k_panoptic
from data_recipes.framework.layout import LayoutError
from data_recipes.framework.recipe import sample_key
from x2sam_lightning.special_tokens import P_START


@pytest.mark.parametrize("top", ["parent", "folder"])
def test_ade20k_panoptic_val_keeps_string_ids_and_zero_based_categories(tmp_path, top):
    truth = write_ade20k_panoptic(tmp_path / "raw", scale=1)["val"]
    root = tmp_path / "raw" if top == "parent" else tmp_path / "raw" / "ADEChallengeData2016"
    convert(ADE20KPanoptic(), root, tmp_path / "out", "val", items_per_shard=2)
    samples = assert_matches_truth(tmp_path / "out", ADE20KPanoptic(), "val", truth)
    assert sorted(samples) == sorted(sample_key("ade20k_panoptic", f"ADE_val_{n:08d}") for n in (1, 3, 4))
    index = json.loads((tmp_path / "out" / "ade20k_panoptic-val.index.json").read_text())
    assert index["task"] == "img_ovseg"
    assert [(c["id"], c["name"]) for c in index["categories"]] == sorted(ADE20K_NAMES.items())
    assert [c["id"] for c in index["categories"] if c["isthing"]] == [12, 20]
    for sample_id, expected in truth.samples.items():
        objects = samples[sample_key("ade20k_panoptic", sample_id)]["json"]["objects"]
        assert {o["id"]: {"category_id": o["category_id"], "iscrowd": o["iscrowd"]} for o in objects} == (
            expected.extra["objects"]
        )
    for conversation in eval_conversations(tmp_path / "out", "ade20k_panoptic", "val", "img_ovseg").values():
        text = conversation.messages[0]["content"]
        assert text.count(P_START) == len(ADE20K_NAMES) and "<p>wall</p>" in text and "<p>window</p>" in text
        assert conversation.condition_labels == list(range(len(ADE20K_NAMES)))


def test_ade20k_layout_error_names_the_panoptic_json(tmp_path):
    write_ade20k_panoptic(tmp_path, scale=1)
    (tmp_path / "ADEChallengeData2016" / "ade20k_panoptic_val.json").unlink()
    with pytest.raises(LayoutError, match=r"ADEChallengeData2016/ade20k_panoptic_val\.json"):
        convert(ADE20KPanoptic(), tmp_path, tmp_path / "out", "val")
