"""Big parts built in ``configure_model``, so that a sharding strategy can build them its way.

Lightning calls ``LightningModule.configure_model`` inside the strategy's init contexts (the device, the
precision's dtype, FSDP's wrap context, DeepSpeed ZeRO-3's partitioned init). Modules built before the
Trainer exist whole in every process first, on the CPU in fp32; modules built there do not. So the two
LightningModules take their large parts (the segmentor; stage 2 also the vision-language backbone) either
built, as tests and scripts pass them, or as *builders*: zero-argument callables (a :class:`Deferred`
config node) called in ``configure_model``. The CLI hands builders over (:func:`instantiate_deferred`);
``hydra.utils.instantiate(cfg.model)`` still builds everything at once.

``configure_model`` is idempotent: Lightning calls it at every ``fit`` / ``validate`` / ``test`` /
``predict``, and a module is built once. Work that needs the built parts and must happen before any
Trainer call in a script (a checkpoint's shapes checked against the model) registers with
:meth:`DeferredParts.after_build`. Files a part makes on first use (the tiny Qwen3-VL folder) are made by
:func:`instantiate_deferred` at once, in the launching process (a class's static ``prepare_files``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

#: What a deferred part may be given as: the built module or a zero-argument builder.
Part = nn.Module | Callable[[], nn.Module]


class Deferred:
    """A Hydra config node (resolved to plain containers) instantiated when called.

    Args:
        node: the part's config, ``_target_`` and arguments, nested parts included.
    """

    def __init__(self, node: Mapping[str, Any]) -> None:
        self.node = dict(node)

    def __call__(self) -> nn.Module:
        from hydra.utils import instantiate

        return instantiate(self.node)

    def __repr__(self) -> str:
        return f"Deferred({self.node.get('_target_', '?')})"


def instantiate_deferred(model_cfg: Any) -> Any:
    """``hydra.utils.instantiate(model_cfg)`` with the target class's ``deferred_parts`` left as
    :class:`Deferred` builders (built by the module's ``configure_model``).

    Interpolations are resolved first, so a part's node that refers to another one (``${model...}``) keeps
    its value once the part is taken out of the tree.
    """
    from hydra.utils import get_class, instantiate
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    node = dict(node)
    names = getattr(get_class(node["_target_"]), "deferred_parts", ())
    parts = {name: Deferred(node.pop(name)) for name in names if node.get(name) is not None}
    for part in parts.values():
        _prepare_files(part.node)
    return instantiate(node, **parts)


def _prepare_files(node: Mapping[str, Any]) -> None:
    """Files a part (or a part of it) makes on first use are made now, in this process: a strategy that
    launches more processes (DDP's relaunch of the command line) would otherwise have them all write the
    same folder at once in ``configure_model``. A class opts in with a static ``prepare_files(**node)``."""
    from hydra.utils import get_object

    if "_target_" in node:
        prepare = getattr(get_object(node["_target_"]), "prepare_files", None)
        if callable(prepare):
            prepare(**{k: v for k, v in node.items() if not k.startswith("_")})
    for value in node.values():
        if isinstance(value, Mapping):
            _prepare_files(value)


class DeferredParts:
    """Mixin of a LightningModule whose large parts may arrive as builders.

    The class names its parts in ``deferred_parts`` and assembles itself from the built ones in
    :meth:`assemble` (called at once when every part is given built, else by ``configure_model``).
    """

    deferred_parts: tuple[str, ...] = ()

    def _take_parts(self, **parts: Part) -> None:
        """Keep the given parts; assemble now when all of them are built modules."""
        self._pending: dict[str, Part] | None = dict(parts)
        self._after_build: list[Callable[[Any], None]] = []
        if all(isinstance(part, nn.Module) for part in parts.values()):
            self._build()

    @property
    def parts_built(self) -> bool:
        """Whether the deferred parts exist (before ``configure_model`` a module built by
        :func:`instantiate_deferred` has none of their parameters)."""
        return self._pending is None

    def assemble(self, **parts: nn.Module) -> None:
        """Attach the built parts (and whatever is made from them). Called once."""
        raise NotImplementedError

    def after_build(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` once the parts are built: now if they are, else at the end of the build."""
        if self.parts_built:
            fn(self)
        else:
            self._after_build.append(fn)

    def _build(self) -> None:
        pending = self._pending or {}
        self.assemble(
            **{name: part if isinstance(part, nn.Module) else part() for name, part in pending.items()}
        )
        self._pending = None  # only now: a builder that raised leaves the module unbuilt, not half-built
        callbacks, self._after_build = self._after_build, []
        for fn in callbacks:
            fn(self)

    def configure_model(self) -> None:
        """Build the deferred parts under the strategy's init context; later calls do nothing."""
        if not self.parts_built:
            self._build()
