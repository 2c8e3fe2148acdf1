"""Many processes at the stream level: what "the same samples" means across world sizes.

Contract (docs/data.md, "Many processes"): at every step all ranks draw the same source; the ranks'
samples are disjoint; and ``R`` ranks with per-rank batch size ``B`` see at step ``i``, taken together in
rank order, exactly the samples one process sees at step ``i`` with batch size ``R x B`` (the global batch
is the same), with any number of DataLoader workers.
"""

from __future__ import annotations

from itertools import chain, count

from x2sam_lightning.data.mixing import MixedBatchLoader, MixedBatchStream
from x2sam_lightning.data.sources import ShardSource


def _stream(root, batch: int, video_batch: int, **kwargs) -> MixedBatchStream:
    sources = {
        "img": ShardSource("img", root / "synthetic_img-train.index.json"),
        "vid": ShardSource("vid", root / "synthetic_vid-train.index.json"),
    }
    return MixedBatchStream(
        sources,
        batch_size=batch,
        video_batch_size=video_batch,
        image_size=32,
        clip_length=4,
        seed=9,
        shuffle_buffer=6,
        **kwargs,
    )


def _steps(stream: MixedBatchStream, n: int, workers: int) -> list[tuple[str, list[str]]]:
    loader = MixedBatchLoader(stream, num_workers=workers)
    batches = chain.from_iterable(iter(loader) for _ in count())
    return [(b.source, list(b.keys)) for b in (next(batches) for _ in range(n))]


def test_two_ranks_see_the_global_batch_of_one_process(tiny_root):
    steps = 14
    single = _steps(_stream(tiny_root, 4, 2, rank=0, world_size=1), steps, workers=0)
    ranks = [
        _steps(_stream(tiny_root, 2, 1, rank=rank, world_size=2), steps, workers=workers)
        for rank, workers in ((0, 2), (1, 0))
    ]
    assert {source for source, _ in single} == {"img", "vid"}
    for step in range(steps):
        (s0, k0), (s1, k1) = ranks[0][step], ranks[1][step]
        assert s0 == s1 == single[step][0]  # the same source on every rank
        assert not set(k0) & set(k1)  # disjoint
        assert k0 + k1 == single[step][1]  # together, in rank order: the one-process batch


def test_ranks_cover_each_source_without_repeats_within_a_pass(tiny_root):
    ranks = [_steps(_stream(tiny_root, 2, 1, rank=r, world_size=2), 10, workers=0) for r in range(2)]
    # In step order, rank 0 then rank 1: the first 12 image samples are one pass over the 12 images.
    images = [key for step in zip(*ranks) for source, keys in step if source == "img" for key in keys]
    assert len(images) >= 12
    assert len(set(images[:12])) == 12


def _consumed(loader: MixedBatchLoader, n: int) -> list[tuple[str, list[str]]]:
    """The next ``n`` batches, each marked consumed as a training step does."""
    batches = chain.from_iterable(iter(loader) for _ in count())
    out = []
    for _ in range(n):
        batch = next(batches)
        loader.mark_consumed()
        out.append((batch.source, list(batch.keys)))
    return out


def _run(root, world_size: int, steps: int, state: dict | None = None) -> tuple[list, dict]:
    """``steps`` steps of every rank (per-rank batches: 2 images or 1 clip), optionally resumed from
    ``state``; returns the global batches (ranks joined in rank order) and rank 0's loader state."""
    loaders = []
    for rank in range(world_size):
        loader = MixedBatchLoader(_stream(root, 2, 1, rank=rank, world_size=world_size), num_workers=0)
        if state is not None:
            loader.load_state_dict(state)
        loaders.append(loader)
    ranks = [_consumed(loader, steps) for loader in loaders]
    joined = [(step[0][0], [key for _, keys in step for key in keys]) for step in zip(*ranks)]
    return joined, loaders[0].state_dict()


def _per_source(steps: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for source, keys in steps:
        out.setdefault(source, []).extend(keys)
    return out


def test_a_checkpoint_resumes_under_another_world_size_continuing_every_source(tiny_root, caplog):
    """1 -> 2 and 2 -> 1 processes (same per-rank batch size): the plan is global and stream positions
    count samples, so each source's sample sequence goes on where the checkpoint left it, nothing repeated
    or skipped, in global batches of the new size; a warning says the world size changed."""
    reference = _per_source(_run(tiny_root, 1, 40)[0])
    for before, after in ((1, 2), (2, 1)):
        first, state = _run(tiny_root, before, 5)
        assert state["world_size"] == before  # rank 0's state is what the checkpoint holds
        with caplog.at_level("WARNING"):
            resumed, _ = _run(tiny_root, after, 8, state)
        assert "world_size" in caplog.text and "continue each source's sample sequence" in caplog.text
        caplog.clear()
        assert {source for source, _ in first + resumed} == {"img", "vid"}
        for source, keys in _per_source(first + resumed).items():
            assert keys == reference[source][: len(keys)], (before, after, source)
