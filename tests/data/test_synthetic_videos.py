"""The synthetic video task sets: deterministic, occlusions / exits / re-appearances that the masks show,
schema 2 (absent = empty mask), text that matches the video, prompts where the tasks need them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers.synthetic import TINY

from x2sam_lightning.data import synthetic
from x2sam_lightning.data.rle import decode_rle, rle_has_foreground
from x2sam_lightning.data.schema import validate_sample
from x2sam_lightning.data.synthetic import video_scenes
from x2sam_lightning.data.synthetic.video_language import describe_video, unique_video_descriptions

CFG = synthetic.SyntheticConfig(**TINY)
#: Shapes and colours named in a description (to check what a reference says against its objects).
WORDS = {"color": set(synthetic.COLORS), "shape": set(synthetic.SHAPES)}


def _gap(shown: list[bool]) -> bool:
    """Absent on some middle frame, visible before and after."""
    return any(not s and any(shown[:t]) and any(shown[t + 1 :]) for t, s in enumerate(shown))


def _shown(obj) -> list[bool]:
    return [rle_has_foreground(m) for m in obj["masks"]]


def test_video_task_samples_are_deterministic_and_splits_differ():
    for dataset in synthetic.VIDEO_TASK_DATASETS:
        first = synthetic.make_sample(dataset, 1, "val", CFG)
        again = synthetic.make_sample(dataset, 1, "val", CFG)
        assert first[0] == again[0] and first[1] == again[1]
        assert synthetic.make_sample(dataset, 1, "test", CFG)[1] != first[1]
        assert synthetic.make_sample(dataset, 1, "val", replace(CFG, seed=1))[1] != first[1]


@pytest.mark.parametrize("dataset", synthetic.VIDEO_TASK_DATASETS)
def test_samples_validate_as_schema_2_with_empty_masks_where_absent(dataset):
    for index in range(4):
        sample, _, tracks = synthetic.make_sample(dataset, index, "val", CFG)
        validate_sample(
            sample, url="memory", key=str(index), categories=synthetic.dataset_categories(dataset)
        )
        assert sample["schema"] == 2 and sample["num_frames"] == CFG.frames
        for obj, track in zip(sample["objects"], tracks):
            assert None not in obj["masks"] and len(track) == CFG.frames
            assert all(np.array_equal(decode_rle(r).astype(bool), m) for r, m in zip(obj["masks"], track))
            assert track[0].any()  # every object shows on frame 0
            assert obj["attributes"]["motion"] in video_scenes.MOTIONS


def test_tags_say_what_the_masks_show():
    """Every tagged video has an object absent on a middle frame and visible before and after, for the
    tagged cause (hidden inside the image, or outside it); untagged videos have none."""
    counts = {"occlusion": 0, "exit": 0, "reappearance": 0}
    cfg = replace(CFG, image_size=96, frames=10)
    videos = 30
    for index in range(videos):
        sample, _, _ = synthetic.make_sample("synthetic_vid_refseg", index, "val", cfg)
        gaps = {e for obj in sample["objects"] for e in obj["attributes"].get("events", [])}
        assert gaps == set(sample["tags"]) - {"reappearance"}
        assert ("reappearance" in sample["tags"]) == bool(gaps)
        assert bool(gaps) == any(_gap(_shown(obj)) for obj in sample["objects"])
        for tag in sample["tags"]:
            counts[tag] += 1
    # Planned in OCCLUSION_SHARE / EXIT_SHARE of the videos (more can happen by chance).
    assert counts["occlusion"] >= 0.3 * videos and counts["exit"] >= 0.15 * videos


@pytest.mark.parametrize(("occlusion", "exit"), [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_planned_events_always_happen(monkeypatch, occlusion, exit):
    monkeypatch.setattr(video_scenes, "OCCLUSION_SHARE", occlusion)
    monkeypatch.setattr(video_scenes, "EXIT_SHARE", exit)
    for size, frames in ((64, 6), (128, 12)):
        for index in range(6):
            rng = np.random.default_rng([7, index])
            scene = video_scenes.video_task_scene(rng, size, frames, 8.0)
            assert ("occlusion" in scene.tags) >= bool(occlusion) and ("exit" in scene.tags) >= bool(exit)
            hidden = [a for a in scene.attributes if "occlusion" in a.get("events", [])]
            gone = [a for a in scene.attributes if "exit" in a.get("events", [])]
            if occlusion:
                # The planned one: small, crossing behind a large still shape painted after it.
                assert any(a["size"] == "small" for a in hidden)
                assert scene.attributes[-1]["motion"] == video_scenes.STILL
            if exit:
                assert scene.attributes[0]["motion"] == video_scenes.COMEBACK and gone


def test_references_are_unambiguous_and_say_what_they_refer_to():
    for index in range(8):
        sample, _, _ = synthetic.make_sample("synthetic_vid_refseg", index, "train", CFG)
        attrs = {o["id"]: o["attributes"] for o in sample["objects"]}
        for ref in sample["references"]:
            named = {k: {w for w in words if w in ref["text"].split()} for k, words in WORDS.items()}
            if not ref["object_ids"]:  # a no-target one: no object has what it names
                assert not any(all(a[k] in named[k] for k in named if named[k]) for a in attrs.values()), ref
                continue
            for obj_id in ref["object_ids"]:
                for key, words in named.items():
                    assert not words or attrs[obj_id][key] in words, (ref, attrs[obj_id])
        for obj, texts in zip(sample["objects"], unique_video_descriptions(list(attrs.values()))):
            assert obj.get("expressions", []) == texts
    described = describe_video({"size": "small", "color": "red", "shape": "star", "motion": "leaving and coming back"},
                               ("color", "shape", "motion"))  # fmt: skip
    assert described == "the red star that leaves the video and comes back"


def test_reasoning_captions_and_chat_match_the_video():
    for index in range(6):
        sample, _, _ = synthetic.make_sample("synthetic_vid_reaseg", index, "val", CFG)
        attrs = {o["id"]: o["attributes"] for o in sample["objects"]}
        for ref in sample["references"]:
            assert ref["object_ids"] and ref["text"].endswith("?")
            if "behind another" in ref["text"]:
                assert all("occlusion" in attrs[i].get("events", []) for i in ref["object_ids"])
        sample, _, _ = synthetic.make_sample("synthetic_vid_gcgseg", index, "val", CFG)
        assert sorted(i for p in sample["phrases"] for i in p["object_ids"]) == [
            o["id"] for o in sample["objects"]
        ]
        for phrase in sample["phrases"]:
            start, end = phrase["span"]
            (obj,) = [o for o in sample["objects"] if o["id"] == phrase["object_ids"][0]]
            assert sample["caption"][start:end].endswith(
                f"{obj['attributes']['color']} {obj['attributes']['shape']}"
            )
        sample, _, _ = synthetic.make_sample("synthetic_vid_chat", index, "val", CFG)
        (question, reply) = (t["content"] for t in sample["conversation"])
        assert len(reply.split()) == 1 and reply.endswith(".")
        if question == "Does any shape leave the video and come back?":
            assert reply == ("Yes." if "exit" in sample["tags"] else "No.")


def test_prompts_object_segmentation_first_frame_masks_and_visual_grounding_first_visible_frames():
    for split in ("train", "val"):
        sample, _, tracks = synthetic.make_sample("synthetic_vid_objseg", 0, split, CFG)
        for obj, track in zip(sample["objects"], tracks):
            prompt = obj["prompt"]
            assert prompt["type"] == "mask" and prompt["frame"] == 0
            assert np.array_equal(decode_rle(prompt["mask"]).astype(bool), track[0])
        sample, _, tracks = synthetic.make_sample("synthetic_vid_vgdseg", 0, split, CFG)
        for obj, track in zip(sample["objects"], tracks):
            if split == "train":
                assert "prompt" not in obj
                continue
            first = next(t for t, m in enumerate(track) if m.any())
            assert obj["prompt"]["frame"] == first and {"point", "scribble", "box", "mask"} <= set(
                obj["prompt"]
            )


def test_video_task_sets_have_no_training_split_for_open_vocabulary(tiny_root):
    assert not (tiny_root / "synthetic_vid_ovseg-train.index.json").exists()
    assert synthetic.dataset_categories("synthetic_vid_ovseg") == synthetic.OV_CATEGORIES
    for name in ("val", "test"):
        assert (tiny_root / f"synthetic_vid_ovseg-{name}.index.json").is_file()
