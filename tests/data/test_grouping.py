"""Temporal-aware grouping and modality-aware batch sizes: video batches hold clips of one length (no
padding frames), however the clips are cut; image batches are base x multiplier, video batches base."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.grouping import LengthGrouper
from x2sam_lightning.data.mixing import MixedBatchLoader, MixedBatchStream
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.types import SegSample, TrackTargets


def _sample(key: str, frames: int) -> SegSample:
    targets = TrackTargets(
        masks=torch.zeros(1, frames, 8, 8, dtype=torch.bool),
        labels=torch.zeros(1, dtype=torch.long),
        valid=torch.ones(1, frames, dtype=torch.bool),
        object_ids=torch.ones(1, dtype=torch.long),
        iscrowd=torch.zeros(1, dtype=torch.bool),
    )
    return SegSample(
        pixel_values=torch.zeros(frames, 3, 8, 8),
        targets=targets,
        image_size=(8, 8),
        original_size=(8, 8),
        key=key,
        task="vid_genseg",
        source="v",
        categories=[],
    )


def _run(grouper: LengthGrouper, lengths: list[int]) -> list[list[SegSample]]:
    batches = []
    for i, frames in enumerate(lengths):
        batch = grouper.add(_sample(f"v/{i}", frames))
        if batch is not None:
            batches.append(batch)
    return batches


def test_batches_hold_one_clip_length_and_every_sample_once():
    lengths = [8, 8, 5, 8, 3, 5, 8, 8, 5, 3, 8, 5]
    grouper = LengthGrouper(batch_size=2)
    batches = _run(grouper, lengths) + list(grouper.flush())
    for batch in batches:
        assert len({s.pixel_values.shape[0] for s in batch}) == 1
    keys = [s.key for batch in batches for s in batch]
    assert sorted(keys) == sorted(f"v/{i}" for i in range(len(lengths)))
    # Full batches of 2 (the 3-frame clips form one of their own), in arrival order within a length.
    assert [[s.key for s in b] for b in batches[:2]] == [["v/0", "v/1"], ["v/2", "v/5"]]


def test_a_rare_length_leaves_as_a_smaller_batch_instead_of_waiting_for_ever():
    grouper = LengthGrouper(batch_size=4, max_wait=6)
    # one 3-frame clip, then only 8-frame clips: without the bound it would never be batched
    batches = _run(grouper, [3] + [8] * 30)
    rare = [i for i, b in enumerate(batches) if b[0].pixel_values.shape[0] == 3]
    assert len(rare) == 1 and [s.key for s in batches[rare[0]]] == ["v/0"]
    assert rare[0] == 1  # at the 6th later arrival, after the one 8-frame batch that filled meanwhile
    assert all(len(b) == 4 for i, b in enumerate(batches) if i != rare[0])
    assert LengthGrouper(batch_size=4).add(_sample("v/0", 3)) is None  # unbounded: it would wait


def test_put_back_keeps_arrival_order():
    grouper = LengthGrouper(batch_size=3)
    batch = _run(grouper, [4, 4, 4])[0]
    dropped = batch.pop(1)  # e.g. its conversation failed
    grouper.put_back(batch)
    refill = grouper.add(_sample("v/9", 4))
    assert [s.key for s in refill] == ["v/0", "v/2", "v/9"] and dropped.key == "v/1"


def test_bad_settings():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGrouper(0)
    with pytest.raises(ValueError, match="max_wait"):
        LengthGrouper(4, max_wait=1)


@pytest.fixture(scope="module")
def mixed_length_videos(tiny_root, tmp_path_factory) -> Path:
    """One video source whose shards hold 6-frame and 3-frame videos (as recipes cut real videos)."""
    from x2sam_lightning.data.synthetic import generate_synthetic

    short_root = tmp_path_factory.mktemp("short")
    generate_synthetic(
        short_root,
        image_size=64,
        num_train_videos=4,
        frames=3,
        videos_per_shard=2,
        datasets=["synthetic_vid"],
    )
    long_index = json.loads((tiny_root / "synthetic_vid-train.index.json").read_text())
    short_index = json.loads((short_root / "synthetic_vid-train.index.json").read_text())
    shards = [
        {"url": str(root / shard["url"]), "num_samples": shard["num_samples"]}
        for root, index in ((tiny_root, long_index), (short_root, short_index))
        for shard in index["shards"]
    ]
    index = {**long_index, "shards": shards, "num_samples": sum(s["num_samples"] for s in shards)}
    path = short_root / "mixed-train.index.json"
    path.write_text(json.dumps(index))
    return path


def test_video_batches_of_a_source_with_clips_of_several_lengths_hold_one_length(mixed_length_videos):
    """Clip length 4: the 6-frame videos give 4-frame clips, the 3-frame videos all their 3 frames."""
    source = ShardSource("vid", mixed_length_videos)
    stream = MixedBatchStream(
        {"vid": source},
        batch_size=8,
        video_batch_size=2,
        image_size=64,
        clip_length=4,
        seed=1,
        shuffle_buffer=4,
    )
    loader = MixedBatchLoader(stream)
    it = iter(loader)
    batches = [next(it) for _ in range(8)]  # two passes over the 8 videos
    lengths = Counter()
    for batch in batches:
        assert batch.modality == "video"
        assert batch.pixel_values.shape[:2] == (len(batch.keys), batch.num_frames)
        assert all(t.masks.shape[1] == batch.num_frames for t in batch.targets)  # no padding frame anywhere
        lengths[batch.num_frames] += len(batch.keys)
    assert set(lengths) == {3, 4}
    assert all(len(b.keys) <= 2 for b in batches)


def test_image_batches_are_base_times_multiplier_video_batches_base(tiny_root):
    train = {
        "img": ShardSource("img", tiny_root / "synthetic_img-train.index.json"),
        "vid": ShardSource("vid", tiny_root / "synthetic_vid-train.index.json"),
    }
    dm = SegDataModule(
        train, batch_size=1, image_batch_multiplier=3, image_size=64, clip_length=2, seed=2, shuffle_buffer=2
    )
    loader = dm.train_dataloader()
    sizes = {"image": set(), "video": set()}
    modalities = []
    for i, batch in zip(range(12), loader):
        loader.mark_consumed()  # what SegDataModule.on_before_batch_transfer does in a fit
        sizes[batch.modality].add(batch.batch_size)
        modalities.append(batch.modality)
        if i == 4:
            upcoming = dm.upcoming_train_modalities(5)
    assert sizes == {"image": {3}, "video": {1}}
    # The look-ahead the LightningModule plans its accumulation windows with is what comes next.
    assert upcoming == modalities[5:10]
    assert set(modalities) == {"image", "video"}


def test_batch_settings_are_checked():
    with pytest.raises(ValueError, match="image_batch_multiplier"):
        SegDataModule({}, batch_size=2, image_batch_multiplier=0)
