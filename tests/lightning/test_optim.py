import math

import pytest
import torch
from torch import nn

from x2sam_lightning.lightning.optim import WarmupCosine, param_groups, warmup_cosine_lambda


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.decoder = nn.Linear(4, 2)
        self.queries = nn.Embedding(3, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_split_lr_and_decay():
    net = _Net()
    groups = {
        g["name"]: g for g in param_groups(net, lr=1e-4, weight_decay=0.05, lr_overrides={"encoder": 1e-5})
    }
    assert set(groups) == {"encoder", "encoder/no_decay", "base", "base/no_decay"}
    assert groups["encoder"]["lr"] == 1e-5 and groups["encoder"]["weight_decay"] == 0.05
    assert groups["encoder/no_decay"]["weight_decay"] == 0.0  # linear bias + LayerNorm
    assert len(groups["encoder/no_decay"]["params"]) == 3
    assert groups["base"]["params"] == [net.decoder.weight]
    # decoder bias + query embedding, never the frozen layer
    assert {id(p) for p in groups["base/no_decay"]["params"]} == {
        id(net.decoder.bias),
        id(net.queries.weight),
    }


def test_param_groups_reject_fully_frozen_model():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(net, lr=1e-3, weight_decay=0.0)


def test_warmup_cosine_values():
    factor = warmup_cosine_lambda(total_steps=100, warmup_ratio=0.03, min_lr_ratio=0.0)
    assert factor(0) == pytest.approx(1 / 3)
    assert factor(2) == pytest.approx(1.0)
    assert factor(3) == pytest.approx(1.0)
    # halfway through the cosine part
    mid = 3 + (100 - 3) / 2
    assert factor(int(mid)) == pytest.approx(0.5 * (1 + math.cos(math.pi * (int(mid) - 3) / 97)))
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lambda(10, 0.0, 0.1)(10) == pytest.approx(0.1)


def test_warmup_cosine_drives_optimizer_lr():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = WarmupCosine(optimizer, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)
    with pytest.raises(ValueError, match="max_steps"):
        WarmupCosine(optimizer, total_steps=0)
