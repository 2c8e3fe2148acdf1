"""Stage 2 on a video file: the LLM reads sampled frames once, every frame is segmented with its inputs."""

from __future__ import annotations

import pytest
import torch
from helpers.videos import moving_squares, write_mp4
from helpers.vlm import build_stage2

from x2sam_lightning.inference.video_predictor import VideoPredictor
from x2sam_lightning.inference.video_stream import PromptError

SIZE = 64
TEXT = "Please segment <p>the red square</p> and <p>the green square</p> in this video."


@pytest.fixture(scope="module")
def module(stage2_dir):
    module = build_stage2(stage2_dir, "model/mask_memory=tiny", image_size=SIZE).eval()
    backbone = module.net.vl_backbone
    reply = backbone.tokenizer("Sure, <p>the red square</p><SEG> and <p>the green square</p><SEG>.")[
        "input_ids"
    ]

    def fixed_reply(input_ids, *args, max_new_tokens: int = 64, **kwargs):
        """A random tiny LLM rarely says <SEG>: answer as a trained one would (the rest is the model's)."""
        ids = reply + [backbone.token_ids["<|im_end|>"]]
        return torch.tensor([ids], dtype=torch.long)

    backbone.generate = fixed_reply
    return module


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("videos") / "squares.mp4", moving_squares(6))


def test_one_sampled_frame_drives_every_frame(module, clip):
    """With one language frame (read as an image: works without Qwen3-VL video input) each condition of the
    reply is an object on every frame, under its condition's index, whatever the chunking."""
    predictor = VideoPredictor(module, SIZE, language_frames=1)
    frames = list(predictor.segment_video(clip, text=TEXT, chunk_frames=4))
    assert [f.frame for f in frames] == list(range(6))
    ids = {tuple(f.object_ids) for f in frames}
    assert len(ids) == 1 and len(next(iter(ids))) >= 1
    assert all(f.masks.shape[1:] == (48, 64) and len(f.names) == len(f.object_ids) for f in frames)
    assert "red square" in frames[0].names[0] or "green square" in frames[0].names[0]
    again = list(predictor.segment_video(clip, text=TEXT, chunk_frames=1))
    for a, b in zip(frames, again):
        assert a.object_ids == b.object_ids and (a.masks != b.masks).float().mean() < 1e-3
    with pytest.raises(PromptError, match="prompt 0 is on frame 6, but .* has 6 frames"):
        list(
            predictor.segment_video(
                clip, text="Segment <p><region></p>.", prompts=[{"point": [5, 5], "frame": 6}]
            )
        )


def test_sixteen_sampled_frames_reach_the_llm_as_a_qwen3vl_video(module, clip):
    predictor = VideoPredictor(module, SIZE, language_frames=16)
    frames = list(predictor.segment_video(clip, text=TEXT, chunk_frames=4))
    assert [f.frame for f in frames] == list(range(6))
