"""Temporal-aware grouping and modality-aware batch sizes: video batches hold clips of one length (no
padding frames), however the clips are cut; image batches are base x multiplier, video batches base."""

from __future__ import annotations

import json
from collections import Counter
from itertools import chain, count
from pathlib import Path

import pytest

from x2sam_lightning.data.batch_plan import BatchPlanner
from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.mixing import MixedBatchStream
from x2sam_lightning.data.sources import ShardSource


def _plan(lengths: list[int], size: int, max_wait_batches: int | None = None, world_size: int = 1):
    """Plan global batches of one video source whose stream position ``i`` has clip length ``lengths[i]``."""
    planner = BatchPlanner(
        lambda index: "v",
        {"v": size},
        {"v": lambda position: lengths[position] if position < len(lengths) else 8},
        max_wait_batches=max_wait_batches,
        world_size=world_size,
    )
    batches = []
    while planner.positions["v"] < len(lengths):
        batches.append(planner.next().positions)
    return batches, planner


def test_batches_hold_one_clip_length_and_every_sample_once():
    lengths = [8, 8, 5, 8, 3, 5, 8, 8, 5, 3, 8, 5]
    batches, planner = _plan(lengths, 2)
    for batch in batches:
        assert len({lengths[p] for p in batch}) == 1 and len(batch) == 2
    planned = [p for batch in batches for p in batch]
    waiting = [p for group in planner.waiting["v"].values() for p in group]
    assert sorted(planned + waiting) == list(range(len(lengths)))  # every position once, none lost
    # Full batches of 2 in stream order within a length.
    assert batches[:2] == [(0, 1), (2, 5)]


def test_a_rare_length_leaves_as_a_smaller_batch_instead_of_waiting_for_ever():
    # one 3-frame clip, then only 8-frame clips: without the bound it would never be batched
    lengths = [3] + [8] * 30
    batches, _ = _plan(lengths, 4, max_wait_batches=2)
    rare = [i for i, b in enumerate(batches) if lengths[b[0]] == 3]
    assert len(rare) == 1 and batches[rare[0]] == (0,)
    assert rare[0] == 2  # once 2 batches' worth (8) of later positions went by
    assert all(len(b) == 4 for i, b in enumerate(batches) if i != rare[0])
    unbounded, planner = _plan(lengths, 4)
    assert all(lengths[b[0]] == 8 for b in unbounded) and planner.waiting["v"] == {3: [0]}
    # Two ranks: a smaller batch is a multiple of the world size, so every rank gets a share.
    two_ranks, planner = _plan([3] + [8] * 30, 4, max_wait_batches=2, world_size=2)
    assert all(lengths[b[0]] == 8 for b in two_ranks) and planner.waiting["v"] == {3: [0]}
    paired, _ = _plan([3, 3] + [8] * 30, 4, max_wait_batches=2, world_size=2)
    assert (0, 1) in paired


def test_bad_settings():
    with pytest.raises(ValueError, match="global batch sizes"):
        BatchPlanner(lambda index: "v", {"v": 0})
    with pytest.raises(ValueError, match="max_wait_batches"):
        BatchPlanner(lambda index: "v", {"v": 4}, max_wait_batches=0)


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
    it = iter(stream)  # the endless stream (a loader's epochs would end first)
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
    modalities, upcoming = [], []
    epochs = chain.from_iterable(iter(loader) for _ in count())
    for _, batch in zip(range(12), epochs):
        loader.mark_consumed()  # what SegDataModule.on_before_batch_transfer does in a fit
        sizes[batch.modality].add(batch.batch_size)
        modalities.append(batch.modality)
        upcoming.append(dm.upcoming_train_modalities(5))
    assert sizes == {"image": {3}, "video": {1}}
    # The look-ahead the LightningModule plans its accumulation windows with is what comes next, up to
    # the end of the epoch (where a window closes anyway).
    length = len(loader)
    for i, ahead in enumerate(upcoming[: 12 - 5]):
        assert ahead == modalities[i + 1 : min(i + 6, (i // length + 1) * length)]
    assert set(modalities) == {"image", "video"}


def test_batch_settings_are_checked():
    with pytest.raises(ValueError, match="image_batch_multiplier"):
        SegDataModule({}, batch_size=2, image_batch_multiplier=0)
