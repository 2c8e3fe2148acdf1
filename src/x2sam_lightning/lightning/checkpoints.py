"""What a stage-1 checkpoint hands to stage 2: the pixel- and mask-decoder weights, by name.

A Lightning checkpoint of :class:`AgnosticSegmentor` stores the whole ``state_dict``; this module adds a
small versioned record (``checkpoint["x2sam_stage1"]``) naming the decoder parts and their shapes, and
reads them back without building the LightningModule, so stage 2 can initialise its decoder from any
stage-1 run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

STAGE1_FORMAT = "x2sam_stage1"
STAGE1_PARTS = ("pixel_decoder", "mask_decoder")
_PREFIX = "segmentor."


def stage1_metadata(module: nn.Module) -> dict[str, Any]:
    """The record saved beside the state dict: format version and each part's parameter shapes."""
    state = module.state_dict()
    return {
        "version": 1,
        "parts": {
            part: {
                name[len(_PREFIX + part) + 1 :]: list(tensor.shape)
                for name, tensor in state.items()
                if name.startswith(f"{_PREFIX}{part}.")
            }
            for part in STAGE1_PARTS
        },
    }


def load_stage1_decoder(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``{"pixel_decoder": state_dict, "mask_decoder": state_dict}`` from a stage-1 checkpoint.

    Raises:
        ValueError: the file is not a stage-1 checkpoint, or its weights miss a recorded parameter.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    record = checkpoint.get(STAGE1_FORMAT)
    if record is None:
        raise ValueError(f"{path}: not a stage-1 (AgnosticSegmentor) checkpoint: no '{STAGE1_FORMAT}' record")
    state = checkpoint["state_dict"]
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for part, shapes in record["parts"].items():
        prefix = f"{_PREFIX}{part}."
        parts[part] = {name[len(prefix) :]: t for name, t in state.items() if name.startswith(prefix)}
        missing = sorted(set(shapes) - set(parts[part]))
        if missing:
            raise ValueError(f"{path}: {part} weights missing from the state dict: {missing[:5]}")
    return parts
