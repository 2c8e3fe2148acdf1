"""Samples whose conversation cannot be built (stage 2) go through the bad-input machinery like any bad
sample: a named error (raise), or a counted, logged skip (skip) under the source's failure guard, in
training and evaluation alike; a source none of whose samples converses stops instead of looping.
"""

from __future__ import annotations

import json
import logging
from itertools import chain, count
from pathlib import Path

import pytest
from helpers import bad_data as bd

from x2sam_lightning.data.conversations import ConversationError
from x2sam_lightning.data.errors import SourceError
from x2sam_lightning.data.mixing import EvalBatchStream, MixedBatchLoader, MixedBatchStream, eval_loader
from x2sam_lightning.data.sources import ShardSource

LIMIT = 5


def _referring(index: int, *, referable: bool) -> dict[str, bytes]:
    """A referring sample; without object expressions (and no references or query) it has nothing to refer
    with, so its conversation cannot be built."""
    sample, png = bd.good_image(index)
    sample["task"] = "img_refseg"
    if not referable:
        for obj in sample["objects"]:
            obj.pop("expressions", None)
    return {"json": json.dumps(sample).encode(), "png": png}


def _shard(tmp_path: Path, bad: list[bool], name: str = "r") -> tuple[str, list[str]]:
    keys = [f"{name}/{i:07d}" for i in range(len(bad))]
    members = [(key, _referring(i % 8, referable=not b)) for i, (key, b) in enumerate(zip(keys, bad))]
    return bd.write_shard(tmp_path / f"{name}-000000.tar", members), keys


def _source(url: str, n: int, task: str | None = "img_refseg") -> ShardSource:
    return ShardSource(
        "r", urls=[url], num_samples=n, task=task, modality="image", max_consecutive_failures=LIMIT
    )


def _train(source: ShardSource, on_error: str, workers: int = 0) -> MixedBatchLoader:
    stream = MixedBatchStream(
        {"r": source}, batch_size=2, image_size=32, shuffle_buffer=0, on_error=on_error, conversations=True
    )
    return MixedBatchLoader(
        stream, num_workers=workers, **({"timeout": bd.WORKER_TIMEOUT} if workers else {})
    )


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("task", "workers"),
    [("img_refseg", 0), ("img_refseg", 2), (None, 0)],
    ids=["no-refs", "workers", "no-task"],
)
def test_training_on_a_source_whose_samples_never_converse_stops(tmp_path, caplog, task, workers):
    # task None: the source's task is "unknown", for which no conversation exists.
    url, _ = _shard(tmp_path, [True] * 4 if task else [False] * 4)
    source = _source(url, 4, task)
    loader = _train(source, "skip", workers)
    with caplog.at_level(logging.WARNING):
        error = bd.raised(lambda: next(iter(loader)))
    assert type(error) is SourceError and f"source 'r': the last {LIMIT} reads" in str(error), str(error)
    if not workers:  # worker processes count in shared memory but log in their own process
        assert source.stats.as_dict()["samples_skipped"] == LIMIT + 1
        assert len(bd.warnings_with(caplog, url)) == LIMIT + 1


def test_training_counts_the_samples_it_skips(tmp_path, caplog):
    url, keys = _shard(tmp_path, [False, True, False, True])
    source = _source(url, 4)
    epochs = _train(source, "skip")  # an epoch is 2 batches here: take them over epochs
    loader = chain.from_iterable(iter(epochs) for _ in count())
    with caplog.at_level(logging.WARNING):
        batches = bd.within(60, lambda: [next(loader) for _ in range(3)])
    seen = {key for batch in batches for key in batch.keys}
    # A skipped sample leaves its batch smaller (the plan is never refilled from later samples).
    assert seen == {keys[0], keys[2]} and all(len(b.conversations) == b.batch_size for b in batches)
    skipped = source.stats.as_dict()["samples_skipped"]
    bad_warnings = bd.warnings_with(caplog, keys[1]) + bd.warnings_with(caplog, keys[3])
    assert skipped > 0 and len(bad_warnings) == skipped
    assert all("no references" in w for w in bad_warnings)


def test_training_with_raise_names_the_shard_and_sample(tmp_path):
    url, keys = _shard(tmp_path, [False, True, False, False])
    error = bd.raised(lambda: next(iter(_train(_source(url, 4), "raise"))))
    assert type(error) is ConversationError
    assert (error.url, error.key) == (url, keys[1])
    assert "img_refseg conversation: no references" in error.problem
    assert str(error).startswith(f"shard {url!r}, sample {keys[1]!r}: ")


def test_a_conversation_error_is_a_one_line_cli_error():
    from x2sam_lightning.cli import _one_line_code

    error = ConversationError("s-000000.tar", "s/1", "img_refseg conversation: no references")
    assert _one_line_code(error) == 1


# -------------------------------------------------------------------------------------------- evaluation
def test_evaluation_honours_eval_on_error(tmp_path, caplog):
    url, keys = _shard(tmp_path, [False, True, False, True])

    direct = bd.raised(
        lambda: list(EvalBatchStream(_source(url, 4), batch_size=2, image_size=32, conversations=True))
    )
    stream = EvalBatchStream(_source(url, 4), batch_size=2, image_size=32, conversations=True)
    loader = eval_loader(stream, num_workers=2, timeout=bd.WORKER_TIMEOUT, persistent_workers=False)
    crossed = bd.raised(lambda: list(loader))
    assert type(direct) is ConversationError
    bd.same_error_across_workers(direct, crossed)
    assert (direct.url, direct.key) == (url, keys[1])

    source = _source(url, 4)
    stream = EvalBatchStream(source, batch_size=2, image_size=32, on_error="skip", conversations=True)
    with caplog.at_level(logging.WARNING):
        batches = bd.within(60, lambda: list(stream))
    assert [key for batch in batches for key in batch.keys] == [keys[0], keys[2]]
    assert source.stats.as_dict() == {"samples_skipped": 2, "shards_skipped": 0}
    assert len(bd.warnings_with(caplog, keys[1])) == len(bd.warnings_with(caplog, keys[3])) == 1


def test_evaluation_skips_a_prompted_sample_whole_and_counts_it_once(tmp_path):
    sample, png = bd.good_image(0)
    sample["task"] = "img_intseg"
    sample["objects"] = []  # nothing to prompt: no prompt type can be built
    good = bd.image_members(1)
    good_sample = json.loads(good["json"])
    good_sample["task"] = "img_intseg"
    members = [
        ("p/0", {"json": json.dumps(sample).encode(), "png": png}),
        ("p/1", {**good, "json": json.dumps(good_sample).encode()}),
    ]
    url = bd.write_shard(tmp_path / "p-000000.tar", members)
    source = ShardSource("p", urls=[url], num_samples=2, task="img_intseg", modality="image")
    stream = EvalBatchStream(source, batch_size=8, image_size=32, on_error="skip", conversations=True)
    batches = bd.within(60, lambda: list(stream))
    assert sorted(c.prompt_type for b in batches for c in b.conversations) == sorted(
        ("point", "scribble", "box", "mask")
    )
    assert {key for b in batches for key in b.keys} == {"p/1"}
    assert source.stats.as_dict()["samples_skipped"] == 1


def test_evaluation_of_a_source_whose_samples_never_converse_stops_at_the_guard(tmp_path):
    url, _ = _shard(tmp_path, [True] * (LIMIT + 3))
    stream = EvalBatchStream(
        _source(url, LIMIT + 3), batch_size=2, image_size=32, on_error="skip", conversations=True
    )
    error = bd.raised(lambda: list(stream))
    assert type(error) is SourceError and f"the last {LIMIT} reads" in str(error)


def test_the_datamodule_passes_eval_on_error(tmp_path):
    from x2sam_lightning.data.datamodule import SegDataModule

    url, keys = _shard(tmp_path, [True, False, False])
    dm = SegDataModule(
        val_sources={"r": _source(url, 3)},
        batch_size=2,
        image_size=32,
        conversations=True,
        eval_on_error="skip",
    )
    seen = [key for batch in bd.within(60, lambda: list(dm.val_dataloader()[0])) for key in batch.keys]
    assert seen == keys[1:]
    assert dm.skip_stats() == {"r": {"samples_skipped": 1, "shards_skipped": 0}}


@pytest.mark.parametrize(
    "references", [[{"text": 5}], [{"object_ids": [1]}], [{"text": "x", "object_ids": 3}]]
)
def test_unusable_annotations_are_a_conversation_error(tmp_path, references):
    """Annotations the schema let through but a builder cannot use name the sample instead of crashing."""
    from x2sam_lightning.data.conversations import build_conversation
    from x2sam_lightning.data.shards import ClipSampler, iter_source
    from x2sam_lightning.data.transforms import ResizePadNormalize

    url, keys = _shard(tmp_path, [False])
    (sample,) = iter_source(_source(url, 1), ResizePadNormalize(32), ClipSampler(mode="all"), train=False)
    sample.meta["references"] = references
    with pytest.raises(ConversationError, match=rf"{keys[0]}.*img_refseg conversation: unusable annotations"):
        build_conversation(sample, "img_refseg", train=False)
