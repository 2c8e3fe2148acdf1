"""Build model parts from the project's Hydra configs (one preset, one place: ``conf/model``)."""

from __future__ import annotations

from typing import Any

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
