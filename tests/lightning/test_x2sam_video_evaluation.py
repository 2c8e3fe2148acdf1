"""Stage 2 on whole videos read in chunks: the LLM on the first chunk, every chunk through the memory, the
video scored by the whole-clip evaluator on all its annotated frames."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from helpers.models import memory_off_zero
from helpers.vlm import build_stage2

from x2sam_lightning.data.mixing import EvalBatchStream
from x2sam_lightning.data.sources import ShardSource
from x2sam_lightning.data.synthetic import generate_synthetic
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets

SIZE, T = 64, 10
CATEGORIES = [{"id": 1, "name": "circle", "isthing": True}, {"id": 2, "name": "square", "isthing": True}]


@pytest.fixture(scope="module")
def module(stage2_dir):
    """The tiny stage-2 preset with a mask memory off its zero initialisation (so the bank matters); the
    LLM reads one frame (frame 0, whole clip or first chunk alike) and answers as a trained one would."""
    module = build_stage2(stage2_dir, "model/mask_memory=tiny", "model.video_llm_frames=1", image_size=SIZE)
    memory_off_zero(module.net.segmentor.mask_memory)
    backbone = module.net.vl_backbone
    reply = backbone.tokenizer("It is <SEG>.")["input_ids"] + [backbone.token_ids["<|im_end|>"]]
    backbone.generate = lambda *args, **kwargs: torch.tensor([reply], dtype=torch.long)
    return module.eval()


def _video(task: str, conversation: Conversation, source: str) -> SegBatch:
    """Two objects moving over ``T`` frames; the content is 48 x 64 of the padded input, the ground truth
    at a 24 x 32 source size; frame 6 is not annotated (left out of scoring)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, T, 3, SIZE, SIZE, generator=g)
    pixels[..., 48:, :] = 0
    original = torch.zeros(2, T, 24, 32, dtype=torch.bool)
    for t in range(T):
        original[0, t, 2:10, t : t + 8] = True
        original[1, t, 12:22, 20 - t : 30 - t] = t != 3  # absent on frame 3
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[:, 6] = False
    targets = TrackTargets(
        torch.zeros(2, T, SIZE, SIZE, dtype=torch.bool), torch.tensor([0, 1]), valid, torch.tensor([3, 8]),
        torch.zeros(2, dtype=torch.bool), original_masks=original,
    )  # fmt: skip
    return SegBatch(
        pixels, [targets], torch.tensor([[48, 64]]), torch.tensor([[24, 32]]), ["vid/0"], [task], source,
        categories=[CATEGORIES], meta=[{}], conversations=[conversation],
    )  # fmt: skip


def _chunks(batch: SegBatch, size: int, source: str) -> list[SegBatch]:
    """The video as the chunked reader gives it: every chunk with the video's objects and conversation."""
    t, total = batch.targets[0], batch.num_frames
    out = []
    for start in range(0, total, size):
        part = slice(start, start + size)
        targets = replace(
            t, masks=t.masks[:, part], valid=t.valid[:, part], original_masks=t.original_masks[:, part]
        )
        stream = {"video": "vid/0", "start": start, "num_frames": total, "last": start + size >= total}
        out.append(
            replace(
                batch,
                pixel_values=batch.pixel_values[:, part],
                targets=[targets],
                source=source,
                meta=[{"stream": stream}],
            )  # fmt: skip
        )
    return out


def _scores(module, source: str) -> dict[str, float]:
    collection = module.eval_metrics[f"val__{source}"]
    values = {}
    for name, metric in collection.items(keep_base=True, copy_state=False):
        if not metric.update_count:  # a prompt type the test does not evaluate
            continue
        values.update({f"{name}/{k}": float(v) for k, v in metric.compute().items() if v.numel() == 1})
    return values


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6)
        for k in a
    )


REFERRING = Conversation(
    [{"role": "user", "content": "<video>\nPlease segment <p>the red square</p> in this video."},
     {"role": "assistant", "content": "It is <SEG>."}],
    "per_condition", [[1]], [-1],
)  # fmt: skip
GENERIC = Conversation(
    [{"role": "user", "content": "<video>\nCan you segment the video based on the following categories: "
                                 "<p>circle</p>, <p>square</p>? Please output the segmentation masks."},
     {"role": "assistant", "content": "Sure, <SEG>."}],
    "set", [[0], [1]], [0, 1],
)  # fmt: skip

_BOX = torch.zeros(1, T, SIZE, SIZE, dtype=torch.bool)
_BOX[0, 0, 4:20, 0:16] = True  # the circle's box on frame 0
GROUNDED = Conversation(
    [{"role": "user", "content": "<video>\nCan you segment the video based on the following regions: "
                                 "<p><region></p>?"},
     {"role": "assistant", "content": "Sure, <SEG>."}],
    "set", [[0]], [0], regions=_BOX, region_frames=[0], prompt_type="box",
)  # fmt: skip


@pytest.mark.parametrize(
    "task, conversation", [("vid_refseg", REFERRING), ("vid_genseg", GENERIC), ("vid_vgdseg", GROUNDED)]
)
def test_a_chunked_video_scores_what_the_whole_clip_scores(module, task, conversation):
    """J&F (referring), VPQ / video AP / mIoU / mVC (generic) and V-VGD AP (a box prompt): chunks of 4, 4
    and 2 frames carry the memory and give the whole clip's numbers; the unannotated frame is left out on
    both paths."""
    whole, chunked = f"{task}_whole", f"{task}_chunked"
    for source in (whole, chunked):  # the collections a datamodule's source would give (its vocabulary)
        module.eval_metrics[f"val__{source}"] = module.source_metrics(
            task, SimpleNamespace(categories=CATEGORIES)
        )
    module.validation_step(_video(task, conversation, whole), 0)
    for part in _chunks(_video(task, conversation, chunked), 4, chunked):
        module.validation_step(part, 0)
    assert not module._video_evaluators[("val", chunked)].open
    want, got = _scores(module, whole), _scores(module, chunked)
    assert _same(got, want), (got, want)
    # The random model's V-VGD detections all miss (AP 0 on both paths); the others score something.
    assert task == "vid_vgdseg" or any(v > 0 for v in want.values())


def test_a_reply_without_seg_scores_empty_tracks_without_decoding(module, monkeypatch):
    backbone = module.net.vl_backbone
    reply = backbone.tokenizer("There is none.")["input_ids"] + [backbone.token_ids["<|im_end|>"]]
    monkeypatch.setattr(backbone, "generate", lambda *a, **k: torch.tensor([reply], dtype=torch.long))
    monkeypatch.setattr(module.net.segmentor, "decode_frames", None)  # nothing is streamed
    for part in _chunks(_video("vid_refseg", REFERRING, "no_seg"), 4, "no_seg"):
        module.validation_step(part, 0)
    # Empty masks: right only on frame 3 of the nine annotated ones (the object is absent there).
    assert _scores(module, "no_seg")["jf/J&F"] == pytest.approx(1 / 9)


def test_chunks_out_of_order_or_without_the_first_are_errors(module):
    first, second, third = _chunks(_video("vid_refseg", REFERRING, "order"), 4, "order")
    with pytest.raises(ValueError, match="without the video's first frames"):
        module.validation_step(second, 0)
    module.validation_step(first, 0)
    with pytest.raises(ValueError, match="frames 4.. were expected"):
        module.validation_step(third, 0)


def test_a_video_longer_than_eval_max_frames_is_scored_on_every_frame(module, tmp_path):
    """Synthetic referring videos of 7 frames (whole-clip reading stops at eval_max_frames=5, see
    test_video_evaluation) read 3 frames at a time: each is scored once, on all 7 frames, with the
    conversation of its first chunk and the video's objects on every chunk, as the whole clip scores."""
    generate_synthetic(
        tmp_path, image_size=SIZE, num_train_task_videos=0, num_val_task_videos=2, num_test_task_videos=0,
        frames=7, videos_per_shard=2, datasets=["synthetic_vid_refseg"],
    )  # fmt: skip
    source = ShardSource(
        "synthetic_vid_refseg_val", index=str(tmp_path / "synthetic_vid_refseg-val.index.json")
    )
    batches = [
        b.to("cpu") for b in EvalBatchStream(source, image_size=SIZE, conversations=True, chunk_frames=3)
    ]
    assert [b.num_frames for b in batches] == [3, 3, 1, 3, 3, 1]
    for parts in (batches[:3], batches[3:]):
        assert len({id(b.conversations[0]) for b in parts}) == 1
        assert len({tuple(b.targets[0].object_ids.tolist()) for b in parts}) == 1
    scored = []
    referring = module.evaluator.kinds["refseg"]
    module.evaluator.kinds["refseg"] = lambda batch, *rest: (
        scored.append(batch.num_frames) or referring(batch, *rest)
    )
    try:
        for batch in batches:
            module.validation_step(batch, 0)
    finally:
        module.evaluator.kinds["refseg"] = referring
    assert scored == [7, 7]
    for batch in EvalBatchStream(source, image_size=SIZE, conversations=True):  # whole clips
        module.validation_step(replace(batch.to("cpu"), source="whole_clips"), 0)
    got, want = _scores(module, "synthetic_vid_refseg_val"), _scores(module, "whole_clips")
    assert _same(got, want) and math.isfinite(got["jf/J&F"]), (got, want)
