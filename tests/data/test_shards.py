"""Reading shards back: round trip of masks, clip cutting, and a named error for each bad sample."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from x2sam_lightning.data import synthetic
from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.schema import SampleError, SourceError, validate_index, validate_sample
from x2sam_lightning.data.shards import (
    ClipSampler,
    VideoTooLong,
    decode_sample,
    iter_raw_samples,
    iter_source,
)
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.transforms import ResizePadNormalize


def test_png_round_trip_masks_equal_generated(tiny_root, tiny_kwargs):
    cfg = synthetic.SyntheticConfig(**tiny_kwargs)
    source = ShardSource("img", tiny_root / "synthetic_img-train.index.json")
    seen = 0
    for raw in iter_raw_samples(source.urls, train=False):
        clip = decode_sample(raw, ClipSampler(mode="first"))
        index = int(clip.key.split("/")[1])
        sample, png, masks = synthetic.make_image_sample(index, "train", cfg)
        assert clip.sample == sample
        assert np.array_equal(clip.frames[0], np.asarray(Image.open(io.BytesIO(png))))
        assert np.array_equal(clip.masks[:, 0], np.stack(masks))
        assert clip.labels.tolist() == [o["category_id"] - 1 for o in sample["objects"]]
        seen += 1
    assert seen == source.num_samples == 12


def test_video_clip_masks_match_generated_frames(tiny_root, tiny_kwargs):
    cfg = synthetic.SyntheticConfig(**tiny_kwargs)
    source = ShardSource("vid", tiny_root / "synthetic_vid-train.index.json")
    raw = next(iter(iter_raw_samples(source.urls, train=False)))
    clip = decode_sample(raw, ClipSampler(length=3, stride=2, mode="random"), np.random.default_rng(1))
    start = clip.frame_indices[0]
    assert clip.frame_indices == [start, start + 2, start + 4] and clip.frames.shape == (3, 64, 64, 3)
    _, _, tracks = synthetic.make_video_sample(int(clip.key.split("/")[1]), "train", cfg)
    for n, object_id in enumerate(clip.object_ids.tolist()):
        for t, frame in enumerate(clip.frame_indices):
            expected = tracks[object_id - 1][frame]
            assert clip.valid[n, t] == (expected is not None)
            assert np.array_equal(
                clip.masks[n, t], expected if expected is not None else np.zeros((64, 64), bool)
            )


def test_clip_sampler_modes():
    rng = np.random.default_rng(0)
    assert ClipSampler(4, 1, "first")(10) == [0, 1, 2, 3]
    assert ClipSampler(4, 2, "all", max_frames=5)(10) == [0, 2, 4, 6, 8]
    with pytest.raises(VideoTooLong, match="10 frames is longer than the 3 frames"):
        ClipSampler(4, 2, "all", max_frames=3)(10)
    assert ClipSampler(4, 3, "random")(5, rng) == [0, 3]  # shorter than one clip: all frames at stride
    starts = {ClipSampler(4, 1, "random")(10, rng)[0] for _ in range(200)}
    assert starts == set(range(7))
    assert ClipSampler(8)(1, rng) == [0]  # an image


def test_transform_resizes_pads_and_normalises():
    frames = np.full((2, 40, 80, 3), 255, dtype=np.uint8)
    masks = np.zeros((1, 2, 40, 80), dtype=bool)
    masks[0, :, 10:20, 40:80] = True
    clip = _clip(frames, masks)
    out = ResizePadNormalize(image_size=64)(clip)
    assert out.pixel_values.shape == (2, 40, 80, 3) and out.image_size == (32, 64)  # source frames
    assert out.original_size == (40, 80) and out.input_size == 64
    out.source = "s"
    pixels = collate_samples([out]).to("cpu").pixel_values[0]  # resized, normalised, padded there
    assert pixels.shape == (2, 3, 64, 64)
    white = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(pixels[0, :, 0, 0].numpy(), white, atol=1e-5)
    assert pixels[:, :, 32:].abs().max() == 0  # padding below the content
    assert out.targets.masks.shape == (1, 2, 64, 64) and out.targets.masks.dtype == torch_bool()
    # Scale 0.8: rows 10:20 -> 8:16, columns 40:80 -> 32:64.
    assert out.targets.masks[0, 0].sum() == 8 * 32 and out.targets.masks[0, 0, 8:16, 32:].all()
    flipped = ResizePadNormalize(image_size=64, hflip_prob=1.0)(clip, np.random.default_rng(0))
    assert flipped.targets.masks[0, 0, 8:16, :32].all() and flipped.targets.masks[0, 0].sum() == 8 * 32


def torch_bool():
    import torch

    return torch.bool


def _clip(frames, masks):
    from x2sam_lightning.data.shards import DecodedClip

    n, t = masks.shape[:2]
    return DecodedClip(
        frames=frames,
        masks=masks,
        valid=np.ones((n, t), bool),
        labels=np.zeros(n, np.int64),
        object_ids=np.arange(1, n + 1),
        iscrowd=np.zeros(n, bool),
        frame_indices=list(range(t)),
        sample={"task": "vid_genseg", "objects": [{"id": i + 1, "masks": []} for i in range(n)]},
        categories=[],
        key="k/1",
        url="mem",
    )


# ----------------------------------------------------------------------------------------- bad samples
# (every class of defect is in test_bad_input.py)
def _good_image_sample(size: int = 64) -> tuple[dict, bytes]:
    cfg = synthetic.SyntheticConfig(image_size=size)
    sample, png, _ = synthetic.make_image_sample(0, "train", cfg)
    return sample, png


def test_skip_mode_logs_and_continues(tmp_path, caplog):
    sample, png = _good_image_sample()
    url = str(tmp_path / "mixed-000000.tar")
    with wds.TarWriter(url, encoder=False) as writer:
        writer.write({"__key__": "mixed/0000001", "png": png})  # no json
        writer.write({"__key__": "mixed/0000002", "json": json.dumps(sample).encode(), "png": png})
    source = ShardSource("mixed", urls=[url], num_samples=2, task="img_genseg", modality="image")
    with caplog.at_level(logging.WARNING):
        out = list(iter_source(source, ResizePadNormalize(64), ClipSampler(), train=False, on_error="skip"))
    assert [s.key for s in out] == ["mixed/0000002"] and out[0].source == "mixed"
    assert "mixed/0000001" in caplog.text and url in caplog.text


def test_training_stream_stops_when_every_sample_is_skipped(tmp_path):
    _, png = _good_image_sample()
    url = str(tmp_path / "broken-000000.tar")
    with wds.TarWriter(url, encoder=False) as writer:
        for i in range(3):
            writer.write({"__key__": f"broken/{i:07d}", "png": png})  # no json: every sample unusable
    source = ShardSource("broken", urls=[url], num_samples=3, task="img_genseg", modality="image")
    stream = iter_source(source, ResizePadNormalize(64), ClipSampler(), train=True, on_error="skip")
    with pytest.raises(SourceError, match="'broken': the last 1000 reads"):
        next(stream)


def test_schema_rejects_bad_records():
    sample, _ = _good_image_sample()
    with pytest.raises(SampleError, match="has 2 masks for num_frames 1"):
        validate_sample(
            {**sample, "objects": [{**sample["objects"][0], "masks": [None, None]}]}, url="u", key="k"
        )
    with pytest.raises(SampleError, match="unsupported schema 3"):
        validate_sample({**sample, "schema": 3}, url="u", key="k")
    with pytest.raises(SampleError, match="lacks required key 'height'"):
        validate_sample({k: v for k, v in sample.items() if k != "height"}, url="u", key="k")
    with pytest.raises(SampleError, match="'num_frames' should be int"):
        validate_sample({**sample, "num_frames": "1"}, url="u", key="k")
    index = {
        "schema": 1,
        "dataset": "d",
        "split": "train",
        "task": "img_genseg",
        "modality": "image",
        "num_samples": 3,
        "shards": [{"url": "d-train-000000.tar", "num_samples": 2}],
    }
    with pytest.raises(SampleError, match="shards hold 2 samples but num_samples is 3"):
        validate_index(index, path="d-train.index.json")
