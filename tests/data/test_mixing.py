"""Temperature mixing: probabilities by hand, one source and one T per batch, 0 vs 2 workers, resume."""

from __future__ import annotations

import math
from collections import Counter
from itertools import chain, count

import pytest
import torch

from x2sam_lightning.data.collate import collate_samples
from x2sam_lightning.data.conversations import check_conversation
from x2sam_lightning.data.mixing import (
    EvalBatchStream,
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
    """The first ``n`` batches; a MixedBatchLoader's epochs end, so its epochs are taken one after another."""
    if isinstance(loader, MixedBatchLoader):
        batches = chain.from_iterable(iter(loader) for _ in count())
        return [next(batches) for _ in range(n)]
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
        assert batch.to("cpu").pixel_values.shape[2:] == (3, 64, 64)  # the model input
        assert all(t.masks.shape[1:] == (batch.num_frames, 64, 64) for t in batch.targets)
        assert all(key.startswith(f"synthetic_{batch.source}/") for key in batch.keys)
        assert batch.conversations == []  # stage 1: no text


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


def _task_stream(root, **kwargs) -> MixedBatchStream:
    sources = {
        name: ShardSource(name, root / f"synthetic_img_{name}-train.index.json")
        for name in ("refseg", "intseg", "chat")
    }
    options = dict(batch_size=2, image_size=64, seed=3, shuffle_buffer=4, conversations=True)
    return MixedBatchStream(sources, **{**options, **kwargs})


def _signature(batch: SegBatch) -> list:
    return [(c.template, c.messages, c.condition_objects) for c in batch.conversations]


def test_training_batches_carry_reproducible_conversations(tiny_root):
    batches = _take(_task_stream(tiny_root), 8)
    assert {b.source for b in batches} == {"refseg", "intseg", "chat"}
    for batch in batches:
        assert len(batch.conversations) == batch.batch_size == 2
        for conversation, task in zip(batch.conversations, batch.tasks):
            check_conversation(conversation)
            assert conversation.template.startswith(f"img_{batch.source}") and task == f"img_{batch.source}"
            if batch.source == "intseg":
                assert conversation.regions.shape[1:] == (1, 64, 64)
    again = _take(_task_stream(tiny_root), 8)
    assert [_signature(b) for b in again] == [_signature(b) for b in batches]
    reseeded = _take(_task_stream(tiny_root, seed=4), 8)
    assert [_signature(b) for b in reseeded] != [_signature(b) for b in batches]
    # In worker processes too (the generator is counter-based: seed, batch index, slot).
    for batch in _take(MixedBatchLoader(_task_stream(tiny_root), num_workers=2), 4):
        assert len(batch.conversations) == 2
        for conversation in batch.conversations:
            check_conversation(conversation)


def test_evaluation_yields_prompted_samples_once_per_prompt_type(tiny_root):
    for task, types in [
        ("intseg", {"point", "scribble", "box", "mask"}),
        ("vgdseg", {"point", "box"}),
        ("chat", {None}),
    ]:
        source = ShardSource(task, tiny_root / f"synthetic_img_{task}-val.index.json")
        batches = list(EvalBatchStream(source, batch_size=3, image_size=64, conversations=True))
        seen = Counter()
        for batch in batches:
            (kind,) = {c.prompt_type for c in batch.conversations}  # one prompt type per batch
            seen.update((key, kind) for key in batch.keys)
        keys = {key for key, _ in seen}
        assert len(keys) == source.num_samples and set(seen.values()) == {1}
        assert {kind for _, kind in seen} == types
        again = list(EvalBatchStream(source, batch_size=3, image_size=64, conversations=True))
        assert [_signature(b) for b in again] == [_signature(b) for b in batches]  # fixed by the key
