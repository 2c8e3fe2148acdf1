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
