"""Strategy builders for the trainer presets (``conf/trainer/fsdp.yaml``, ``conf/trainer/deepspeed.yaml``).

Both presets shard the model over the processes. What a Hydra node cannot say directly is built here: the
FSDP wrap policy from class paths (YAML holds strings, FSDP wants classes), and DeepSpeed's gradient
clipping, which it does itself and reads from the Trainer's ``gradient_clip_val`` by default. Under manual
optimisation (``lightning/accumulation.py``) the Trainer refuses that option, so the preset hands the
module's ``model.accumulation.gradient_clip_val`` over. DeepSpeed is an optional extra: a missing package
is an ImportError that says what to install, raised when the strategy is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from x2sam_lightning.imports import require


def _classes(paths: Sequence[str]) -> set[type]:
    classes = set()
    for path in paths:
        module, _, name = str(path).rpartition(".")
        try:
            classes.add(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError) as error:
            raise ValueError(f"FSDP wrap class {path!r} cannot be imported: {error}") from error
    return classes


def fsdp_strategy(wrap_classes: Sequence[str] = (), **kwargs: Any) -> Any:
    """``FSDPStrategy`` that wraps every block of the given classes in its own shard unit.

    Args:
        wrap_classes: import paths of the block classes (e.g. the LLM's decoder layer).
        **kwargs: passed to ``lightning.pytorch.strategies.FSDPStrategy``.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    policy = _classes(wrap_classes) or None
    return FSDPStrategy(auto_wrap_policy=policy, **kwargs)


def deepspeed_strategy(stage: int = 3, gradient_clipping: float | None = None, **kwargs: Any) -> Any:
    """``DeepSpeedStrategy`` (ZeRO ``stage``) that clips at ``gradient_clipping`` (None or 0: never).

    Raises:
        ImportError: if DeepSpeed is not installed (``pip install 'x2sam-lightning[deepspeed]'``).
    """
    require("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = DeepSpeedStrategy(stage=stage, **kwargs)
    strategy.config["gradient_clipping"] = float(gradient_clipping or 0.0)
    return strategy


__all__ = ["deepspeed_strategy", "fsdp_strategy"]
