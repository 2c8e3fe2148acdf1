"""Streaming video inference from a file: chunked == whole, per-frame output with stable ids, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.models import memory_off_zero
from helpers.videos import moving_squares, write_mp4
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.data.rle import decode_rles
from x2sam_lightning.inference.video_predictor import (
    VideoPredictor,
    VideoRequest,
    sample_frames,
)
from x2sam_lightning.inference.video_stream import (
    PromptError,
    TrackedObject,
    VideoFile,
    VideoReadError,
    model_input,
)
from x2sam_lightning.models.streaming import DecodeInputs, capture_decode

SIZE = 64
SMALL = [
    f"data.image_size={SIZE}",
    "model/mask_memory=tiny",
    "model.segmentor.mask_decoder.num_queries=4",
    "model.segmentor.mask_decoder.num_layers=2",
]


@pytest.fixture(scope="module")
def module():
    """The stage-1 module with the tiny memory, its memory moved off its identity initialisation."""
    torch.manual_seed(0)
    module = instantiate(compose_config("agnostic", SMALL).model)
    memory_off_zero(module.segmentor.mask_memory)
    return module.eval()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "squares.mp4"
    return write_mp4(path, moving_squares(7))


def _frames(predictor, video, **kwargs):
    return list(predictor.segment_video(video, **kwargs))


@pytest.mark.parametrize("chunk", [1, 3, 7, 20])
def test_chunked_file_streaming_equals_the_whole_clip(module, clip, chunk):
    """Every chunk size (1, 3, the clip's length, longer than the clip) gives the masks of
    ``Segmentor.decode`` on the whole clip at once; threshold 0 keeps every query as an object."""
    predictor = VideoPredictor(module, SIZE, score_threshold=0.0)
    frames = _frames(predictor, clip, chunk_frames=chunk)
    video = VideoFile(clip)
    assert [f.frame for f in frames] == list(range(7))
    pixels = model_input(video.frames(range(7)), SIZE)[None]
    with torch.no_grad():
        whole = module.segmentor.decode(module.segmentor.encode(pixels), 7)
    # The whole clip's logits at the video's size, thresholded as the stream does (48x64 -> content 48x64).
    from x2sam_lightning.models.x2sam_postprocess import resize_masks

    expected = resize_masks(whole["pred_masks"][0], (SIZE, SIZE), (48, 64), (48, 64)) > 0  # [Q, T, H, W]
    for f in frames:
        assert f.object_ids == [0, 1, 2, 3] and f.masks.shape == (4, 48, 64)
        disagree = (f.masks != expected[:, f.frame]).float().mean()
        assert disagree < 1e-3  # logits equal to 1e-4: at most a pixel exactly at the threshold may flip


def test_the_first_frame_is_the_frame_as_an_image(module, clip):
    predictor = VideoPredictor(module, SIZE, score_threshold=0.0)
    first = _frames(predictor, clip, chunk_frames=3)[0]
    video = VideoFile(clip)
    with torch.no_grad():
        image = module.segmentor(model_input(video.frames([0]), SIZE)[None])
    from x2sam_lightning.models.x2sam_postprocess import resize_masks

    expected = resize_masks(image["pred_masks"][0], (SIZE, SIZE), (48, 64), (48, 64))[:, 0] > 0
    assert (first.masks != expected).float().mean() < 1e-3


def test_one_frame_video_and_a_video_shorter_than_the_chunk(module, tmp_path):
    predictor = VideoPredictor(module, SIZE, score_threshold=0.0)
    one = write_mp4(tmp_path / "one.mp4", moving_squares(1))
    frames = _frames(predictor, one, chunk_frames=8)
    assert [f.frame for f in frames] == [0] and frames[0].masks.shape == (4, 48, 64)
    short = write_mp4(tmp_path / "short.mp4", moving_squares(3))
    assert [f.frame for f in _frames(predictor, short, chunk_frames=8)] == [0, 1, 2]
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        _frames(predictor, short, chunk_frames=0)


def test_unreadable_files_are_named(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoReadError, match="nowhere.mp4: no such video file"):
        VideoFile(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="garbage.mp4: cannot read the video"):
        VideoFile(garbage)
    whole = write_mp4(tmp_path / "whole.mp4", moving_squares(6)).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(VideoReadError, match="truncated.mp4"):
        video = VideoFile(truncated)
        video.frames(range(video.num_frames))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4"):
        VideoFile(empty)


def test_writer_writes_every_frame_with_stable_ids(module, clip, tmp_path):
    predictor = VideoPredictor(module, SIZE, score_threshold=0.0)
    out = tmp_path / "out" / "squares.frames.jsonl"
    assert predictor.write_video(clip, out, chunk_frames=3) == 7
    header, *lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert header == {
        "key": "squares", "video": str(clip), "num_frames": 7, "height": 48, "width": 64, "fps": 10.0
    }  # fmt: skip
    assert [line["frame"] for line in lines] == list(range(7))
    assert all([o["id"] for o in line["objects"]] == [0, 1, 2, 3] for line in lines)
    masks = decode_rles([o["mask"] for o in lines[4]["objects"]], 48, 64)
    streamed = _frames(predictor, clip, chunk_frames=3)[4]
    assert np.array_equal(masks, streamed.masks.numpy())
    # A high threshold writes frames with fewer (or no) objects, never fewer lines.
    strict = VideoPredictor(module, SIZE, score_threshold=1.0)
    assert strict.write_video(clip, tmp_path / "strict.jsonl") == 7
    assert all(
        json.loads(line).get("objects", []) == []
        for line in (tmp_path / "strict.jsonl").read_text().splitlines()[1:]
    )


def test_requests_with_objects_and_prompts(module, clip):
    """A request (stage 2's language side, here a stand-in) fixes the objects: each frame has each of
    them, under its id, with the mask of its best query; a prompt outside the video is a clear error."""

    def request(video, text, prompts):
        return VideoRequest(DecodeInputs(), [TrackedObject(7, 0, 0, "object")], "<SEG>", [0])

    predictor = VideoPredictor(module, SIZE, request=request)
    frames = _frames(predictor, clip, text="Please segment <p>the object</p> in this video.")
    assert len(frames) == 7 and all(f.object_ids == [7] and f.names == ["object"] for f in frames)
    with pytest.raises(PromptError, match=r"prompt 0 is on frame 9, but .*squares.mp4 has 7 frames"):
        _frames(predictor, clip, text="<p><region></p>", prompts=[{"box": [0, 0, 5, 5], "frame": 9}])
    with pytest.raises(PromptError, match="exactly one of"):
        _frames(predictor, clip, text="<p><region></p>", prompts=[{"frame": 0}])
    with pytest.raises(PromptError, match="needs the instruction"):
        _frames(predictor, clip)
    stage1 = VideoPredictor(module, SIZE)
    with pytest.raises(PromptError, match="takes no text"):
        _frames(stage1, clip, text="<p>x</p>")


def test_a_reply_without_seg_gives_empty_frames(module, clip):
    predictor = VideoPredictor(module, SIZE, request=lambda video, text, prompts: VideoRequest(None))
    frames = _frames(predictor, clip, text="Is there a square?")
    assert len(frames) == 7 and all(f.object_ids == [] and f.masks.shape == (0, 48, 64) for f in frames)


def test_sample_frames_spread_over_the_video_and_keep_prompt_frames():
    assert sample_frames(100, 4) == [0, 33, 66, 99]
    assert sample_frames(3, 16) == [0, 1, 2]
    assert sample_frames(100, 2, required=[50]) == [0, 50, 99]


def test_capture_decode_records_the_language_inputs_and_restores_the_method(module):
    segmentor = module.segmentor
    with capture_decode(segmentor) as calls, torch.no_grad():
        segmentor.decode(segmentor.encode(torch.randn(1, 1, 3, SIZE, SIZE)), 1, prompt=None)
    assert calls == [{}] and "decode" not in vars(segmentor)
