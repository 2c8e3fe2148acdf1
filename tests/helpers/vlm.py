"""A tiny Qwen3-VL folder and a stage-2 model built from the project's configs, shared by tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets

TINY_VLM_FOLDER = "weights/tiny-qwen3vl"


def stage2_config(data_dir: Path, *overrides: str, image_size: int = 64) -> Any:
    """The ``joint_image`` experiment (tiny preset) with its data and weights under ``data_dir``."""
    return compose_config(
        "joint_image",
        [
            f"paths.data_dir={data_dir}",
            f"data.image_size={image_size}",
            "model.stage1_checkpoint=null",
            *overrides,
        ],
    )


def build_stage2(data_dir: Path, *overrides: str, image_size: int = 64, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return instantiate(stage2_config(data_dir, *overrides, image_size=image_size).model)


def hand_made_batch(size: int = 64) -> SegBatch:
    """Three samples: generic (set), referring with a no-target turn (per_condition), interactive
    (set, two region prompts, one of them a single pixel)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 1, 3, size, size, generator=g)
    masks = torch.zeros(2, 1, size, size, dtype=torch.bool)
    masks[0, 0, 4:20, 4:20] = True
    masks[1, 0, 30:50, 30:60] = True
    targets = TrackTargets(
        masks,
        torch.tensor([0, 1]),
        torch.ones(2, 1, dtype=torch.bool),
        torch.arange(2),
        torch.zeros(2, dtype=torch.bool),
    )
    regions = torch.zeros(2, 1, size, size, dtype=torch.bool)
    regions[0, 0, 10, 10] = True
    regions[1, 0, 40:45, 40:45] = True
    user = "<image>Can you segment the image based on the following categories: <p>circle</p>, <p>square</p>, <p>star</p>? Please output the segmentation masks."
    conversations = [
        Conversation(
            [{"role": "user", "content": user}, {"role": "assistant", "content": "Sure, <SEG>."}],
            "set",
            [[0], [1], []],
            [0, 1, 2],
        ),
        Conversation(
            [
                {"role": "user", "content": "<image>Please segment <p>the red circle</p> in this image."},
                {"role": "assistant", "content": "It is <SEG>."},
                {"role": "user", "content": "Please segment <p>the blue star</p>."},
                {"role": "assistant", "content": "There is no such object in the image."},
            ],
            "per_condition",
            [[0], []],
            [-1, -1],
        ),
        Conversation(
            [
                {
                    "role": "user",
                    "content": "<image>Can you segment the image based on the following regions: <p><region></p>, <p><region></p>?",
                },
                {"role": "assistant", "content": "Sure, <SEG>."},
            ],
            "set",
            [[0], [1]],
            [0, 1],
            regions=regions,
            region_frames=[0, 0],
            prompt_type="point",
        ),
    ]
    categories = [
        {"id": 1, "name": "circle", "isthing": True},
        {"id": 2, "name": "square", "isthing": True},
        {"id": 3, "name": "star", "isthing": True},
    ]
    return SegBatch(
        pixels,
        [targets] * 3,
        torch.tensor([[size, size]] * 3),
        torch.tensor([[size, size]] * 3),
        ["s/0", "s/1", "s/2"],
        ["img_genseg", "img_refseg", "img_intseg"],
        "hand_made",
        categories=[categories] * 3,
        conversations=conversations,
    )


def hand_made_video_batch(num_frames: int = 4, size: int = 64, frame_times: bool = True) -> SegBatch:
    """Two clips of ``num_frames`` frames: referring (per_condition, the object visible on every frame) and
    visual grounded (set, a box prompt drawn on frame 1, or 0 for a one-frame clip). With ``frame_times``
    the samples' meta carry the clip's frame times (frames 2, 3, ... of a 5 fps video)."""
    g = torch.Generator().manual_seed(1)
    t = num_frames
    pixels = torch.randn(2, t, 3, size, size, generator=g)
    masks = torch.zeros(2, t, size, size, dtype=torch.bool)
    for f in range(t):  # two objects moving right
        masks[0, f, 4:20, 4 + 4 * f : 20 + 4 * f] = True
        masks[1, f, 30:50, 20 + 2 * f : 40 + 2 * f] = True
    targets = TrackTargets(
        masks,
        torch.tensor([0, 1]),
        torch.ones(2, t, dtype=torch.bool),
        torch.arange(2),
        torch.zeros(2, dtype=torch.bool),
    )
    prompt_frame = min(1, t - 1)
    regions = torch.zeros(1, t, size, size, dtype=torch.bool)
    regions[0, prompt_frame] = masks[1, prompt_frame]
    conversations = [
        Conversation(
            [
                {"role": "user", "content": "<video>What is <p>the red circle</p> in this video?"},
                {"role": "assistant", "content": "It is <SEG>."},
            ],
            "per_condition",
            [[0]],
            [-1],
        ),
        Conversation(
            [
                {
                    "role": "user",
                    "content": "<video>Can you segment the video based on the following regions: <p><region></p>?",
                },
                {"role": "assistant", "content": "Sure, <SEG>."},
            ],
            "set",
            [[1]],
            [1],
            regions=regions,
            region_frames=[prompt_frame],
            prompt_type="box",
        ),
    ]
    categories = [{"id": 1, "name": "circle", "isthing": True}, {"id": 2, "name": "square", "isthing": True}]
    meta = [{"frame_indices": list(range(2, 2 + t))} for _ in range(2)]
    if frame_times:
        for m in meta:
            m["frame_times"] = [i / 5.0 for i in m["frame_indices"]]
    return SegBatch(
        pixels,
        [targets] * 2,
        torch.tensor([[size, size]] * 2),
        torch.tensor([[size, size]] * 2),
        ["v/0", "v/1"],
        ["vid_refseg", "vid_vgdseg"],
        "hand_made_video",
        categories=[categories] * 2,
        meta=meta,
        conversations=conversations,
    )
