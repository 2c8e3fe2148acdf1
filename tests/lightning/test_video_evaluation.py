"""Whole videos in evaluation: streamed chunk by chunk through the memory, every frame scored, any length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.models import memory_off_zero
from hydra.utils import instantiate

from x2sam_lightning import cli
from x2sam_lightning.config import compose_config
from x2sam_lightning.data.mixing import EvalBatchStream
from x2sam_lightning.data.shards import ClipSampler, VideoTooLong
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import ensure_synthetic
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision
from x2sam_lightning.models.postprocess import instance_postprocess
from x2sam_lightning.types import SegBatch, TrackTargets

SIZE = 64
SMALL = [
    f"data.image_size={SIZE}",
    "model/mask_memory=tiny",
    "model.segmentor.mask_decoder.num_queries=4",
    "model.segmentor.mask_decoder.num_layers=1",
]


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    module = instantiate(compose_config("agnostic", SMALL).model)
    memory_off_zero(module.segmentor.mask_memory)  # so the bank matters
    return module.eval()


def _video_batch(frames: int = 10, seed: int = 0) -> SegBatch:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, frames, 3, SIZE, SIZE, generator=g)
    pixels[..., 48:, :] = 0  # content 48 x 64 in the padded 64 x 64 input
    original = torch.rand(2, frames, 24, 32, generator=g) > 0.5
    original[1, :4] = False  # the second object enters at frame 4
    masks = torch.zeros(2, frames, SIZE, SIZE, dtype=torch.bool)
    targets = TrackTargets(
        masks, torch.zeros(2, dtype=torch.long), torch.ones(2, frames, dtype=torch.bool), torch.tensor([3, 8]),
        torch.zeros(2, dtype=torch.bool), original_masks=original,
    )  # fmt: skip
    return SegBatch(
        pixel_values=pixels, targets=[targets], image_sizes=torch.tensor([[48, 64]]),
        original_sizes=torch.tensor([[24, 32]]), keys=["vid/0"], tasks=["vid_genseg"], source="videos",
        meta=[{}],
    )  # fmt: skip


def _chunk_batches(batch: SegBatch, size: int) -> list[SegBatch]:
    """The batch as a chunked evaluation stream gives it (objects absent from a chunk left out)."""
    out, total = [], batch.num_frames
    for start in range(0, total, size):
        part = slice(start, start + size)
        t = batch.targets[0]
        keep = t.original_masks[:, part].flatten(1).any(1)
        targets = TrackTargets(
            t.masks[keep, part], t.labels[keep], t.valid[keep, part], t.object_ids[keep], t.iscrowd[keep],
            original_masks=t.original_masks[keep, part],
        )  # fmt: skip
        stream = {"video": "vid/0", "start": start, "num_frames": total, "last": start + size >= total}
        out.append(
            SegBatch(
                pixel_values=batch.pixel_values[:, part],
                targets=[targets],
                image_sizes=batch.image_sizes,
                original_sizes=batch.original_sizes,
                keys=batch.keys,
                tasks=batch.tasks,
                source="videos",
                meta=[{"stream": stream}],
            )  # fmt: skip
        )
    return out


def _reference(module, batch: SegBatch) -> dict:
    """The whole clip decoded at once, post-processed as images are, scored with the metric's update."""
    with torch.no_grad():
        out = module.segmentor(batch.pixel_values)
    (det,) = instance_postprocess(
        out["pred_logits"],
        out["pred_masks"],
        batch.image_sizes,
        batch.original_sizes,
        (SIZE, SIZE),
        top_k=100,
    )
    metric = YouTubeVISAveragePrecision()
    t = batch.targets[0]
    metric.update(det["masks"], det["scores"], det["labels"], t.original_masks, t.labels, t.iscrowd)
    return metric.compute()


@pytest.mark.parametrize("source_chunk, model_chunk", [(None, 3), (None, 10), (4, 8), (4, 1)])
def test_a_streamed_video_scores_what_the_whole_clip_scores(module, source_chunk, model_chunk):
    """Whole-video batches cut into model chunks, or chunk batches from the stream: the track AP of the
    whole clip decoded at once."""
    batch = _video_batch()
    module.hparams.eval_chunk_frames = model_chunk
    module._video_evaluators.clear()
    module.val_video_metric.reset()
    for part in [batch] if source_chunk is None else _chunk_batches(batch, source_chunk):
        module.validation_step(part, 0)
    evaluator = next(iter(module._video_evaluators.values()))
    assert not evaluator.open and module.val_video_metric.update_count == 1
    got, want = module.val_video_metric.compute(), _reference(module, batch)
    assert all(torch.allclose(got[k], want[k]) for k in want), (got, want)


def test_chunks_out_of_order_are_an_error(module):
    module._video_evaluators.clear()
    first, second, third = _chunk_batches(_video_batch(), 4)
    with pytest.raises(ValueError, match="without the video's first frames"):
        module.validation_step(second, 0)
    module.validation_step(first, 0)
    with pytest.raises(ValueError, match="frames 4.. were expected"):
        module.validation_step(third, 0)


TINY = [
    "data.synthetic.num_train_images=8", "data.synthetic.num_val_images=4", "data.synthetic.num_test_images=4",
    "data.synthetic.num_train_videos=2", "data.synthetic.num_val_videos=2", "data.synthetic.num_test_videos=2",
    "data.synthetic.images_per_shard=8", "data.synthetic.frames=7",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("video_eval")


def _cfg(workdir, verb: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "+experiment=agnostic", f"verb={verb}", "data=synthetic", *SMALL, *TINY,
                f"paths.data_dir={workdir / 'data'}", f"paths.run_dir={workdir / 'runs' / verb}",
                "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides,
            ],
        )  # fmt: skip


def test_the_chunked_stream_gives_the_whole_video_in_order(workdir):
    cfg = _cfg(workdir, "validate")
    ensure_synthetic(**{k: v for k, v in cfg.data.synthetic.items()})
    source = ShardSource(
        "synthetic_vid_val", index=str(workdir / "data/synthetic/synthetic_vid-val.index.json")
    )
    whole = list(EvalBatchStream(source, image_size=SIZE, clip=ClipSampler(mode="all", max_frames=64)))
    chunked = list(EvalBatchStream(source, image_size=SIZE, chunk_frames=3))
    assert [b.num_frames for b in whole] == [7, 7]
    assert [b.num_frames for b in chunked] == [3, 3, 1, 3, 3, 1]
    streams = [b.meta[0]["stream"] for b in chunked]
    assert [(s["start"], s["last"], s["num_frames"]) for s in streams[:3]] == [
        (0, False, 7),
        (3, False, 7),
        (6, True, 7),
    ]
    for video, parts in zip(whole, (chunked[:3], chunked[3:])):
        assert {s.meta[0]["stream"]["video"] for s in parts} == {video.keys[0]}
        assert torch.equal(torch.cat([p.pixel_values for p in parts], 1), video.pixel_values)
        for part in parts:
            start = part.meta[0]["stream"]["start"]
            t = video.targets[0]
            for n, object_id in enumerate(part.targets[0].object_ids.tolist()):
                row = t.object_ids.tolist().index(object_id)
                assert torch.equal(
                    part.targets[0].original_masks[n], t.original_masks[row, start : start + part.num_frames]
                )
    # Whole-video reading stops at eval_max_frames (never cut); chunked reading has no limit.
    with pytest.raises(VideoTooLong):
        list(EvalBatchStream(source, image_size=SIZE, clip=ClipSampler(mode="all", max_frames=5)))


def test_stage1_validates_long_videos_whole(workdir):
    """`validate` on synthetic videos longer than eval_max_frames: streamed from the shard and scored."""
    cfg = _cfg(
        workdir,
        "validate",
        "data.eval_chunk_frames=3",
        "data.eval_max_frames=2",
        "~data.val_sources.synthetic_img_val",
    )
    metrics = cli.run_validate(cfg)
    assert {"val/video_ap50", "val/video_ap", "val/video_ar10"} <= set(metrics)
    assert "val/ap50" not in metrics  # no image source was evaluated
    assert all(-1.0 <= metrics[k] <= 1.0 for k in metrics)
    assert np.isfinite(metrics["val/video_ap50"])
