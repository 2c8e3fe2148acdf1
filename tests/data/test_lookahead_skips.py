"""The accumulation look-ahead (``SegDataModule.upcoming_train_modalities``) names the batches the training
step will really get: a planned batch whose every sample is bad (``on_error="skip"``: a ``SkippedBatch``,
dropped by the loader) is not counted, so the look-ahead is not shifted by one after it."""

from __future__ import annotations

import logging

import pytest
from helpers import bad_data as bd

from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.sources import ShardSource

BAD_VIDEOS = {2, 5}  # stream positions of the broken video samples (one shard, no shuffling)


@pytest.fixture
def sources(tmp_path):
    bd.good_image_shard(tmp_path / "img-000000.tar", 0, 16, "img")
    images = bd.write_index(tmp_path, "img", [("img-000000.tar", 16)])
    videos = [
        (
            f"vid/{i:07d}",
            bd.broken_json_sample("video mask count") if i in BAD_VIDEOS else bd.video_members(i),
        )
        for i in range(8)
    ]
    bd.write_shard(tmp_path / "vid-000000.tar", videos)
    index = bd.write_index(tmp_path, "vid", [("vid-000000.tar", 8)], task="vid_genseg", modality="video")
    return {"img": ShardSource("img", images), "vid": ShardSource("vid", index)}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_skipped_batch_does_not_shift_the_look_ahead(sources, workers, caplog):
    dm = SegDataModule(
        sources,
        batch_size=1,  # a video batch: one clip, so one bad video is a whole bad batch
        image_batch_multiplier=2,
        image_size=32,
        clip_length=2,
        seed=3,
        shuffle_buffer=0,
        on_error="skip",
        num_workers=workers,
        epoch_samples=24,
    )
    loader = dm.train_dataloader()
    batches, upcoming = [], []
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # two epochs
            iterator = iter(loader)
            fetched = next(iterator, None)
            while fetched is not None:
                batch, fetched = fetched, next(iterator, None)  # Lightning fetches one batch ahead
                loader.mark_consumed()  # SegDataModule.on_before_batch_transfer
                upcoming.append(dm.upcoming_train_modalities(3))  # what training_step asks
                batches.append((batch.modality, len(batches)))
            batches.append(("end of epoch", len(batches)))
    assert dm.skip_stats()["vid"]["samples_skipped"] >= 1  # a whole video batch was dropped
    steps = [b for b in batches if b[0] != "end of epoch"]
    assert len(steps) < 2 * len(loader)  # fewer batches than planned reached the step
    # Each step's look-ahead: the modalities of the next batches the step gets, up to its epoch's end.
    modalities = [m for m, _ in batches]
    for (_, position), ahead in zip(steps, upcoming):
        rest = modalities[position + 1 :]
        following = rest[: rest.index("end of epoch")] if "end of epoch" in rest else rest
        assert ahead == following[:3], (position, modalities)
