"""SegDataModule: synthetic data on first use, finite validation, Lightning checkpoint resume of the mix."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from x2sam_lightning.data.datamodule import SegDataModule
from x2sam_lightning.data.mixing import SourceSchedule
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.types import SegBatch


def _datamodule(root, tiny_kwargs, **kwargs) -> SegDataModule:
    train = {
        "img": ShardSource("img", root / "synthetic_img-train.index.json"),
        "vid": ShardSource("vid", root / "synthetic_vid-train.index.json"),
    }
    val = {
        "img_val": ShardSource("img_val", root / "synthetic_img-val.index.json"),
        "vid_val": ShardSource("vid_val", root / "synthetic_vid-val.index.json"),
    }
    options = dict(
        batch_size=1,
        image_batch_multiplier=4,
        image_size=64,
        clip_length=3,
        seed=5,
        shuffle_buffer=4,
        synthetic={"root": str(root), **tiny_kwargs},
    )
    return SegDataModule(train, val, **{**options, **kwargs})


def test_prepare_data_generates_then_loaders_yield_segbatches(tmp_path, tiny_kwargs):
    dm = _datamodule(tmp_path / "data", tiny_kwargs)
    dm.prepare_data()
    assert (tmp_path / "data" / "synthetic_img-train.index.json").is_file()
    batch = next(iter(dm.train_dataloader()))
    # uint8 source frames (128 px) until the batch reaches its device, model input (64 px) there.
    assert isinstance(batch, SegBatch) and batch.pixel_values.dtype == torch.uint8 and batch.input_size == 64
    moved = batch.to("cpu")
    assert moved.pixel_values.shape == (*batch.pixel_values.shape[:2], 3, 64, 64) and moved.input_size is None
    assert moved.pixel_values.dtype == torch.float32
    assert dm.val_source_names == ["img_val", "vid_val"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_validation_is_one_ordered_pass(tiny_root, tiny_kwargs, num_workers):
    dm = _datamodule(tiny_root, tiny_kwargs, num_workers=num_workers)
    img_loader, vid_loader = dm.val_dataloader()
    keys = [key for batch in img_loader for key in batch.keys]
    assert sorted(keys) == [f"synthetic_img/{i:07d}" for i in range(6)]
    videos = list(vid_loader)
    assert [b.num_frames for b in videos] == [6, 6]  # whole videos, batch 1
    assert sorted(k for b in videos for k in b.keys) == ["synthetic_vid/0000000", "synthetic_vid/0000001"]


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.sources: list[str] = []

    def training_step(self, batch: SegBatch, batch_idx: int) -> torch.Tensor:
        self.sources.append(batch.source)
        return (self.weight * batch.pixel_values.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(max_steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def test_checkpoint_resume_continues_source_sequence(tiny_root, tiny_kwargs, tmp_path):
    dm = _datamodule(tiny_root, tiny_kwargs)
    model = _Recorder()
    trainer = _trainer(4)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "step4.ckpt")
    saved = torch.load(tmp_path / "step4.ckpt", weights_only=False)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_drawn"] == 4

    resumed = _Recorder()
    _trainer(7).fit(
        resumed, datamodule=_datamodule(tiny_root, tiny_kwargs), ckpt_path=tmp_path / "step4.ckpt"
    )
    expected = SourceSchedule(dm._train_loader.dataset.probabilities, seed=5).take(0, 7)
    assert model.sources == expected[:4] and resumed.sources == expected[4:]


def test_hydra_instantiates_the_datamodule(tmp_path, tiny_kwargs):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = str(tmp_path / "synthetic")
    source = "x2sam_lightning.data.sources.ShardSource"
    cfg = OmegaConf.create(
        {
            "_target_": "x2sam_lightning.data.datamodule.SegDataModule",
            "train_sources": {
                "synthetic_img": {
                    "_target_": source,
                    "name": "synthetic_img",
                    "index": f"{root}/synthetic_img-train.index.json",
                },
            },
            "val_sources": {
                "synthetic_img_val": {
                    "_target_": source,
                    "name": "synthetic_img_val",
                    "index": f"{root}/synthetic_img-val.index.json",
                },
            },
            "batch_size": 4,
            "image_size": 64,
            "synthetic": {"root": root, **tiny_kwargs},
        }
    )
    dm = instantiate(cfg)
    assert isinstance(dm, SegDataModule) and isinstance(dm.train_sources["synthetic_img"], ShardSource)
    dm.prepare_data()
    assert next(iter(dm.train_dataloader())).source == "synthetic_img"
    assert sum(b.batch_size for b in dm.val_dataloader()[0]) == tiny_kwargs["num_val_images"]


def test_stage2_image_mix_composes_and_yields_conversations(tmp_path, tiny_kwargs):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from x2sam_lightning import cli

    sizes = [f"data.synthetic.{k}={v}" for k, v in tiny_kwargs.items() if k not in ("image_size", "datasets")]
    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data=synthetic_image_tasks",
                f"paths.data_dir={tmp_path}",
                "data.image_size=64",
                "data.synthetic.workers=1",
                *sizes,
            ],
        )
    dm = instantiate(cfg.data)
    assert dm.conversations and "synthetic_img_ovseg" not in dm.train_sources and len(dm.train_sources) == 7
    kinds = ["", "_ovseg", "_refseg", "_reaseg", "_gcgseg", "_intseg", "_vgdseg", "_chat"]
    assert dm.val_source_names == [f"synthetic_img{kind}_val" for kind in kinds]
    assert dm.test_source_names == [f"synthetic_img{kind}_test" for kind in kinds]
    dm.prepare_data()
    assert not list(tmp_path.glob("synthetic/synthetic_vid-*"))  # the image mix generates no videos
    batch = next(iter(dm.train_dataloader()))
    assert len(batch.conversations) == batch.batch_size
    ovseg = dm.val_dataloader()[1]
    conversation = next(iter(ovseg)).conversations[0]
    assert (
        conversation.condition_labels == list(range(12))
        and "<p>red circle</p>" in conversation.messages[0]["content"]
    )
    test_keys = [k for b in dm.test_dataloader()[2] for k in b.keys]
    assert len(test_keys) == tiny_kwargs["num_test_task_images"]


def test_stage2_image_and_video_mix_generates_and_loads_every_video_task_set(tmp_path, tiny_kwargs):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from x2sam_lightning import cli
    from x2sam_lightning.data.synthetic import VIDEO_TASK_DATASETS
    from x2sam_lightning.special_tokens import VIDEO

    sizes = [f"data.synthetic.{k}={v}" for k, v in tiny_kwargs.items() if k not in ("image_size", "datasets")]
    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "data=synthetic_tasks",
                f"paths.data_dir={tmp_path}",
                "data.image_size=64",
                "data.clip_length=4",
                "data.synthetic.workers=1",
                *sizes,
            ],
        )
    dm = instantiate(cfg.data)
    video_train = [name for name in VIDEO_TASK_DATASETS if name != "synthetic_vid_ovseg"]
    assert dm.conversations and set(video_train) < set(dm.train_sources) and len(dm.train_sources) == 14
    assert [f"{name}_val" for name in VIDEO_TASK_DATASETS] == dm.val_source_names[-7:]
    assert [f"{name}_test" for name in VIDEO_TASK_DATASETS] == dm.test_source_names[-7:]
    dm.prepare_data()  # generates every set the mix names, the video task sets among them
    for name in VIDEO_TASK_DATASETS:
        assert (tmp_path / "synthetic" / f"{name}-val.index.json").is_file()
    for name, loader in zip(dm.val_source_names[-7:], dm.val_dataloader()[-7:]):
        batch = next(iter(loader))
        assert (
            batch.source == name and batch.modality == "video" and batch.num_frames == tiny_kwargs["frames"]
        )
        assert len(batch.conversations) == batch.batch_size
        assert batch.conversations[0].messages[0]["content"].startswith(VIDEO + "\n")
        assert all("tags" in meta for meta in batch.meta)
    # Training: video batches are clips of clip_length frames with their conversations.
    seen = set()
    for batch, _ in zip(dm.train_dataloader(), range(60)):
        if batch.source in video_train:
            assert batch.num_frames == 4 and len(batch.conversations) == batch.batch_size
            seen.add(batch.source)
    assert seen  # the mix draws the video task sets
