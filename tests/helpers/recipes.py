"""Converting a fixture with a recipe and reading the shards back the way training does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.fixtures.truth import FixtureTruth
from data_recipes.framework.recipe import Recipe, sample_key
from data_recipes.framework.writer import SplitSummary, convert_split
from x2sam_lightning.data.rle import decode_rle
from x2sam_lightning.data.shards import ClipSampler, decode_sample
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.tars import read_shard


def convert(recipe: Recipe, root: Path, out: Path, split: str, **kwargs: Any) -> SplitSummary:
    kwargs.setdefault("progress", False)
    return convert_split(recipe, root, out, split, **kwargs)


def read_back(out: Path, dataset: str, split: str) -> dict[str, dict[str, Any]]:
    """Every sample of a converted split by key: ``{"json", "members", "decoded"}``, decoded by the
    training reader (all frames, validated) through the split's index."""
    source = ShardSource(f"{dataset}_{split}", index=out / f"{dataset}-{split}.index.json")
    every_frame = ClipSampler(mode="all", max_frames=10_000)
    samples: dict[str, dict[str, Any]] = {}
    for url in source.urls:
        for raw in read_shard(url, source.shard_sizes.get(url)):
            decoded = decode_sample(
                raw,
                every_frame,
                default_categories=source.categories,
                task=source.task,
                modality=source.modality,
            )
            assert raw["__key__"] not in samples, f"key {raw['__key__']} twice"
            samples[raw["__key__"]] = {
                "json": json.loads(raw["json"]),
                "members": sorted(k for k in raw if not k.startswith("__")),
                "decoded": decoded,
            }
    assert len(samples) == source.num_samples
    return samples


def assert_matches_truth(out: Path, recipe: Recipe, split: str, truth: FixtureTruth) -> dict[str, dict]:
    """The split holds exactly the fixture's samples, each object's masks equal the fixture's, frame by
    frame (``None`` in the truth = a ``null`` mask), and the summary counts the fixture's skips."""
    samples = read_back(out, recipe.name, split)
    expected_keys = {sample_key(recipe.name, s) for s in truth.samples}
    assert set(samples) == expected_keys, (sorted(samples)[:5], sorted(expected_keys)[:5])
    for sample_id, expected in truth.samples.items():
        got = samples[sample_key(recipe.name, sample_id)]["json"]
        assert (got["height"], got["width"], got["num_frames"]) == (
            expected.height,
            expected.width,
            expected.num_frames,
        ), sample_id
        objects = {o["id"]: o for o in got["objects"]}
        assert set(objects) == set(expected.masks), (sample_id, sorted(objects), sorted(expected.masks))
        for object_id, frames in expected.masks.items():
            stored = objects[object_id]["masks"]
            assert len(stored) == len(frames)
            for t, (rle, mask) in enumerate(zip(stored, frames)):
                if mask is None:
                    assert rle is None, (sample_id, object_id, t)
                else:
                    assert rle is not None, (sample_id, object_id, t)
                    np.testing.assert_array_equal(
                        decode_rle(rle).astype(bool), mask, err_msg=f"{sample_id} {object_id} {t}"
                    )
    index = json.loads((out / f"{recipe.name}-{split}.index.json").read_text())
    assert index["summary"]["samples"] == len(truth.samples)
    assert index["summary"]["objects"] == truth.num_objects
    assert index["summary"]["skipped"] == truth.skipped
    return samples


class SA1BKilledAt:
    """SA-1B converted by a process that kills itself (SIGKILL) on reaching the item whose json file is
    named ``kill_at``: an interrupted conversion, for the resume test (importable by spawned workers)."""

    @staticmethod
    def recipe(kill_at: str) -> Recipe:
        import os
        import signal

        from data_recipes.sa1b import SA1B

        class _Killed(SA1B):
            def convert(self, item):  # noqa: ANN001
                if Path(item[0]).name == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().convert(item)

        return _Killed()


def assert_referring_splits(recipe: Recipe, root: Path, out: Path, truth: dict[str, FixtureTruth]) -> dict:
    """Convert a video referring dataset's ``train`` (one sample per video) and ``val`` (one per
    expression) splits and check each sample's references and frame times against the fixture's.

    Returns:
        The ``val`` samples' json by truth id (``<video>/<expression id>``).
    """
    import pytest

    by_id: dict[str, dict] = {}
    for split in ("train", "val"):
        convert(recipe, root, out, split, items_per_shard=3)
        samples = assert_matches_truth(out, recipe, split, truth[split])
        by_id = {}
        for sample in samples.values():
            refs = sample["json"]["references"]
            by_id[sample["json"]["video"] + (f"/{refs[0]['id']}" if split == "val" else "")] = sample["json"]
        for sample_id, expected in truth[split].samples.items():
            assert by_id[sample_id]["references"] == expected.extra["references"]
            assert by_id[sample_id]["frame_times"] == pytest.approx(expected.extra["times"], abs=1e-6)
    return by_id
