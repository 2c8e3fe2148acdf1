"""Exact sample-level resume and epochs: the sample order is a function of counters, the plan is shared,
and a loader restored from its state continues with exactly the samples of the uninterrupted run."""

from __future__ import annotations

from collections import Counter
from itertools import chain, count

import pytest

from x2sam_lightning.data.batch_plan import BatchPlanner
from x2sam_lightning.data.mixing import MixedBatchLoader, MixedBatchStream, SourceSchedule
from x2sam_lightning.data.sample_order import SampleOrder
from x2sam_lightning.data.sources import ShardSource


def _sources(root, names=("img", "vid")) -> dict[str, ShardSource]:
    return {name: ShardSource(name, root / f"synthetic_{name}-train.index.json") for name in names}


def _stream(root, **kwargs) -> MixedBatchStream:
    options = dict(batch_size=3, video_batch_size=2, image_size=32, clip_length=4, seed=5, shuffle_buffer=5)
    return MixedBatchStream(_sources(root), **{**options, **kwargs})


def _batches(loader: MixedBatchLoader, n: int, consume: bool = True) -> list[tuple[str, list[str]]]:
    """``(source, keys)`` of the next ``n`` batches over epochs, each marked consumed as a step would."""
    out = []
    batches = chain.from_iterable(iter(loader) for _ in count())
    for _ in range(n):
        batch = next(batches)
        if consume:
            loader.mark_consumed()
        out.append((batch.source, list(batch.keys)))
    return out


def test_sample_order_visits_every_sample_once_per_pass():
    urls, sizes = ["a", "b", "c", "d"], [5, 3, 0, 4]  # "c" left out (e.g. found bad at start-up)
    order = SampleOrder(urls, sizes, seed=[1, 2], window=4)
    assert order.num_samples == 12
    for pass_ in range(3):
        seen = [order.locate(pass_ * 12 + i) for i in range(12)]
        assert sorted(seen) == sorted((u, i) for u, n in zip(urls, sizes) for i in range(n))
    first, second = ([order.locate(p * 12 + i) for i in range(12)] for p in (0, 1))
    assert first != second  # each pass has its own shard order and windows
    # Random access: the same answer however it is asked, and from a fresh object (nothing remembered).
    again = SampleOrder(urls, sizes, seed=[1, 2], window=4)
    assert [again.locate(k) for k in range(40, 0, -1)] == [order.locate(k) for k in range(40, 0, -1)]
    # A window holds `window` consecutive positions of the pass, permuted.
    assert order.window_of(13) == (12, 16) and order.window_of(23) == (20, 24)
    stored = SampleOrder(urls, sizes, seed=0, window=0, shuffle_shards=False)
    assert [stored.locate(i) for i in range(6)] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("a", 4),
        ("b", 0),
    ]
    with pytest.raises(ValueError, match="at least one shard with samples"):
        SampleOrder(["a"], [0], seed=0)


def test_realised_source_proportions_are_within_2_percent(tiny_root):
    sources = _sources(tiny_root, ("img", "vid", "img_refseg", "img_chat"))
    sources["img_chat"].weight = 3.0
    stream = MixedBatchStream(
        sources, batch_size=2, video_batch_size=1, image_size=32, clip_length=4, seed=11
    )
    planner = stream.planner(stream.accesses())
    n = 20_000
    drawn = Counter(planner.next().source for _ in range(n))
    assert len(stream.probabilities) == 4 and min(stream.probabilities.values()) > 0.05
    for name, p in stream.probabilities.items():
        assert abs(drawn[name] / n - p) < 0.02, (name, drawn[name] / n, p)
    # The samples each source gave follow from its batches: batches x global batch size.
    assert planner.samples == {name: drawn[name] * stream.global_batch_sizes[name] for name in sources}


def test_batches_follow_the_plan_with_0_and_2_workers(tiny_root):
    plan = _stream(tiny_root).planner(_stream(tiny_root).accesses())
    planned = [plan.next() for _ in range(16)]
    zero = _batches(MixedBatchLoader(_stream(tiny_root), num_workers=0), 16)
    two = _batches(MixedBatchLoader(_stream(tiny_root), num_workers=2), 16)
    assert zero == two
    assert [source for source, _ in zero] == [p.source for p in planned]
    assert {source for source, _ in zero} == {"img", "vid"}
    # Every key of the first pass over a source appears once before any repeats.
    img = [key for source, keys in zero if source == "img" for key in keys][:12]
    assert len(set(img)) == len(img) == 12


def test_resumed_loader_continues_with_exactly_the_same_samples(tiny_root):
    full = _batches(MixedBatchLoader(_stream(tiny_root), num_workers=0), 20)
    for stop, workers in ((7, 0), (11, 2)):
        first = MixedBatchLoader(_stream(tiny_root), num_workers=workers)
        seen = _batches(first, stop)
        _batches(first, 2, consume=False)  # fetched ahead (prefetch) but never reached a step
        state = first.state_dict()
        assert state["batches_drawn"] == stop and state["plan"]["index"] == stop
        resumed = MixedBatchLoader(_stream(tiny_root), num_workers=2 - workers)
        resumed.load_state_dict(state)
        assert seen + _batches(resumed, 20 - stop) == full, (stop, workers)


def test_state_holds_video_clips_waiting_for_their_length(tiny_root):
    # Videos of 6 frames cut into clips of 4 (stride 2: 3 frames) -> every clip has T = 3; with clip
    # length 8 a 6-frame video gives T = 6. Grouping keeps one T per batch either way.
    stream = _stream(tiny_root, clip_length=8)
    planner = stream.planner(stream.accesses())
    for _ in range(30):
        planner.next()
    state = planner.state_dict()
    assert set(state["positions"]) == {"img", "vid"} and state["index"] == 30
    again = BatchPlanner(stream.schedule.source_at, stream.global_batch_sizes, planner.clip_length_of)
    again.load_state_dict(state)
    assert [again.next() for _ in range(10)] == [planner.next() for _ in range(10)]


def test_epochs_are_a_sample_count_and_continue_one_stream(tiny_root):
    stream = _stream(tiny_root)
    loader = MixedBatchLoader(stream, epoch_samples=40)
    assert stream.mean_global_batch() == pytest.approx(0.75 * 3 + 0.25 * 2)
    assert len(loader) == round(40 / 2.75) == 15
    by_epoch = [[(b.source, list(b.keys)) for b in loader] for _ in range(2)]
    assert [len(e) for e in by_epoch] == [15, 15]
    assert by_epoch[0] + by_epoch[1] == _batches(MixedBatchLoader(_stream(tiny_root)), 30, consume=False)
    # The default epoch is one pass's worth: the sources' samples.
    assert MixedBatchLoader(_stream(tiny_root)).epoch_samples == 16
    with pytest.raises(ValueError, match="epoch_samples"):
        MixedBatchLoader(_stream(tiny_root), epoch_samples=0)


def test_a_resumed_epoch_ends_where_the_uninterrupted_one_does(tiny_root):
    loader = MixedBatchLoader(_stream(tiny_root), epoch_samples=40)
    _batches(loader, 4)
    resumed = MixedBatchLoader(_stream(tiny_root), epoch_samples=40)
    resumed.load_state_dict(loader.state_dict())
    assert len(list(resumed)) == 15 - 4  # the rest of epoch 0
    assert len(list(resumed)) == 15


def test_samples_seen_counts_consumed_samples_per_source(tiny_root):
    loader = MixedBatchLoader(_stream(tiny_root))
    got = _batches(loader, 9)
    _batches(loader, 1, consume=False)
    expected = Counter()
    for source, keys in got:
        expected[source] += len(keys)
    assert loader.samples_seen() == dict(expected)


def test_schedule_is_the_same_on_every_rank(tiny_root):
    ranks = [_stream(tiny_root, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].schedule.take(0, 50) == ranks[1].schedule.take(0, 50)
    assert SourceSchedule(ranks[0].probabilities, 5).take(0, 50) == ranks[0].schedule.take(0, 50)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        _stream(tiny_root, rank=2, world_size=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_shard_is_skipped_and_counted_once_per_pass(tmp_path, workers):
    from helpers import bad_data as bd

    keys = bd.good_image_shard(tmp_path / "g-000000.tar", 0, 4, dataset="g")
    keys += bd.good_image_shard(tmp_path / "g-000002.tar", 4, 4, dataset="g")
    (tmp_path / "g-000001.tar").write_bytes(bd.SHARD_DEFECTS["corrupt header"][0]())
    index = bd.write_index(tmp_path, "g", [("g-000000.tar", 4), ("g-000001.tar", 3), ("g-000002.tar", 4)])
    source = ShardSource("g", index)
    stream = MixedBatchStream({"g": source}, batch_size=2, image_size=32, seed=1, on_error="skip")
    loader = MixedBatchLoader(stream, num_workers=workers, timeout=bd.WORKER_TIMEOUT if workers else 0)
    # Two passes of 11 positions: 22 positions in 11 batches; the bad shard's 6 are left out.
    seen = [key for _, batch in _batches(loader, 11) for key in batch]
    assert sorted(seen) == sorted(keys * 2)
    assert source.stats.as_dict() == {"samples_skipped": 0, "shards_skipped": 2}
