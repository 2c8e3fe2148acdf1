"""A window of two batches under DDP whose last one leaves a part unused (run in spawned processes: this
module imports only torch, so each process starts fast)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TwoParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared, self.seg = nn.Linear(2, 1), nn.Linear(2, 1)

    def forward(self, x: Tensor, segment: bool) -> Tensor:
        out = self.shared(x).sum()
        return out + self.seg(x).sum() if segment else out


def window_ending_in_a_chat_batch(rank: int, world_size: int) -> list[list[float]]:
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(TwoParts(), find_unused_parameters=True)
    with model.no_sync():  # an accumulating segmentation batch: the part is used, nothing synced
        model(torch.full((1, 2), float(rank + 1)), True).backward()
    model(torch.ones(1, 2), False).backward()  # the window's last batch is chat-only: the part is unused
    return [
        model.module.seg.weight.grad.flatten().tolist(),
        model.module.shared.weight.grad.flatten().tolist(),
    ]
