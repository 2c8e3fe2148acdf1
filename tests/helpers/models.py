"""Build model parts from the project's Hydra configs (one preset, one place: ``conf/model``)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate

from x2sam_lightning.config import compose_config


def tiny_segmentor(image_size: int = 128, memory: str | None = None, **parts: Any) -> Any:
    """The stage-1 CPU preset's segmentor at ``image_size``; ``memory`` picks a ``conf/model/mask_memory``
    option (default: the preset's, none); ``parts`` override config values by dotted path under
    ``model.segmentor`` (e.g. ``{"mask_decoder.num_queries": 4}``)."""
    overrides = [f"data.image_size={image_size}"]
    if memory is not None:
        overrides.append(f"model/mask_memory={memory}")
    overrides += [f"model.segmentor.{key}={value}" for key, value in parts.items()]
    return instantiate(compose_config("agnostic", overrides).model.segmentor)


@torch.no_grad()
def memory_off_zero(memory: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Move a mask memory's zero-initialised weights off zero (as training does): a fresh memory is the
    identity, which would make any "the bank matters" or "chunked == whole" check trivially true."""
    for p in memory.parameters():
        if not p.any():
            p.normal_(0, std)
    return memory


def random_language(instances: int, generator: torch.Generator, dim: int = 64) -> dict[str, torch.Tensor]:
    """Stage-2 decode inputs of ``instances`` decoding instances (5 condition tokens, 2 conditions each,
    nothing padded), as ``Segmentor.decode`` takes them, drawn from ``generator``."""
    return {
        "prompt": torch.randn(instances, dim, generator=generator),
        "condition_tokens": torch.randn(instances, 5, dim, generator=generator),
        "condition_token_padding": torch.zeros(instances, 5, dtype=torch.bool),
        "conditions": torch.randn(instances, 2, dim, generator=generator),
        "condition_padding_mask": torch.zeros(instances, 2, dtype=torch.bool),
    }
