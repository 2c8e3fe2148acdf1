"""Converted datasets in the training and evaluation paths: ground truth at the source resolution, stage 1
on SA-1B-format shards through the paper preset's data config."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.recipes import convert
from helpers.synthetic import TINY

from data_recipes.fixtures.sa1b import write_sa1b
from data_recipes.framework.recipe import sample_key
from data_recipes.sa1b import SA1B
from x2sam_lightning import cli
from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import generate_synthetic
from x2sam_lightning.data.tars import read_shard


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("sa1b")
    truth = write_sa1b(tmp / "raw", scale=2)
    for split in ("train", "val"):
        convert(SA1B(), tmp / "raw", tmp / "data" / "sa1b", split)
    return tmp, truth


def test_evaluation_batches_carry_the_ground_truth_at_the_source_resolution(sa1b):
    tmp, truth = sa1b
    source = ShardSource("sa1b_val", index=tmp / "data" / "sa1b" / "sa1b-val.index.json")
    module = SegDataModule(val_sources={"sa1b_val": source}, image_size=32, batch_size=1)
    seen = 0
    for batch in module.val_dataloader()[0]:
        expected = {sample_key("sa1b", k): v for k, v in truth["val"].samples.items()}[batch.keys[0]]
        target = batch.targets[0]
        assert tuple(batch.original_sizes[0].tolist()) == (expected.height, expected.width)
        assert target.masks.shape[-2:] == (32, 32)  # the model input
        assert target.original_masks.shape[-2:] == (expected.height, expected.width)
        for n, object_id in enumerate(target.object_ids.tolist()):
            np.testing.assert_array_equal(target.original_masks[n, 0].numpy(), expected.masks[object_id][0])
        seen += 1
    assert seen == len(truth["val"].samples)


def test_stage1_trains_and_scores_on_sa1b_shards_with_the_paper_data_config(sa1b, capsys):
    tmp, _ = sa1b
    code = cli.main(
        [
            "fit",
            "+experiment=agnostic",
            "data=sa1b",  # the paper preset's data config (agnostic_sam2_large), with the tiny model
            f"paths.data_dir={tmp / 'data'}",
            f"paths.output_dir={tmp / 'runs'}",
            "logger=none",
            "callbacks=none",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            "data.batch_size=2",
        ]
    )
    assert code == 0
    assert "val/ap50" in capsys.readouterr().out
    (run,) = (tmp / "runs" / "agnostic" / "fit").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert list(config["data"]["train_sources"]) == ["sa1b"]
    metrics = json.loads((run / "fit_metrics.json").read_text())
    assert {"data/sa1b/samples_skipped", "val/ap50"} <= set(metrics)


def _export_as_sa1b(index: Path, raw: Path) -> None:
    """Write a synthetic split in SA-1B's archive layout (its image bytes, its masks as the json's RLE),
    with SA-1B ids chosen so every sample lands in the ``val`` split (ids divisible by 1000)."""
    source = ShardSource("synthetic_img_val", index=index)
    folder = raw / "sa_000000"
    folder.mkdir(parents=True)
    for url in source.urls:
        for raw_sample in read_shard(url):
            sample = json.loads(raw_sample["json"])
            image_id = 1000 * (1 + int(raw_sample["__key__"].rsplit("/", 1)[1]))
            media = raw_sample.get("png", raw_sample.get("jpg"))
            (folder / f"sa_{image_id}.jpg").write_bytes(media)  # SA-1B's name; the bytes decide the format
            annotations = [{"id": o["id"], "segmentation": o["masks"][0]} for o in sample["objects"]]
            record = {
                "image": {"image_id": image_id, "height": sample["height"], "width": sample["width"]},
                "annotations": annotations,
            }
            (folder / f"sa_{image_id}.json").write_text(json.dumps(record))


def test_the_synthetic_set_exported_in_sa1b_format_and_converted_back_reads_the_same(tmp_path):
    """Lossless for everything SA-1B carries: pixels, sizes, every object's mask and id (SA-1B is
    class-agnostic: the categories are not part of the format)."""
    generate_synthetic(tmp_path / "synthetic", **{**TINY, "datasets": ["synthetic_img"]})
    index = tmp_path / "synthetic" / "synthetic_img-val.index.json"
    _export_as_sa1b(index, tmp_path / "raw")
    convert(SA1B(), tmp_path / "raw", tmp_path / "sa1b", "val")
    original = ShardSource("synthetic_img_val", index=index)
    converted = ShardSource("sa1b_val", index=tmp_path / "sa1b" / "sa1b-val.index.json")
    module = SegDataModule(val_sources={"a": original, "b": converted}, image_size=TINY["image_size"])
    first, second = (list(loader) for loader in module.val_dataloader())
    assert sum(b.batch_size for b in first) == sum(b.batch_size for b in second) == TINY["num_val_images"]
    for a, b in zip(first, second):
        torch.testing.assert_close(a.pixel_values, b.pixel_values, rtol=0, atol=0)
        assert torch.equal(a.original_sizes, b.original_sizes)
        for x, y in zip(a.targets, b.targets):
            assert torch.equal(x.masks, y.masks) and torch.equal(x.original_masks, y.original_masks)
            assert torch.equal(x.object_ids, y.object_ids)
