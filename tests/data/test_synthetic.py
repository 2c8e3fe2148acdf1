"""The synthetic generator: deterministic per sample, held-out val, idempotent, atomic layout."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers.synthetic import TINY

from x2sam_lightning.data import synthetic
from x2sam_lightning.data.rle import rle_has_foreground
from x2sam_lightning.data.schema import validate_index, validate_sample

CFG = synthetic.SyntheticConfig(**TINY)


def test_image_sample_is_deterministic_and_val_differs():
    first_json, first_png, first_masks = synthetic.make_image_sample(3, "train", CFG)
    again_json, again_png, again_masks = synthetic.make_image_sample(3, "train", CFG)
    assert first_json == again_json and first_png == again_png
    assert all(np.array_equal(a, b) for a, b in zip(first_masks, again_masks))
    val_json, val_png, _ = synthetic.make_image_sample(3, "val", CFG)
    assert val_png != first_png and val_json != first_json
    other_seed = synthetic.make_image_sample(3, "train", replace(CFG, seed=1))[1]
    assert other_seed != first_png


def test_video_sample_is_deterministic_and_val_differs():
    first_json, first_mp4, _ = synthetic.make_video_sample(1, "train", CFG)
    for _ in range(40):  # x264's CRF mode once gave one of two bitstreams, about one call in 40
        again_json, again_mp4, _ = synthetic.make_video_sample(1, "train", CFG)
        assert first_json == again_json and first_mp4 == again_mp4
    assert synthetic.make_video_sample(1, "val", CFG)[1] != first_mp4


@pytest.mark.parametrize("index", range(6))
def test_objects_are_visible_disjoint_and_described(index):
    sample, _, masks = synthetic.make_image_sample(index, "train", CFG)
    validate_sample(sample, url="mem", key=str(index))
    assert 1 <= len(sample["objects"]) <= 6 and len(masks) == len(sample["objects"])
    # Painter's order: visible masks never overlap, and each keeps enough pixels.
    assert int(np.sum(masks, axis=0).max()) <= 1
    assert min(int(m.sum()) for m in masks) >= synthetic.MIN_VISIBLE_PIXELS
    for obj in sample["objects"]:
        attrs = obj["attributes"]
        assert set(attrs) == {"color", "shape", "size", "position"}
        assert synthetic.CATEGORIES[obj["category_id"] - 1]["name"] == attrs["shape"]
        assert obj["expressions"] and all(attrs["shape"] in e for e in obj["expressions"])


def test_video_tracks_are_empty_where_absent_and_never_null():
    # Schema 2: every synthetic frame is annotated; an absent object has an empty mask there.
    absent = 0
    for index in range(4):
        sample, _, tracks = synthetic.make_video_sample(index, "train", CFG)
        assert sample["schema"] == 2
        for obj, track in zip(sample["objects"], tracks):
            assert len(obj["masks"]) == CFG.frames and None not in obj["masks"]
            assert any(m.any() for m in track)
            absent += sum(not m.any() for m in track)
            for rle, mask in zip(obj["masks"], track):
                assert rle_has_foreground(rle) == bool(mask.any())
    assert absent > 0


#: The layout TINY gives, written out by hand: images 12/6/4 by 4 a shard, videos 4/2/1 by 2, task images
#: 8/4/4 by 4; open-vocabulary segmentation has no training split. ``{dataset: {split: (shards, samples)}}``.
EXPECTED_LAYOUT = {
    "synthetic_img": {"train": (3, 12), "val": (2, 6), "test": (1, 4)},
    "synthetic_vid": {"train": (2, 4), "val": (1, 2), "test": (1, 1)},
    "synthetic_img_ovseg": {"val": (1, 4), "test": (1, 4)},
    **{
        f"synthetic_img_{kind}": {"train": (2, 8), "val": (1, 4), "test": (1, 4)}
        for kind in ("chat", "gcgseg", "intseg", "reaseg", "refseg", "vgdseg")
    },
    # Video task sets: 3/2/2 clips by 2 a shard; open-vocabulary again without a training split.
    "synthetic_vid_ovseg": {"val": (1, 2), "test": (1, 2)},
    **{
        f"synthetic_vid_{kind}": {"train": (2, 3), "val": (1, 2), "test": (1, 2)}
        for kind in ("chat", "gcgseg", "objseg", "reaseg", "refseg", "vgdseg")
    },
}


def test_layout_index_and_idempotence(tiny_root, tiny_kwargs):
    assert tiny_kwargs == TINY
    written = sorted(p.name for p in tiny_root.glob("*.index.json"))
    expected = {
        f"{d}-{split}": counts for d, splits in EXPECTED_LAYOUT.items() for split, counts in splits.items()
    }
    assert written == sorted(f"{name}.index.json" for name in expected)
    for name, (shards, samples) in expected.items():
        dataset, split = name.rsplit("-", 1)
        path = tiny_root / f"{name}.index.json"
        index = validate_index(json.loads(path.read_text()), path=str(path))
        assert index["dataset"] == dataset and index["split"] == split and index["num_samples"] == samples
        assert index["task"] == synthetic.DATASETS[dataset]["task"]
        assert [s["url"] for s in index["shards"]] == [f"{name}-{i:06d}.tar" for i in range(shards)]
        assert all((tiny_root / s["url"]).is_file() for s in index["shards"])
        assert index["categories"] == synthetic.dataset_categories(dataset)
    assert synthetic.generate_synthetic(tiny_root, **TINY) == {}  # same config: nothing to do
    assert not list(tiny_root.glob(".*"))  # no temp folder left behind


def test_changed_config_regenerates_only_what_changed(tmp_path):
    small = {
        **TINY,
        "num_train_images": 4,
        "num_val_images": 2,
        "num_test_images": 0,
        "datasets": "synthetic_img",
    }
    assert set(synthetic.generate_synthetic(tmp_path, **small)) == {
        "synthetic_img-train",
        "synthetic_img-val",
    }
    done = synthetic.generate_synthetic(tmp_path, **{**small, "num_train_images": 5})
    assert set(done) == {"synthetic_img-train"}
    index = json.loads((tmp_path / "synthetic_img-train.index.json").read_text())
    assert index["num_samples"] == 5 and index["config"]["num_samples"] == 5
    (tmp_path / "synthetic_img-val-000000.tar").unlink()  # a missing shard also triggers regeneration
    assert synthetic.ensure_synthetic(tmp_path, **small) == tmp_path
    assert (tmp_path / "synthetic_img-val-000000.tar").is_file()


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    chosen = ["synthetic_img_refseg", "synthetic_img_intseg"]
    small = {
        **TINY,
        "num_train_task_images": 3,
        "num_val_task_images": 2,
        "num_test_task_images": 2,
        "datasets": chosen,
    }
    synthetic.generate_synthetic(tmp_path / "one", **small)
    synthetic.generate_synthetic(tmp_path / "two", **small, workers=2)
    one, two = sorted((tmp_path / "one").iterdir()), sorted((tmp_path / "two").iterdir())
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 12
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))


# ------------------------------------------------------------------------------------ stage-2 task sets
def _task_samples(root, dataset: str, split: str) -> tuple[list[dict], set[bytes]]:
    """The validated sample jsons of a written split and the bytes of its images."""
    from x2sam_lightning.data.shards import iter_raw_samples
    from x2sam_lightning.data.sources import ShardSource

    source = ShardSource(dataset, root / f"{dataset}-{split}.index.json")
    samples, images = [], set()
    for raw in iter_raw_samples(source.urls, train=False):
        sample = validate_sample(json.loads(raw["json"]), url=raw["__url__"], key=raw["__key__"])
        assert sample["task"] == synthetic.DATASETS[dataset]["task"] and "jpg" in raw
        samples.append(sample)
        images.add(raw["jpg"])
    assert len(samples) == source.num_samples
    return samples, images


@pytest.mark.parametrize("dataset", synthetic.IMAGE_TASK_DATASETS)
def test_task_sets_validate_and_test_is_disjoint_from_val(tiny_root, dataset):
    splits = ("val", "test") if dataset in synthetic.EVAL_ONLY_DATASETS else synthetic.SPLITS
    media = {}
    for split in splits:
        samples, media[split] = _task_samples(tiny_root, dataset, split)
        for sample in samples:
            for obj in sample["objects"]:
                attrs = obj["attributes"]
                name = synthetic.dataset_categories(dataset)[obj["category_id"] - 1]["name"]
                assert name in (attrs["shape"], f"{attrs['color']} {attrs['shape']}")
                assert set(obj.get("prompt", {})) == (
                    {"frame", "point", "scribble", "box", "mask"}
                    if (dataset in ("synthetic_img_intseg", "synthetic_img_vgdseg") and split != "train")
                    else set()
                )
    assert not media["val"] & media["test"] and len(media["test"]) == TINY["num_test_task_images"]


def test_open_vocabulary_names_are_never_training_category_names():
    ov = {c["name"] for c in synthetic.OV_CATEGORIES}
    assert len(ov) == 12 and not ov & {c["name"] for c in synthetic.CATEGORIES}
    assert all(" " in name for name in ov)


def _scene(index: int, dataset: str = "synthetic_img_refseg", split: str = "train"):
    return synthetic.make_task_sample(dataset, index, split, synthetic.SyntheticConfig(image_size=128))


def _fits(text: str, attrs: dict) -> bool:
    """Our own reading of a one-object description: ``the [size] [colour] shape-or-"shape" [at/in the
    position]`` (independent of the generator's language helpers)."""
    head, where = text.removeprefix("the "), None
    for joint in (" at the ", " in the "):
        if joint in head:
            head, where = head.split(joint)
    *adjectives, noun = head.split()
    return (
        noun in ("shape", attrs["shape"])
        and all(a in (attrs["size"], attrs["color"]) for a in adjectives)
        and where in (None, attrs["position"])
    )


def test_every_reference_is_unambiguous():
    from x2sam_lightning.data.synthetic import language

    kinds = set()
    for index in range(40):
        sample, _, masks = _scene(index)
        objects = [o["attributes"] for o in sample["objects"]]
        facts = [synthetic.scenes._mask_facts(m) for m in masks]
        unique = language.unique_descriptions(objects)
        related = dict(language.relations(objects, facts))
        for ref in sample["references"]:
            targets = [o["id"] - 1 for o in sample["objects"] if o["id"] in ref["object_ids"]]
            text = ref["text"]
            if not targets:
                kinds.add("none")
                words = text.removeprefix("the ").split()
                assert not [
                    o
                    for o in objects
                    if o["shape"] == words[-1] and (len(words) == 1 or o["color"] == words[0])
                ]
            elif text.startswith("all the "):
                kinds.add("multi")
                assert len(targets) >= 2
            elif text in related:
                kinds.add("relation")
                assert related[text] == targets[0] and len(targets) == 1
            else:
                kinds.add("single")
                assert len(targets) == 1 and text in unique[targets[0]]
                assert [n for n, o in enumerate(objects) if _fits(text, o)] == targets, text
        assert [o.get("expressions") for o in sample["objects"]] == [u or None for u in unique]
    assert kinds == {"none", "multi", "relation", "single"}


def test_reasoning_queries_match_their_objects():
    for index in range(20):
        sample, _, _ = _scene(index, "synthetic_img_reaseg")
        attrs = {o["id"]: o["attributes"] for o in sample["objects"]}
        assert sample["references"]
        for ref in sample["references"]:
            chosen = [attrs[i] for i in ref["object_ids"]]
            if "three corners" in ref["text"]:
                assert {a["shape"] for a in chosen} == {"triangle"}
                assert len(chosen) == sum(a["shape"] == "triangle" for a in attrs.values())
            if "colour of grass" in ref["text"]:
                assert {a["color"] for a in chosen} == {"green"}


def test_captions_name_every_object_and_chat_answers_are_short():
    for index in range(10):
        sample, _, _ = _scene(index, "synthetic_img_gcgseg")
        caption, phrases = sample["caption"], sample["phrases"]
        assert sorted(i for p in phrases for i in p["object_ids"]) == [o["id"] for o in sample["objects"]]
        ends = [0]
        for phrase in sorted(phrases, key=lambda p: p["span"]):
            start, end = phrase["span"]
            assert start >= ends[-1] and end <= len(caption)
            ends.append(end)
            attrs = sample["objects"][phrase["object_ids"][0] - 1]["attributes"]
            assert caption[start:end].lower().endswith(f"{attrs['color']} {attrs['shape']}")
        chat, _, _ = _scene(index, "synthetic_img_chat")
        turns = chat["conversation"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2) and 2 <= len(
            turns
        ) <= 6
        for question, reply in zip(turns[::2], turns[1::2]):
            assert reply["content"].endswith(".") and " " not in reply["content"]
            if question["content"] == "How many shapes are there?":
                assert (
                    reply["content"]
                    == ["Zero", "One", "Two", "Three", "Four", "Five", "Six"][len(chat["objects"])] + "."
                )
