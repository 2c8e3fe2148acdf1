"""Samples with many objects (SA-1B holds ~100 masks an image): a max_objects subset drawn before any mask
is decoded, masks resized object by object, and a criterion mask count of matchable targets only."""

from __future__ import annotations

import io
import json
from itertools import islice

import numpy as np
import torch
from PIL import Image

from x2sam_lightning.data import shards
from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.shards import ClipSampler, decode_sample
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.models.criterion import num_masks_across_processes
from x2sam_lightning.types import TrackTargets

HEIGHT, WIDTH, OBJECTS = 45, 70, 12


def _raw() -> dict:
    rng = np.random.default_rng(0)
    objects = []
    for n in range(OBJECTS):
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        y, x = rng.integers(0, HEIGHT - 5), rng.integers(0, WIDTH - 5)
        mask[y : y + int(rng.integers(1, 12)), x : x + int(rng.integers(1, 12))] = True
        objects.append({"id": 100 + n, "category_id": 1, "masks": [encode_mask(mask)]})
    sample = {
        "schema": 1,
        "task": "img_genseg",
        "dataset": "many",
        "modality": "image",
        "height": HEIGHT,
        "width": WIDTH,
        "num_frames": 1,
        "categories": [{"id": 1, "name": "object"}],
        "objects": objects,
    }
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return {
        "__key__": "many/0",
        "__url__": "mem",
        "json": json.dumps(sample).encode(),
        "png": buffer.getvalue(),
    }


def test_a_subset_is_drawn_before_any_mask_is_decoded(monkeypatch):
    decoded = []
    real = shards.decode_runs
    monkeypatch.setattr(shards, "decode_runs", lambda runs, h, w: decoded.extend(runs) or real(runs, h, w))
    clip = decode_sample(_raw(), ClipSampler(), np.random.default_rng(3), max_objects=5)
    assert len(clip.object_ids) == 5 and len(decoded) == 5
    assert set(clip.object_ids.tolist()) <= set(range(100, 100 + OBJECTS))
    again = decode_sample(_raw(), ClipSampler(), np.random.default_rng(3), max_objects=5)
    assert again.object_ids.tolist() == clip.object_ids.tolist()  # the seeded generator decides
    other = decode_sample(_raw(), ClipSampler(), np.random.default_rng(4), max_objects=5)
    assert other.object_ids.tolist() != clip.object_ids.tolist()
    every = decode_sample(_raw(), ClipSampler(), np.random.default_rng(3))
    assert len(every.object_ids) == OBJECTS


def test_masks_resized_object_by_object_equal_the_transforms_resize():
    transform = ResizePadNormalize(image_size=32)
    whole = transform(decode_sample(_raw(), ClipSampler()))
    clip = decode_sample(_raw(), ClipSampler(), mask_size=transform.mask_size)
    assert clip.masks.shape[-2:] == (21, 32)  # decoded straight at the input size
    by_object = transform(clip)
    assert torch.equal(whole.targets.masks, by_object.targets.masks)
    assert torch.equal(whole.pixel_values, by_object.pixel_values)
    # Evaluation keeps the source resolution too: no early resize then.
    keep = ResizePadNormalize(image_size=32, keep_original=True)
    assert keep.mask_size(HEIGHT, WIDTH) is None
    assert keep(decode_sample(_raw(), ClipSampler())).targets.original_masks.shape[-2:] == (HEIGHT, WIDTH)


def test_the_mask_count_holds_only_targets_a_query_can_match():
    def targets(n: int) -> TrackTargets:
        return TrackTargets(
            torch.zeros(n, 1, 4, 4, dtype=torch.bool),
            torch.zeros(n, dtype=torch.long),
            torch.ones(n, 1, dtype=torch.bool),
            torch.arange(n),
            torch.zeros(n, dtype=torch.bool),
        )

    batch = [targets(40), targets(5), targets(0)]
    assert num_masks_across_processes(batch, torch.device("cpu")) == 45
    assert num_masks_across_processes(batch, torch.device("cpu"), num_queries=16) == 16 + 5


def test_a_source_limits_objects_in_training_and_scores_every_object(tmp_path):
    from helpers.bad_data import write_index, write_shard

    from x2sam_lightning.data.shards import iter_source
    from x2sam_lightning.data.sources import ShardSource

    raw = _raw()
    members = {"json": raw["json"], "png": raw["png"]}
    write_shard(tmp_path / "many-000000.tar", [("many/0", members), ("many/1", members)])
    index = write_index(tmp_path, "many", [("many-000000.tar", 2)], categories=[{"id": 1, "name": "object"}])
    source = ShardSource("many", index=index, max_objects=4)
    train = islice(iter_source(source, ResizePadNormalize(32), ClipSampler(), train=True), 4)  # endless
    assert [len(s.targets) for s in train] == [4, 4, 4, 4]
    evaluation = ResizePadNormalize(32, keep_original=True)
    scored = list(iter_source(source, evaluation, ClipSampler(mode="all"), train=False))
    assert [len(s.targets) for s in scored] == [OBJECTS, OBJECTS]
