"""A callback that writes each rank's trainable parameters (a sum and a norm per tensor) at the end of a fit,
so a test can check that DDP kept the ranks' weights identical (gradients synchronised at every step)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class ParameterDigest(L.Callback):
    """Writes ``{name: [sum, norm]}`` of every trainable parameter to ``<path>.rank<R>.json`` on train end."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        digest = {
            name: [float(p.detach().double().sum()), float(p.detach().double().norm())]
            for name, p in pl_module.named_parameters()
            if p.requires_grad
        }
        Path(f"{self.path}.rank{trainer.global_rank}.json").write_text(json.dumps(digest))


def read_digest(path: str | Path, rank: int) -> dict[str, list[float]]:
    return json.loads(Path(f"{path}.rank{rank}.json").read_text())
