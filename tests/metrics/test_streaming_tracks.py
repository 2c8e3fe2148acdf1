"""Track AP from sums over chunks equals track AP from the whole video's masks."""

from __future__ import annotations

import torch

from x2sam_lightning.metrics.functional.video_ap import STATE_NAMES, _ap_update
from x2sam_lightning.metrics.streaming_tracks import TrackOverlaps
from x2sam_lightning.metrics.youtube_vis_ap import YouTubeVISAveragePrecision
from x2sam_lightning.models.postprocess import instance_postprocess


def _video(seed: int, frames: int = 9, queries: int = 5, objects: int = 3, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, queries, 2, generator=g) * 2
    masks = torch.randn(queries, frames, size, size, generator=g) * 3
    gt = torch.rand(objects, frames, size, size, generator=g) > 0.6
    gt[0, : frames // 2] = False  # an object that enters half way
    return logits, masks, gt


def test_chunked_sums_give_the_whole_videos_statistics_and_ap():
    whole, streamed = YouTubeVISAveragePrecision(), YouTubeVISAveragePrecision()
    for seed in range(4):
        logits, masks, gt = _video(seed)
        ids, labels, crowd = (
            torch.tensor([5, 9, 2]),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.bool),
        )
        # Whole video: the image postprocess on the mean logits, then the metric's own reduction.
        (det,) = instance_postprocess(
            logits.mean(0)[None],
            masks[None],
            torch.tensor([[12, 12]]),
            torch.tensor([[12, 12]]),
            (12, 12),
            top_k=4,
        )
        reference = _ap_update(det["masks"], det["scores"], det["labels"], gt, labels, crowd, video_key=seed)
        whole.update(det["masks"], det["scores"], det["labels"], gt, labels, crowd, video_id=seed)
        # Streamed in chunks of 4 frames, objects present in a chunk only.
        overlaps = TrackOverlaps(5, top_k=4)
        for start in range(0, 9, 4):
            part = slice(start, start + 4)
            present = gt[:, part].flatten(1).any(1)
            overlaps.add(
                logits[part], masks[:, part], gt[present, part], ids[present], labels[present], crowd[present]
            )
        stats = overlaps.statistics(seed)
        # Ground truths in order of first appearance: object 0 enters last here.
        order = [overlaps.gt_ids.index(i) for i in ids.tolist()]
        for name, got, want in zip(STATE_NAMES, stats, reference):
            if name in ("gt_areas", "gt_labels", "gt_crowd"):
                got = got[order]
            if name == "ious":
                got = got.reshape(4, 3)[:, order].reshape(-1)
            torch.testing.assert_close(got, want, msg=name)
        streamed.update_statistics(stats)
    a, b = whole.compute(), streamed.compute()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert streamed.update_count == 4
