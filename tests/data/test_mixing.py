"""Temperature mixing: probabilities by hand, one source and one T per batch, 0 vs 2 workers, resume."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.mixing import (
    MixedBatchLoader,
    MixedBatchStream,
    SourceSchedule,
    repeat_factors,
    source_probabilities,
)
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.types import SegBatch, SegSample, TrackTargets


def test_probabilities_hand_computed():
    # Shares 0.9 / 0.1 at t = 0.1: sqrt(0.1 / 0.9) < 1 and sqrt(0.1 / 0.1) = 1, so nothing is repeated.
    assert repeat_factors({"a": 900, "b": 100}) == {"a": 1.0, "b": 1.0}
    assert source_probabilities({"a": 900, "b": 100}) == pytest.approx({"a": 0.9, "b": 0.1})
    # Shares 0.99 / 0.01: r_b = sqrt(10); p_b = 10 sqrt(10) / (990 + 10 sqrt(10)) = 0.030953...
    assert repeat_factors({"a": 990, "b": 10})["b"] == pytest.approx(math.sqrt(10))
    assert source_probabilities({"a": 990, "b": 10})["b"] == pytest.approx(0.0309531, abs=1e-6)
    # A per-source weight multiplies the mass: 990 vs 2 * 31.62.
    weighted = source_probabilities({"a": 990, "b": 10}, weights={"b": 2.0})
    assert weighted["b"] == pytest.approx(2 * 31.6228 / (990 + 2 * 31.6228), abs=1e-5)
    with pytest.raises(ValueError, match="positive number of samples"):
        source_probabilities({"a": 0})


def test_schedule_frequencies_and_random_access():
    schedule = SourceSchedule({"a": 0.7, "b": 0.2, "c": 0.1}, seed=3)
    counts = Counter(schedule.take(0, 5000))
    assert abs(counts["a"] / 5000 - 0.7) < 0.03 and abs(counts["c"] / 5000 - 0.1) < 0.02
    assert schedule.take(100, 20) == [schedule.source_at(i) for i in range(100, 120)]
    assert SourceSchedule({"a": 0.7, "b": 0.2, "c": 0.1}, seed=4).take(0, 50) != schedule.take(0, 50)
    torch.manual_seed(123)  # the global seed does not matter
    assert SourceSchedule({"a": 0.7, "b": 0.2, "c": 0.1}, seed=3).take(0, 50) == schedule.take(0, 50)


def _stream(root, **kwargs) -> MixedBatchStream:
    sources = {
        "img": ShardSource("img", root / "synthetic_img-train.index.json"),
        "vid": ShardSource("vid", root / "synthetic_vid-train.index.json"),
    }
    options = dict(
        batch_size=3,
        video_batch_size=2,
        image_size=64,
        clip_length=4,
        clip_stride=1,
        seed=7,
        shuffle_buffer=4,
    )
    return MixedBatchStream(sources, **{**options, **kwargs})


def _take(loader, n: int) -> list[SegBatch]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batches_hold_one_source_and_one_clip_length(tiny_root):
    stream = _stream(tiny_root)
    assert stream.probabilities == pytest.approx({"img": 0.75, "vid": 0.25})  # 12 vs 4 samples, no repeat
    for batch in _take(stream, 8):
        assert isinstance(batch, SegBatch)
        expected = (2, 4) if batch.source == "vid" else (3, 1)
        assert (batch.batch_size, batch.num_frames) == expected
        assert batch.modality == ("video" if batch.source == "vid" else "image")
        assert batch.pixel_values.shape[2:] == (3, 64, 64)
        assert all(t.masks.shape[1:] == (batch.num_frames, 64, 64) for t in batch.targets)
        assert all(key.startswith(f"synthetic_{batch.source}/") for key in batch.keys)


def test_source_sequence_same_with_0_and_2_workers(tiny_root):
    expected = SourceSchedule(_stream(tiny_root).probabilities, seed=7).take(0, 10)
    assert len(set(expected)) == 2
    zero = [b.source for b in _take(MixedBatchLoader(_stream(tiny_root), num_workers=0), 10)]
    two = [b.source for b in _take(MixedBatchLoader(_stream(tiny_root), num_workers=2), 10)]
    assert zero == two == expected


def test_resume_continues_the_source_sequence(tiny_root):
    full = [b.source for b in _take(MixedBatchLoader(_stream(tiny_root)), 12)]
    first = MixedBatchLoader(_stream(tiny_root))
    _take(first, 5)
    state = first.state_dict()
    assert state["batches_drawn"] == 5 and state["sources"] == ["img", "vid"]
    resumed = MixedBatchLoader(_stream(tiny_root), num_workers=2)
    resumed.load_state_dict(state)
    assert [b.source for b in _take(resumed, 7)] == full[5:]
    assert resumed.batches_drawn == 12


def _sample(source: str, frames: int) -> SegSample:
    targets = TrackTargets(
        masks=torch.zeros(1, frames, 8, 8, dtype=torch.bool),
        labels=torch.zeros(1, dtype=torch.long),
        valid=torch.ones(1, frames, dtype=torch.bool),
        object_ids=torch.ones(1, dtype=torch.long),
        iscrowd=torch.zeros(1, dtype=torch.bool),
    )
    return SegSample(
        torch.zeros(frames, 3, 8, 8), targets, (8, 8), (8, 8), f"{source}/1", source, "vid_genseg"
    )


def test_collate_checks_source_and_clip_length():
    batch = collate_samples([_sample("a", 2), _sample("a", 2)])
    assert batch.pixel_values.shape == (2, 2, 3, 8, 8) and batch.image_sizes.tolist() == [[8, 8], [8, 8]]
    with pytest.raises(ValueError, match="one source"):
        collate_samples([_sample("a", 2), _sample("b", 2)])
    with pytest.raises(ValueError, match="share T"):
        collate_samples([_sample("a", 2), _sample("a", 3)])
