"""Checkpoint records and the stage-1 -> stage-2 hand-off.

A Lightning checkpoint of :class:`AgnosticSegmentor` stores the whole ``state_dict``; this module adds a
small versioned record (``checkpoint["x2sam_stage1"]``) naming the segmentor parts and their shapes, reads
them back without building the LightningModule, and loads them into a stage-2 segmentor with an explicit
list of what may differ: stage 2's decoder adds the language inputs (token-to-image attention, condition
projection, cosine class scorer, optionally the spatial prior) and drops stage 1's linear object /
no-object head. The mask memory (video) is a stage-1 part when stage 1 trained one; a stage-2 memory whose
stage 1 had none starts from its own initialisation and is reported, every tensor named. Anything else
missing, unexpected or of another shape is an error naming the parameter. Every load is
``weights_only=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from x2sam_lightning.lightning.checkpoint_files import CheckpointError, read_checkpoint

STAGE1_FORMAT = "x2sam_stage1"
STAGE1_PARTS = ("mask_encoder", "pixel_decoder", "mask_decoder", "mask_memory")
#: Parts a segmentor may lack (``model/mask_memory=none``) and a stage-1 checkpoint may not hold.
OPTIONAL_PARTS = ("mask_memory",)
_PREFIX = "segmentor."

#: Stage-2 mask-decoder parameters a stage-1 checkpoint does not have.
STAGE2_ONLY = (
    r"layers\.\d+\.condition_attn\..*",
    r"class_scorer\..*",
    r"condition_proj\..*",
    r"spatial_prior\..*",  # zero-initialised: a stage-1 decoder without it loads unchanged
)
#: Stage-1 mask-decoder parameters stage 2 does not use (the linear object / no-object head).
STAGE1_ONLY = (r"class_embed\..*",)


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True`` (see :mod:`checkpoint_files`).

    Raises:
        CheckpointError: missing, unreadable, or not a Lightning checkpoint (naming the path).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "does not exist")
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise CheckpointError(path, "is not a Lightning checkpoint (no 'state_dict')")
    return dict(checkpoint)


def load_stage1_parts(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``{part: state_dict}`` for the segmentor parts of a stage-1 checkpoint.

    Raises:
        ValueError: the file is not a stage-1 checkpoint, or its weights miss a recorded parameter.
    """
    checkpoint = load_checkpoint(path)
    record = checkpoint.get(STAGE1_FORMAT)
    if record is None:
        raise ValueError(f"{path}: not a stage-1 (AgnosticSegmentor) checkpoint: no '{STAGE1_FORMAT}' record")
    state = checkpoint["state_dict"]
    parts: dict[str, dict[str, torch.Tensor]] = {}
    # Parts come from the weights (records written before the mask encoder was handed over list only
    # the decoders); the record's shapes say what must be there.
    for part in dict.fromkeys([*STAGE1_PARTS, *record["parts"]]):
        prefix = f"{_PREFIX}{part}."
        weights = {name[len(prefix) :]: t for name, t in state.items() if name.startswith(prefix)}
        missing = sorted(set(record["parts"].get(part, {})) - set(weights))
        if missing:
            raise ValueError(f"{path}: {part} weights missing from the state dict: {missing[:5]}")
        if weights:
            parts[part] = weights
    return parts


@dataclass
class HandoffReport:
    """What :func:`load_stage1_into` did: per part, the keys loaded and the allowed differences."""

    loaded: dict[str, int] = field(default_factory=dict)
    stage2_only: list[str] = field(default_factory=list)  # tensors new in stage 2 (kept as initialised)
    stage1_only: list[str] = field(default_factory=list)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def load_stage1_into(
    segmentor: nn.Module, path: str | Path, parts: Sequence[str] = STAGE1_PARTS
) -> HandoffReport:
    """Initialise a stage-2 segmentor's ``parts`` from a stage-1 checkpoint.

    An optional part (the mask memory) is skipped when neither side has it; when only the segmentor has
    it, its tensors are reported in ``stage2_only`` (new, kept at their initialisation).

    Raises:
        ValueError: naming every parameter that is missing, unexpected or of another shape beyond the
            allowed stage-1 / stage-2 differences (e.g. a checkpoint of another preset), or a part the
            checkpoint holds and the segmentor lacks (e.g. a stage-1 memory, stage 2 built without one).
    """
    weights = load_stage1_parts(path)
    report = HandoffReport()
    problems: list[str] = []
    for part in parts:
        module: nn.Module | None = getattr(segmentor, part, None)
        if part in OPTIONAL_PARTS and part not in weights:
            if module is not None:
                report.stage2_only += [f"{part}.{k}" for k in module.state_dict()]
            continue
        if part not in weights:
            raise ValueError(f"{path}: no '{part}' in the stage-1 record (parts: {sorted(weights)})")
        if module is None:
            raise ValueError(
                f"{path}: the stage-1 checkpoint holds a trained {part} and this segmentor has none "
                f"(build it with model/{part}=..., or leave {part} out of model.stage1_parts)"
            )
        own = module.state_dict()
        given = weights[part]
        missing = sorted(set(own) - set(given))
        unexpected = sorted(set(given) - set(own))
        allowed_missing = [k for k in missing if part == "mask_decoder" and _matches(k, STAGE2_ONLY)]
        allowed_unexpected = [k for k in unexpected if part == "mask_decoder" and _matches(k, STAGE1_ONLY)]
        problems += [f"{part}.{k} missing from the checkpoint" for k in missing if k not in allowed_missing]
        problems += [
            f"{part}.{k} unexpected in the checkpoint" for k in unexpected if k not in allowed_unexpected
        ]
        problems += [
            f"{part}.{k}: checkpoint shape {list(given[k].shape)} != model shape {list(own[k].shape)}"
            for k in sorted(set(own) & set(given))
            if given[k].shape != own[k].shape
        ]
        if problems:
            continue
        state = {k: v for k, v in given.items() if k in own}
        module.load_state_dict({**own, **state})
        report.loaded[part] = len(state)
        report.stage2_only += [f"{part}.{k}" for k in allowed_missing]
        report.stage1_only += [f"{part}.{k}" for k in allowed_unexpected]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} in all)" if len(problems) > 8 else "")
        raise ValueError(f"stage-1 checkpoint {path} does not fit this model: {shown}")
    return report
