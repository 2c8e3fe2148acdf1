"""VideoInstruct100K: a video's question-answer pairs become one conversation; the mp4 is stored as it
came, with the frame count and size decord reads; missing and undecodable videos are skipped."""

import pytest
from helpers.recipes import assert_matches_truth, convert

from data_recipes.fixtures.videoinstruct import write_videoinstruct100k
from data_recipes.framework import LayoutError
from data_recipes.framework.recipe import sample_key
from data_recipes.videoinstruct import VideoInstruct100K
from x2sam_lightning.data.conversations import build_conversation, check_conversation
from x2sam_lightning.data.shards import ClipSampler, iter_source
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.special_tokens import VIDEO


def test_videoinstruct_conversations_and_videos(tmp_path):
    truth = write_videoinstruct100k(tmp_path / "raw", scale=2)["train"]
    convert(VideoInstruct100K(), tmp_path / "raw", tmp_path / "out", "train", items_per_shard=2)
    samples = assert_matches_truth(tmp_path / "out", VideoInstruct100K(), "train", truth)
    assert any(len(s.extra["conversation"]) == 4 for s in truth.samples.values())  # a two-pair video
    for video_id, expected in truth.samples.items():
        got = samples[sample_key("videoinstruct100k", video_id)]
        assert got["members"] == ["json", "mp4"]
        assert got["json"]["conversation"] == expected.extra["conversation"]
        assert got["json"]["frame_times"] == pytest.approx(expected.extra["frame_times"], abs=1e-6)
        assert got["decoded"].frames.shape[0] == expected.num_frames
    source = ShardSource("videoinstruct100k", tmp_path / "out" / "videoinstruct100k-train.index.json")
    for sample in iter_source(source, ResizePadNormalize(64), ClipSampler(mode="all"), train=False):
        conversation = build_conversation(sample, "vid_chat", train=False)
        check_conversation(conversation)
        turns = truth.samples[sample.key.split("/", 1)[1]].extra["conversation"]
        assert conversation.messages[0]["content"] == f"{VIDEO}\n{turns[0]['content']}"
        assert conversation.answer == turns[-1]["content"]


def test_mp4_bytes_are_stored_unchanged(tmp_path):
    truth = write_videoinstruct100k(tmp_path / "raw")["train"]
    convert(VideoInstruct100K(), tmp_path / "raw", tmp_path / "out", "train")
    from x2sam_lightning.data.tars import read_shard

    stored = {
        raw["__key__"]: raw["mp4"] for url in (tmp_path / "out").glob("*.tar") for raw in read_shard(str(url))
    }
    for video_id in truth.samples:
        source = (tmp_path / "raw" / "ActivityNet" / "train" / f"{video_id}.mp4").read_bytes()
        assert stored[sample_key("videoinstruct100k", video_id)] == source


def test_missing_question_file_is_a_layout_error(tmp_path):
    write_videoinstruct100k(tmp_path / "raw")
    (tmp_path / "raw" / "VideoInstruct100K.json").unlink()
    with pytest.raises(LayoutError, match="VideoInstruct100K.json"):
        convert(VideoInstruct100K(), tmp_path / "raw", tmp_path / "out", "train")
