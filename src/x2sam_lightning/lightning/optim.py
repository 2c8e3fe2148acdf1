"""Optimiser parameter groups and the warm-up + cosine schedule shared by both stages."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# Norms, biases and embeddings are not decayed (the usual AdamW practice, as in Mask2Former/SAM2).
_NO_DECAY_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)


def _no_decay_names(module: nn.Module) -> set[str]:
    names: set[str] = set()
    for module_name, child in module.named_modules():
        for param_name, param in child.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            # Scalars and vectors (biases, norm gains, a logit scale) are not decayed either: decay would
            # pull a learned temperature towards 1.
            if (
                isinstance(child, _NO_DECAY_TYPES)
                or param_name == "bias"
                or param_name.endswith("embed")
                or param.ndim < 2
            ):
                names.add(full)
    return names


def param_groups(
    module: nn.Module, lr: float, weight_decay: float, lr_overrides: Mapping[str, float] | None = None
) -> list[dict]:
    """Trainable parameters grouped by learning rate and weight decay.

    Args:
        module: the model; frozen parameters (``requires_grad=False``) are left out.
        lr: base learning rate.
        weight_decay: applied to weights of linear/conv layers, not to norms, biases or embeddings.
        lr_overrides: ``{name prefix: lr}``, e.g. ``{"segmentor.mask_encoder": 1e-5}`` (stage 2's
            mask-encoder rate). The longest matching prefix wins.

    Returns:
        Groups for ``torch.optim`` with a ``name`` key each (shown by LearningRateMonitor).
    """
    overrides = sorted((lr_overrides or {}).items(), key=lambda item: -len(item[0]))
    no_decay = _no_decay_names(module)
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        prefix, group_lr = next(((p, v) for p, v in overrides if name.startswith(p)), ("", lr))
        decay = name not in no_decay
        key = (prefix, decay)
        if key not in groups:
            label = (prefix or "base") + ("" if decay else "/no_decay")
            groups[key] = {
                "name": label,
                "params": [],
                "lr": group_lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def warmup_cosine_lambda(
    total_steps: int, warmup_ratio: float, min_lr_ratio: float
) -> Callable[[int], float]:
    """Multiplier of the base lr: linear warm-up over ``warmup_ratio * total_steps``, then cosine to
    ``min_lr_ratio`` at ``total_steps`` (the paper: warm-up 3% then cosine)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps} (set trainer.max_steps)")
    warmup = max(1, round(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class WarmupCosine(LambdaLR):
    """Linear warm-up then cosine decay, stepped every optimiser step.

    Built by Hydra as a partial (``_partial_: true``); the LightningModule supplies ``optimizer`` and
    ``total_steps`` (the Trainer's ``estimated_stepping_batches``).
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.03, min_lr_ratio: float = 0.0
    ) -> None:
        super().__init__(optimizer, warmup_cosine_lambda(total_steps, warmup_ratio, min_lr_ratio))
