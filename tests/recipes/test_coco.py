"""COCO panoptic, COCO-VGD and COCO-Interactive from their published formats: masks, categories, stored
prompts, skips, layout errors, and the evaluation conversation each converted sample builds."""

import argparse
import json

import numpy as np
import pytest
from helpers.image_conversations import eval_conversations
from helpers.recipes import assert_matches_truth, convert
from scipy import ndimage

from data_recipes.coco import COCOVGD, RECIPES, COCOInteractive, COCOPanoptic, clean_category_name
from data_recipes.fixtures.coco import (
    PANOPTIC_NAMES,
    write_coco_interactive,
    write_coco_panoptic,
    write_coco_vgd,
)
from data_recipes.framework.cli import build_parser
from data_recipes.framework.layout import LayoutError
from data_recipes.framework.recipe import sample_key
from x2sam_lightning.data.rle import decode_rle
from x2sam_lightning.data.visual_prompts import MAX_SCRIBBLE_POINTS, PROMPT_TYPES
from x2sam_lightning.special_tokens import P_START, REGION


def _inside(mask, point):
    x, y = point
    return bool(mask[int(np.floor(y)), int(np.floor(x))])


def test_category_names_are_cleaned_as_the_authors_clean_them():
    assert clean_category_name("wall-other-merged") == "wall other"
    assert clean_category_name("tree-merged") == "tree"
    assert clean_category_name("window ") == "window"
    assert clean_category_name("road, route") == "road, route"
    assert clean_category_name("door-stuff") == "door"


def test_coco_panoptic_segments_become_objects_with_their_categories(tmp_path):
    truth = write_coco_panoptic(tmp_path / "raw", scale=2)
    for split in ("train", "val"):  # train: PNGs in annotations/, val: detectron2's panoptic_val2017/
        convert(COCOPanoptic(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=3)
        samples = assert_matches_truth(tmp_path / "out", COCOPanoptic(), split, truth[split])
        index = json.loads((tmp_path / "out" / f"coco_panoptic-{split}.index.json").read_text())
        assert [(c["id"], c["name"]) for c in index["categories"]] == sorted(PANOPTIC_NAMES.items())
        assert {c["id"]: c["isthing"] for c in index["categories"]} == {k: k < 100 for k in PANOPTIC_NAMES}
        crowds = 0
        for sample_id, expected in truth[split].samples.items():
            got = samples[sample_key("coco_panoptic", sample_id)]
            assert got["members"] == ["jpg", "json"]
            facts = {
                o["id"]: {"category_id": o["category_id"], "iscrowd": o["iscrowd"]}
                for o in got["json"]["objects"]
            }
            assert facts == expected.extra["objects"]
            crowds += sum(f["iscrowd"] for f in facts.values())
        assert crowds == 1
    for conversation in eval_conversations(tmp_path / "out", "coco_panoptic", "val", "img_genseg").values():
        assert conversation.messages[0]["content"].count(P_START) == len(PANOPTIC_NAMES)
        assert "<p>wall other</p>" in conversation.messages[0]["content"]


def test_coco_panoptic_layout_errors_name_the_missing_file(tmp_path):
    write_coco_panoptic(tmp_path, scale=1)
    (tmp_path / "annotations" / "panoptic_val2017.json").unlink()
    with pytest.raises(LayoutError, match=r"panoptic_val2017\.json"):
        convert(COCOPanoptic(), tmp_path, tmp_path / "out", "val")
    (tmp_path / "annotations" / "panoptic_train2017").rename(tmp_path / "elsewhere")
    with pytest.raises(LayoutError, match="panoptic_train2017"):
        COCOPanoptic().check_layout(tmp_path, "train")


def test_coco_vgd_objects_are_the_drawable_instances_and_val_stores_seeded_prompts(tmp_path):
    truth = write_coco_vgd(tmp_path / "raw", scale=1)
    for split in ("train", "val"):
        convert(COCOVGD(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", COCOVGD(), split, truth[split])
        index = json.loads((tmp_path / "out" / f"coco_vgd-{split}.index.json").read_text())
        assert [c["id"] for c in index["categories"]] == [1, 3, 18, 90]
        for sample_id, expected in truth[split].samples.items():
            objects = samples[sample_key("coco_vgd", sample_id)]["json"]["objects"]
            assert {o["id"]: o["category_id"] for o in objects} == expected.extra["category_id"]
            assert not any(o["iscrowd"] for o in objects)
            for obj in objects:
                mask = expected.masks[obj["id"]][0]
                if split == "train":
                    assert "prompt" not in obj
                    continue
                prompt = obj["prompt"]
                assert set(prompt) == {"frame", *PROMPT_TYPES}
                assert _inside(mask, prompt["point"])
                x0, y0, x1, y1 = prompt["box"]
                rows, cols = np.nonzero(mask)
                assert (
                    x0 <= (cols.min() + cols.max() + 1) / 2 <= x1
                    and y0 <= (rows.min() + rows.max() + 1) / 2 <= y1
                )
                assert (decode_rle(prompt["mask"]).astype(bool) & mask).sum() >= 0.5 * mask.sum()
    conversations = eval_conversations(tmp_path / "out", "coco_vgd", "val", "img_vgdseg")
    for (key, _), conversation in conversations.items():
        sample_id = key.split("/", 1)[1]
        categories = sorted(set(truth["val"].samples[sample_id].extra["category_id"].values()))
        assert conversation.messages[0]["content"].count(REGION) == len(categories)
    # The stored prompts follow --seed: the same seed gives the same shards, another seed other prompts.
    again, other = COCOVGD(), COCOVGD()
    again.configure(argparse.Namespace(seed=0))
    other.configure(argparse.Namespace(seed=1))
    convert(again, tmp_path / "raw", tmp_path / "again", "val", items_per_shard=2)
    convert(other, tmp_path / "raw", tmp_path / "other", "val", items_per_shard=2)
    shard = "coco_vgd-val-000001.tar"
    assert (tmp_path / "again" / shard).read_bytes() == (tmp_path / "out" / shard).read_bytes()
    assert (tmp_path / "other" / shard).read_bytes() != (tmp_path / "out" / shard).read_bytes()


def test_coco_vgd_layout_error_names_the_instances_json(tmp_path):
    with pytest.raises(LayoutError, match=r"annotations/instances_val2017\.json"):
        convert(COCOVGD(), tmp_path, tmp_path / "out", "val")


def _main_part(mask):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes)), count


def test_coco_interactive_prompt_masks_become_prompt_geometry(tmp_path):
    truth = write_coco_interactive(tmp_path / "raw", scale=1)
    parts_seen = drawn_seen = 0
    for split in ("train", "val"):  # train json in annotations/, val at the top
        convert(COCOInteractive(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", COCOInteractive(), split, truth[split])
        for sample_id, expected in truth[split].samples.items():
            objects = {
                o["id"]: o for o in samples[sample_key("coco_interactive", sample_id)]["json"]["objects"]
            }
            assert {k: o["iscrowd"] for k, o in objects.items()} == expected.extra["iscrowd"]
            for object_id, given in expected.extra["prompt_masks"].items():
                prompt, mask = objects[object_id]["prompt"], expected.masks[object_id][0]
                assert set(prompt) == {"frame", *PROMPT_TYPES}
                np.testing.assert_array_equal(decode_rle(prompt["mask"]).astype(bool), given["mask"])
                assert _inside(mask, prompt["point"])
                if not given["point"].any():  # a tiny object: point, box and scribble drawn from its mask
                    drawn_seen += 1
                    assert not given["box"].any() and not given["scribble"].any()
                    continue
                rows, cols = np.nonzero(given["box"])
                assert prompt["box"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
                main, parts = _main_part(mask)
                assert _inside(given["point"] & main, prompt["point"])
                scribble = np.asarray(prompt["scribble"])
                assert all(_inside(given["scribble"], p) for p in scribble)
                assert 2 <= len(scribble) <= MAX_SCRIBBLE_POINTS
                if parts > 1:  # the scribble of the largest part only: left of the smaller right part
                    parts_seen += 1
                    assert scribble[:, 0].max() < mask.shape[1] / 2
                else:
                    assert len(scribble) == min(int(given["scribble"].sum()), MAX_SCRIBBLE_POINTS)
    assert parts_seen >= 2 and drawn_seen >= 2
    conversations = eval_conversations(tmp_path / "out", "coco_interactive", "val", "img_intseg")
    assert {t for _, t in conversations} == set(PROMPT_TYPES)
    for (key, _), conversation in conversations.items():
        sample = truth["val"].samples[key.split("/", 1)[1]]
        prompted = [k for k, crowd in sample.extra["iscrowd"].items() if not crowd]
        assert conversation.messages[0]["content"].count(REGION) == len(prompted)


def test_coco_interactive_layout_error_names_both_places(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(LayoutError, match=r"coco_interactive_val_psalm\.json.*annotations"):
        convert(COCOInteractive(), tmp_path, tmp_path / "out", "val")


def test_the_module_command_line_takes_every_recipe_and_one_seed_option():
    args = build_parser(RECIPES).parse_args(
        ["--dataset", "coco_vgd", "--root", "r", "--out", "o", "--seed", "3"]
    )
    assert args.seed == 3 and args.dataset == "coco_vgd"
