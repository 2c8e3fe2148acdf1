"""The V-VGD builder: one sample per video with every promptable track; prompts drawn from each track's
first visible frame, inside the object there, fixed by the seed, stored on the evaluation split."""

import json

import numpy as np
from helpers.recipes import assert_matches_truth, convert, read_back

from data_recipes.fixtures.vipseg import CATEGORIES as VIPSEG_CATEGORIES
from data_recipes.fixtures.vvgd import write_vipseg_vgd, write_ytvis19_vgd
from data_recipes.framework.recipe import sample_key
from data_recipes.vvgd import YTVIS19VGD, VIPSegVGD
from x2sam_lightning.data.conversations import EVAL_PROMPT_TYPES, build_conversation, check_conversation
from x2sam_lightning.data.rle import decode_rle
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.data.visual_prompts import PROMPT_TYPES


def _check_prompts(samples, recipe, truth):
    prompted = 0
    for sample_id, expected in truth.samples.items():
        for obj in samples[sample_key(recipe.name, sample_id)]["json"]["objects"]:
            frames = expected.masks[obj["id"]]
            first = next(t for t, m in enumerate(frames) if m is not None and m.any())
            prompt = obj["prompt"]
            assert prompt["frame"] == first and set(PROMPT_TYPES) <= set(prompt)
            mask = frames[first]
            x, y = prompt["point"]
            assert mask[int(y), int(x)], (sample_id, obj["id"], prompt["point"])
            ys, xs = np.nonzero(mask)
            cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
            x0, y0, x1, y1 = prompt["box"]
            assert x0 <= cx <= x1 and y0 <= cy <= y1
            coarse = decode_rle(prompt["mask"]).astype(bool)
            assert (coarse & mask).sum() >= 0.5 * mask.sum()
            h, w = mask.shape
            assert all(0 <= px <= w and 0 <= py <= h for px, py in prompt["scribble"])
            prompted += 1
    assert prompted >= 2


def _prompts(out, name):
    return {k: [o["prompt"] for o in s["json"]["objects"]] for k, s in read_back(out, name, "val").items()}


def test_ytvis19_vgd_prompts_from_first_visible_frame(tmp_path):
    truth = write_ytvis19_vgd(tmp_path / "raw")
    assert truth["val"].skipped == {"no promptable track": 1}  # the crowd-only video
    convert(YTVIS19VGD(), tmp_path / "raw", tmp_path / "out", "train")
    train = assert_matches_truth(tmp_path / "out", YTVIS19VGD(), "train", truth["train"])
    assert all("prompt" not in o for s in train.values() for o in s["json"]["objects"])  # drawn in training
    convert(YTVIS19VGD(), tmp_path / "raw", tmp_path / "out", "val")
    val = assert_matches_truth(tmp_path / "out", YTVIS19VGD(), "val", truth["val"])
    _check_prompts(val, YTVIS19VGD(), truth["val"])
    # Same seed, same prompts (in another process count too); another seed, other prompts.
    convert(YTVIS19VGD(seed=0), tmp_path / "raw", tmp_path / "again", "val", workers=2, items_per_shard=1)
    assert _prompts(tmp_path / "again", "ytvis19_vgd") == _prompts(tmp_path / "out", "ytvis19_vgd")
    convert(YTVIS19VGD(seed=1), tmp_path / "raw", tmp_path / "other", "val")
    assert _prompts(tmp_path / "other", "ytvis19_vgd") != _prompts(tmp_path / "out", "ytvis19_vgd")


def test_vipseg_vgd_keeps_thing_instances(tmp_path):
    truth = write_vipseg_vgd(tmp_path / "raw")
    assert truth["val"].skipped == {"no promptable track": 1}  # stuff and an instance-less thing region only
    convert(VIPSegVGD(), tmp_path / "raw", tmp_path / "out", "val")
    val = assert_matches_truth(tmp_path / "out", VIPSegVGD(), "val", truth["val"])
    _check_prompts(val, VIPSegVGD(), truth["val"])
    things = [{"id": c["id"], "name": c["name"], "isthing": True} for c in VIPSEG_CATEGORIES if c["isthing"]]
    assert json.loads((tmp_path / "out" / "vipseg_vgd-val.index.json").read_text())["categories"] == things
    assert all(o["id"] >= 125 for s in val.values() for o in s["json"]["objects"])


def test_stored_prompts_build_the_evaluation_conversation(tmp_path):
    write_ytvis19_vgd(tmp_path / "raw")
    convert(YTVIS19VGD(), tmp_path / "raw", tmp_path / "out", "val")
    source = ShardSource("ytvis19_vgd_val", tmp_path / "out" / "ytvis19_vgd-val.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert samples
    for sample in samples:
        for prompt_type in EVAL_PROMPT_TYPES["vid_vgdseg"]:
            conversation = build_conversation(sample, "vid_vgdseg", train=False, prompt_type=prompt_type)
            check_conversation(conversation)
            stored = {o["prompt"]["frame"] for o in sample.meta["objects"]}
            drawn = {int(t) for t in conversation.regions.flatten(2).any(-1).nonzero()[:, 1]}
            assert drawn <= stored
