"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` with one clear error per problem.

Every checkpoint the package loads goes through :func:`read_checkpoint`: a missing, empty, truncated or
corrupt file (CRC check of the zip members first), a pickle of Python objects, a bare state dict or a
non-Lightning file becomes a :class:`CheckpointError` naming the path and the problem;
:func:`check_checkpoint` also compares the parameters with a built model (another config names the keys
and shapes that differ). The CLI calls these before anything is trained or evaluated.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A ``ckpt_path`` that cannot be used with the configured model: ``path`` and ``problem``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"checkpoint {self.path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


#: Keys every Lightning checkpoint holds (``pytorch-lightning_version`` since Lightning 1.0).
_LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
_LISTED = 5


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def read_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with each failure turned into a CheckpointError."""
    import pickle
    import zipfile

    import torch

    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":  # torch's zip format (every torch.save since 1.6)
        try:
            with zipfile.ZipFile(path) as archive:
                if (bad := archive.testzip()) is not None:  # CRC of every member: flipped bytes
                    raise CheckpointError(path, f"is corrupt: member {bad!r} fails its CRC check")
        except zipfile.BadZipFile as error:
            raise CheckpointError(
                path, f"is truncated or corrupt (not a complete zip archive: {error})"
            ) from None
        except (OSError, EOFError, zipfile.LargeZipFile) as error:
            raise CheckpointError(
                path, f"is truncated or corrupt ({type(error).__name__}: {error})"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=magic == b"PK\x03\x04")
    except pickle.UnpicklingError as error:
        detail = _unpickler_detail(str(error))
        if detail.startswith("Unsupported global"):
            raise CheckpointError(
                path,
                f"holds Python objects that torch.load(weights_only=True) refuses ({detail}): "
                "not a plain Lightning checkpoint",
            ) from None
        problem = "is corrupt" if magic == b"PK\x03\x04" else "is not a torch checkpoint"
        raise CheckpointError(path, f"{problem} (unreadable pickle: {detail})") from None
    except Exception as error:  # torch raises RuntimeError, OSError, EOFError ... for damaged files
        problem = "is not a torch checkpoint" if magic != b"PK\x03\x04" else "is truncated or corrupt"
        raise CheckpointError(path, f"{problem} ({type(error).__name__}: {_last_line(str(error))})") from None


def _unpickler_detail(text: str) -> str:
    """The reason inside torch's long "Weights only load failed" message (or its last line)."""
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    return " ".join(found.group(1).split())[:200] if found else _last_line(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no detail")[:200]


def checkpoint_shapes(path: str | os.PathLike, verb: str = "validate") -> dict[str, list[int]] | None:
    """Check that ``path`` is a Lightning checkpoint; return its parameter shapes (None: a sharded folder).

    Loads with ``torch.load(weights_only=True)`` (memory-mapped, after a CRC check of the zip members).
    ``fit`` also needs the optimizer state. Needs no model, so it runs before anything is built.

    Raises:
        CheckpointError: missing, empty, truncated, corrupt, or not a (Lightning) checkpoint.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "does not exist")
    if path.is_dir():
        if not any(path.iterdir()):
            raise CheckpointError(path, "is an empty directory")
        return None  # a sharded checkpoint (DeepSpeed, FSDP): its strategy checks it
    if path.stat().st_size == 0:
        raise CheckpointError(path, "is an empty file")
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(
            path, "is a bare state dict, not a Lightning checkpoint (no 'state_dict' entry)"
        )
    if missing := [k for k in _LIGHTNING_KEYS if k not in checkpoint]:
        keys = _listed(sorted(map(str, checkpoint)))
        raise CheckpointError(
            path, f"is not a Lightning checkpoint: no {' or '.join(map(repr, missing))} (keys: {keys})"
        )
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            path, "is not a Lightning checkpoint: its 'state_dict' is not a dict of tensors"
        )
    if verb == "fit" and "optimizer_states" not in checkpoint:
        raise CheckpointError(
            path, "holds only the model weights (save_weights_only=True): it cannot resume fit"
        )
    return {name: list(tensor.shape) for name, tensor in state.items()}


def check_checkpoint(path: str | os.PathLike, module: Any, verb: str = "validate") -> None:
    """:func:`checkpoint_shapes`, then the checkpoint's ``state_dict`` keys and shapes against
    ``module.state_dict()`` (missing keys: those of ``module.checkpoint_keys()`` when it has one, else all
    when ``module.strict_loading``; skipped for modules whose layers ``configure_model`` has yet to build).

    Raises:
        CheckpointError: as :func:`checkpoint_shapes`, or a checkpoint of another configuration (naming
            the keys or shapes that differ).
    """
    shapes = checkpoint_shapes(path, verb)
    if shapes is not None:
        compare_state(Path(path), shapes, module)


def compare_state(path: Path, state: dict[str, list[int]], module: Any) -> None:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    # Layers built in configure_model exist only inside the Trainer's strategy (lightning/deferred.py:
    # the CLI checks those modules once built, through after_build).
    built = getattr(module, "parts_built", None)
    if module is None or built is False or (built is None and is_overridden("configure_model", module)):
        return
    expected = module.state_dict()
    problems = []
    # A module that saves only part of its weights (stage 2: not the frozen base) names what it needs;
    # one that loads non-strictly otherwise is checked for shapes only.
    if hasattr(module, "checkpoint_keys"):
        required: set[str] | None = module.checkpoint_keys()
    else:
        required = set(expected) if getattr(module, "strict_loading", True) else None
    if required is not None:
        if absent := sorted(required - set(state)):
            problems.append(f"{len(absent)} model keys missing from the checkpoint ({_listed(absent)})")
        if extra := sorted(set(state) - set(expected)):
            problems.append(f"{len(extra)} checkpoint keys not in the model ({_listed(extra)})")
    reshaped = [
        f"{name}: checkpoint {state[name]}, model {list(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name] != list(tensor.shape)
    ]
    if reshaped:
        problems.append(f"{len(reshaped)} shapes differ ({_listed(reshaped)})")
    if problems:
        raise CheckpointError(
            path, "does not fit the configured model (another config?): " + "; ".join(problems)
        )
