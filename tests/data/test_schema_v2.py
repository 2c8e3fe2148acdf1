"""Schema 2: an absent object (empty mask) is a real target, a frame not annotated (null) is ignored;
schema 1 still reads with its old meaning (null = not annotated, whatever it meant)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from x2sam_lightning.data.errors import SampleError
from x2sam_lightning.data.rle import encode_mask
from x2sam_lightning.data.schema import READABLE_SCHEMAS, SCHEMA_VERSION, validate_sample
from x2sam_lightning.data.shards import ClipSampler, decode_sample
from x2sam_lightning.data.transforms import ResizePadNormalize
from x2sam_lightning.models.criterion import SetCriterion, annotated_tracks
from x2sam_lightning.models.matcher import HungarianMatcher
from x2sam_lightning.types import TrackTargets

SIDE, FRAMES = 4, 3
#: Object 1's two foreground pixels on frame 0.
FOREGROUND = np.zeros((SIDE, SIDE), dtype=bool)
FOREGROUND[1, 1:3] = True
EMPTY = np.zeros((SIDE, SIDE), dtype=bool)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), (90, 90, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _raw(schema: int, tracks: list[list[np.ndarray | None]]) -> dict:
    sample = {
        "schema": schema,
        "task": "vid_genseg",
        "dataset": "v2test",
        "modality": "video",
        "height": SIDE,
        "width": SIDE,
        "num_frames": FRAMES,
        "categories": [{"id": 1, "name": "thing", "isthing": True}],
        "objects": [
            {"id": n + 1, "category_id": 1, "masks": [None if m is None else encode_mask(m) for m in track]}
            for n, track in enumerate(tracks)
        ],
    }
    raw = {"__key__": "v2test/0", "__url__": "memory", "json": json.dumps(sample).encode()}
    raw.update({f"{t:04d}.jpg": _jpeg() for t in range(FRAMES)})
    return raw


def _decode(schema: int, tracks: list[list[np.ndarray | None]]):
    clip = decode_sample(_raw(schema, tracks), ClipSampler(mode="all"))
    return ResizePadNormalize(SIDE)(clip).targets


def test_this_package_writes_2_and_reads_1_and_2():
    assert SCHEMA_VERSION == 2 and READABLE_SCHEMAS == (1, 2)


def test_v2_empty_is_annotated_absent_and_null_is_not_annotated():
    targets = _decode(2, [[FOREGROUND, EMPTY, None]])
    assert targets.valid.tolist() == [[True, True, False]]
    assert targets.annotated is targets.valid
    assert targets.present.tolist() == [[True, False, False]]
    assert torch.equal(targets.masks[0, 0], torch.from_numpy(FOREGROUND))
    assert not targets.masks[0, 1:].any()
    assert targets.annotated_frames().tolist() == [True, True, False]


def test_v1_null_reads_as_before_not_annotated():
    # Schema 1 cannot say "absent": its null is read as not annotated (valid False), as it always was.
    targets = _decode(1, [[FOREGROUND, None, None]])
    assert targets.valid.tolist() == [[True, False, False]]
    assert not targets.masks[0, 1:].any()


def test_an_object_that_never_shows_in_the_clip_is_dropped():
    # v2: absent (empty) or not annotated on every frame -> no target; v1: only all-null drops it.
    v2 = _decode(2, [[FOREGROUND, EMPTY, None], [EMPTY, EMPTY, None], [None, None, None]])
    assert v2.object_ids.tolist() == [1]
    v1 = _decode(1, [[FOREGROUND, None, None], [EMPTY, EMPTY, None], [None, None, None]])
    assert v1.object_ids.tolist() == [1, 2]  # schema 1's empty masks keep today's behaviour


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"size": [SIDE, SIDE + 1], "counts": str(SIDE * (SIDE + 1))}, "does not match the sample size"),
        ({"size": [SIDE, SIDE], "counts": [SIDE * SIDE - 1]}, "RLE runs sum to 15 pixels"),
        ({"size": [SIDE, SIDE]}, "not a COCO RLE dict"),
    ],
)
def test_a_malformed_empty_mask_names_the_key_object_and_frame(bad, words):
    sample = json.loads(_raw(2, [[FOREGROUND, EMPTY, None]])["json"])
    sample["objects"][0]["masks"][1] = bad
    with pytest.raises(SampleError, match=words) as error:
        validate_sample(sample, url="shard.tar", key="v2test/0")
    assert error.value.key == "v2test/0" and "object 0 (id 1) frame 1" in str(error.value)
    raw = _raw(2, [[FOREGROUND, EMPTY, None]])
    raw["json"] = json.dumps(sample).encode()
    with pytest.raises(SampleError, match="frame 1") as error:
        decode_sample(raw, ClipSampler(mode="all"))
    assert error.value.key == "v2test/0"


def _criterion() -> SetCriterion:
    # point_grid = the target size: the loss reads every target pixel exactly.
    matcher = HungarianMatcher(cost_class=1.0, point_grid=SIDE)
    return SetCriterion(1, matcher, losses=("masks",), point_grid=SIDE)


def _outputs(queries: int = 1, logit: float = 1.0) -> dict:
    return {
        "pred_logits": torch.zeros(1, queries, 2),
        "pred_masks": torch.full((1, queries, FRAMES, SIDE, SIDE), logit),
    }


def test_absent_frames_are_penalised_and_unannotated_frames_ignored_by_the_loss():
    """By hand: logit 1 everywhere (p = sigmoid(1)); object 1 has 2 foreground pixels on frame 0."""
    p, pos, neg = 1 / (1 + math.exp(-1)), math.log1p(math.exp(-1)), math.log1p(math.exp(1))
    fg = int(FOREGROUND.sum())
    px = SIDE * SIDE
    # v2, absent on frame 1 (an annotated empty frame), not annotated on frame 2: frames 0 and 1 count.
    losses = _criterion()(_outputs(), [_decode(2, [[FOREGROUND, EMPTY, None]])])
    bce = (fg * pos + (2 * px - fg) * neg) / (2 * px)
    dice = 1 - (2 * fg * p + 1) / (2 * px * p + fg + 1)
    assert losses["loss_mask"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice, rel=1e-5)
    # Not annotated on frames 1 and 2 (v2 null, or v1's null): only frame 0 counts.
    expected_bce = (fg * pos + (px - fg) * neg) / px
    expected_dice = 1 - (2 * fg * p + 1) / (px * p + fg + 1)
    for schema in (2, 1):
        losses = _criterion()(_outputs(), [_decode(schema, [[FOREGROUND, None, None]])])
        assert losses["loss_mask"].item() == pytest.approx(expected_bce, rel=1e-5)
        assert losses["loss_dice"].item() == pytest.approx(expected_dice, rel=1e-5)


def test_a_track_annotated_on_no_frame_contributes_nothing():
    one = _decode(2, [[FOREGROUND, EMPTY, None]])
    blind = TrackTargets(
        masks=torch.zeros(1, FRAMES, SIDE, SIDE, dtype=torch.bool),
        labels=torch.zeros(1, dtype=torch.long),
        valid=torch.zeros(1, FRAMES, dtype=torch.bool),
        object_ids=torch.tensor([9]),
        iscrowd=torch.zeros(1, dtype=torch.bool),
    )
    both = TrackTargets(
        masks=torch.cat([one.masks, blind.masks]),
        labels=torch.cat([one.labels, blind.labels]),
        valid=torch.cat([one.valid, blind.valid]),
        object_ids=torch.cat([one.object_ids, blind.object_ids]),
        iscrowd=torch.cat([one.iscrowd, blind.iscrowd]),
    )
    assert annotated_tracks(both).object_ids.tolist() == [1] and annotated_tracks(one) is one
    alone, with_blind = _criterion()(_outputs(2), [one]), _criterion()(_outputs(2), [both])
    for name in ("loss_mask", "loss_dice"):
        # Not matched and not counted in the normaliser (which would halve the loss).
        assert with_blind[name].item() == pytest.approx(alone[name].item(), rel=1e-6)
