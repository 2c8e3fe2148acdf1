"""VideoGLaMM GCG sets: linked-phrase captions over MeViS RLEs and Ref-YouTube-VOS palette PNGs, VidSTG /
HC-STVG mask folders (PNG frames, gaps), BURST-YTVIS word positions (double spaces, two masks on one
word, frames listed out of order); unknown object ids left as plain text; videos without frames skipped."""

import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes._video import parse_linked_caption
from data_recipes.fixtures import videoglamm as fixtures
from data_recipes.framework.recipe import LayoutError
from data_recipes.videoglamm import (
    VideoGLaMMBurst,
    VideoGLaMMHCSTVG,
    VideoGLaMMMeViS,
    VideoGLaMMVidSTG,
    VideoGLaMMYouTubeVOS,
    word_spans,
)

CASES = [
    (VideoGLaMMMeViS, fixtures.write_videoglamm_mevis),
    (VideoGLaMMYouTubeVOS, fixtures.write_videoglamm_ytvos),
    (VideoGLaMMVidSTG, fixtures.write_videoglamm_vidstg),
    (VideoGLaMMHCSTVG, fixtures.write_videoglamm_hcstvg),
    (VideoGLaMMBurst, fixtures.write_videoglamm_burst),
]


@pytest.mark.parametrize(("recipe_cls", "write"), CASES, ids=[c[0].name for c in CASES])
def test_gcg_captions_phrases_and_masks(tmp_path, recipe_cls, write):
    truth = write(tmp_path / "raw")
    for split, expected_split in truth.items():
        convert(recipe_cls(), tmp_path / "raw", tmp_path / "out", split, items_per_shard=2)
        samples = assert_matches_truth(tmp_path / "out", recipe_cls(), split, expected_split)
        for sample in samples.values():
            got = sample["json"]
            expected = expected_split.samples[got["video"]]
            assert got["task"] == "vid_gcgseg"
            assert got["caption"] == expected.extra["caption"]
            assert got["phrases"] == expected.extra["phrases"]
            assert got["frame_times"] == pytest.approx(expected.extra["times"], abs=1e-6)
            for phrase in got["phrases"]:
                start, end = phrase["span"]
                assert got["caption"][start:end].strip() == got["caption"][start:end]


def test_linked_caption_and_word_positions():
    caption, phrases = parse_linked_caption("One [fox is standing](1), another [two cats](2, 3).")
    assert caption == "One fox is standing, another two cats."
    assert [(caption[s:e], ids) for s, e, ids in phrases] == [
        ("fox is standing", ["1"]),
        ("two cats", ["2", "3"]),
    ]
    text = "A man  rides"
    assert {n: text[s:e] for n, (s, e) in word_spans(text, [1, 3]).items()} == {1: "man", 3: "rides"}
    with pytest.raises(ValueError, match="empty word"):
        word_spans(text, [2])


def test_gcg_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(LayoutError, match="mevis_gcg/valid_u"):
        VideoGLaMMMeViS().check_layout(tmp_path, "val")
    with pytest.raises(LayoutError, match="instruction_data/test.json"):
        VideoGLaMMBurst().check_layout(tmp_path, "test")
    with pytest.raises(LayoutError, match="vidstg_gcg/val_captions"):
        VideoGLaMMVidSTG().check_layout(tmp_path, "val")


def test_converted_gcg_samples_build_their_evaluation_conversation(tmp_path):
    from x2sam_lightning.data.conversations import build_conversation, check_conversation
    from x2sam_lightning.data.shards import ClipSampler, iter_source
    from x2sam_lightning.data.sources import ShardSource
    from x2sam_lightning.data.transforms import ResizePadNormalize

    fixtures.write_videoglamm_burst(tmp_path / "raw")
    convert(VideoGLaMMBurst(), tmp_path / "raw", tmp_path / "out", "test")
    source = ShardSource("burst_test", tmp_path / "out" / "videoglamm_burst-test.index.json")
    samples = list(iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False))
    assert samples
    for sample in samples:
        conversation = build_conversation(sample, train=False)
        check_conversation(conversation)
        assert "<p>man</p><SEG>" in conversation.messages[1]["content"].replace(" ", "")
        assert [len(o) for o in conversation.condition_objects] == [1, 2]
