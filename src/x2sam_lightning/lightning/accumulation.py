"""Gradient accumulation by modality, with nothing dropped, under Lightning manual optimisation.

The paper's joint strategy (PAPER_NOTES.md): image batches hold ``base x 4`` samples and step the optimiser
every batch; video batches hold ``base`` samples and accumulate over 4 batches. A *window* is the run of
consecutive batches of one modality that feed one optimiser step. It closes after ``steps[modality]``
batches, or earlier when the next batch has the other modality or the epoch ends. The authors' code
drops such a cut-short window; here it steps like any other.

Scaling: each batch's loss is divided by the number of batches its window actually holds (``n``), so every
optimiser step applies the *mean* of its batches' gradients, for a full window (``n = 4``), a cut one
(``n = 2``) and an image step (``n = 1``) alike. Gradient clipping and AdamW's moment estimates then see
gradients of one scale; dividing by the nominal length instead would shrink a cut window's step to
``n / 4`` of a full one, and make the clipping threshold mean something else in it.

Knowing ``n`` when a window opens needs the modalities of the coming batches: the datamodule gives them
(``SegDataModule.upcoming_train_modalities``; its source schedule has random access). It also lets the
accumulating batches skip the DDP gradient all-reduce (``no_sync``): only a window's last batch syncs, and
every rank draws the same source at every step, so all ranks close their windows together. With a
datamodule that cannot look ahead, a window is planned at its nominal length, every batch syncs, and a
window cut short by a modality switch is stepped (its gradient rescaled from ``1 / nominal`` to ``1 / n``)
before the next batch runs: the same update, without the communication saving.

Everything Lightning does for automatic optimisation is done here: clipping (``gradient_clip_val``; the
Trainer refuses its own under manual optimisation), ``optimizer.step`` / ``zero_grad``, and the
learning-rate scheduler, stepped once per optimiser step, so the schedule's ``total_steps``
(``trainer.max_steps``) counts optimiser steps, as does ``trainer.global_step``. The logged step is kept at
the optimiser step count too (as with Lightning's own accumulation).

A checkpoint holds the open window (its modality, length, batches done) and, in a single process, the
gradient accumulated so far, so a resumed run closes the window at the same batch with the same update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import lightning as L
from torch import Tensor

#: Checkpoint key of the open window's state.
ACCUMULATION_KEY = "modality_accumulation"

#: The paper's accumulation: an optimiser step per image batch, one per four video batches.
DEFAULT_STEPS = {"image": 1, "video": 4}


@runtime_checkable
class ModalityLookahead(Protocol):
    """What a datamodule offers to plan windows ahead (``SegDataModule`` implements it)."""

    def upcoming_train_modalities(self, count: int) -> list[str]:
        """Modalities of the ``count`` training batches after the one the step holds."""
        ...


@dataclass
class Window:
    """One accumulation window: ``length`` batches of ``modality`` planned, ``done`` of them run.

    ``exact``: ``length`` was planned with look-ahead (the window closes exactly there).
    """

    modality: str
    length: int
    done: int = 0
    exact: bool = True


class ModalityAccumulation:
    """Per-modality gradient accumulation, clipping and stepping for a manual-optimisation module.

    Args:
        steps: modality -> batches per optimiser step (``{"image": 1, "video": 4}``); a modality not
            listed steps every batch.
        gradient_clip_val: clip the gradient to this (None or 0: no clipping).
        gradient_clip_algorithm: ``"norm"`` (global 2-norm) or ``"value"``.

    The module sets ``automatic_optimization = False`` and, in ``training_step``, calls
    ``self.accumulation.train_step(self, batch, batch_idx, loss_fn)``; its ``on_train_batch_start`` /
    ``on_train_batch_end`` call :meth:`on_train_batch_start` / :meth:`on_train_batch_end`, and its
    checkpoint hooks :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(
        self,
        steps: Mapping[str, int] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        self.steps = {str(k): int(v) for k, v in (DEFAULT_STEPS if steps is None else steps).items()}
        bad = {k: v for k, v in self.steps.items() if v < 1}
        if bad:
            raise ValueError(f"accumulation steps must be >= 1 per modality, got {bad}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(
                f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}"
            )
        self.gradient_clip_val = float(gradient_clip_val) if gradient_clip_val else None
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.window: Window | None = None
        self._steps_at_batch_start = 0
        self._restored_grads: dict[str, Tensor] | None = None

    def steps_for(self, modality: str) -> int:
        return self.steps.get(modality, 1)

    # -- the training step -----------------------------------------------------------------------------

    def train_step(
        self, module: L.LightningModule, batch: Any, batch_idx: int, loss_fn: Callable[[], Tensor]
    ) -> Tensor:
        """Forward (``loss_fn``) and backward one batch; step the optimiser when its window closes.

        Returns the batch's unscaled loss (for logging).
        """
        optimizer = module.optimizers()
        modality = batch.modality
        if self.window is not None and self.window.modality != modality:
            # Only without look-ahead: the window was cut short by this batch. Its batches all synced.
            self._optimizer_step(module, optimizer)
        if self.window is None:
            self.window = self._plan(module, modality, batch_idx)
        window = self.window
        last = window.done + 1 == window.length
        # Without look-ahead any batch may turn out to be a window's last: every one syncs.
        sync = last or not window.exact
        with self._sync_context(module, optimizer, sync):
            loss = loss_fn()
            module.manual_backward(loss / window.length if window.length > 1 else loss)
        self._add_restored_grads(module)
        window.done += 1
        if last:
            self._optimizer_step(module, optimizer)
        return loss

    def _plan(self, module: L.LightningModule, modality: str, batch_idx: int) -> Window:
        """The window opening at this batch: its nominal length, cut at the next modality switch (with
        look-ahead) and at the end of a finite epoch."""
        length = self.steps_for(modality)
        remaining = module.trainer.num_training_batches
        if math.isfinite(remaining):
            length = min(length, int(remaining) - batch_idx)
        datamodule = getattr(module.trainer, "datamodule", None)
        if length == 1:
            return Window(modality, 1)
        if not isinstance(datamodule, ModalityLookahead):
            return Window(modality, length, exact=False)
        upcoming = datamodule.upcoming_train_modalities(length - 1)
        run = next((i for i, m in enumerate(upcoming) if m != modality), len(upcoming))
        return Window(modality, 1 + run)

    def _sync_context(self, module: L.LightningModule, optimizer: Any, sync: bool) -> Any:
        """Skip the gradient all-reduce of an accumulating batch (DDP / FSDP ``no_sync``); DeepSpeed is
        told where the accumulation boundary is instead (its ZeRO stages 2-3 refuse ``no_sync``)."""
        strategy = module.trainer.strategy
        engine = getattr(strategy, "model", None)
        if type(strategy).__name__ == "DeepSpeedStrategy" and hasattr(
            engine, "set_gradient_accumulation_boundary"
        ):
            engine.set_gradient_accumulation_boundary(sync)
            return nullcontext()
        if sync or module.trainer.world_size == 1:
            return nullcontext()
        return optimizer.toggle_model(sync_grad=False)

    def _optimizer_step(self, module: L.LightningModule, optimizer: Any) -> None:
        window = self.window
        assert window is not None and window.done > 0
        self._add_restored_grads(module)
        if window.done != window.length:  # cut short without look-ahead: from 1 / length to 1 / done
            factor = window.length / window.done
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.mul_(factor)
        if self.gradient_clip_val:
            module.clip_gradients(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )
        optimizer.step()
        optimizer.zero_grad()
        schedulers = module.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()
        self.window = None

    # -- logged step = optimiser steps -----------------------------------------------------------------

    def on_train_batch_start(self, module: L.LightningModule) -> None:
        """Lightning counts every batch as a step under manual optimisation; count optimiser steps."""
        self._steps_at_batch_start = module.trainer.global_step
        self._set_logged_step(module, self._steps_at_batch_start)

    def on_train_batch_end(self, module: L.LightningModule) -> None:
        """The batch's metrics are logged at the optimiser steps taken before it (as Lightning's
        automatic accumulation does); Lightning adds one after this and the next batch start resets it."""
        self._set_logged_step(module, self._steps_at_batch_start)

    @staticmethod
    def _set_logged_step(module: L.LightningModule, steps: int) -> None:
        # The loop's `_batches_that_stepped` is the step loggers and `log_every_n_steps` use; under manual
        # optimisation Lightning increments it every batch whether or not the optimiser stepped.
        loop = module.trainer.fit_loop.epoch_loop
        if hasattr(loop, "_batches_that_stepped"):
            loop._batches_that_stepped = steps

    # -- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self, module: L.LightningModule) -> dict[str, Any]:
        """The open window, and its gradient so far when one process holds all of it."""
        if self.window is None:
            return {"window": None}
        state: dict[str, Any] = {"window": asdict(self.window)}
        if module.trainer.world_size == 1:
            state["grads"] = {
                name: p.grad.detach().cpu().clone()
                for name, p in module.named_parameters()
                if p.grad is not None
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        window = state.get("window")
        self.window = None if window is None else Window(**window)
        self._restored_grads = dict(state["grads"]) if window is not None and "grads" in state else None

    def _add_restored_grads(self, module: L.LightningModule) -> None:
        """Add the gradient the window had at the checkpoint (after the first resumed backward, so
        every parameter has a gradient buffer on the right device)."""
        if self._restored_grads is None:
            return
        restored, self._restored_grads = self._restored_grads, None
        for name, param in module.named_parameters():
            if name in restored:
                grad = restored[name].to(param.device, param.dtype)
                param.grad = grad if param.grad is None else param.grad.add_(grad)


class AccumulatedTraining:
    """The training hooks of a LightningModule whose ``accumulation`` (a :class:`ModalityAccumulation`)
    drives its optimisation (``automatic_optimization = False``); the module gives ``training_loss(batch)``
    (the batch's loss, logged)."""

    accumulation: ModalityAccumulation

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.accumulation.train_step(self, batch, batch_idx, lambda: self.training_loss(batch))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.accumulation.on_train_batch_start(self)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.accumulation.on_train_batch_end(self)


def check_trainer_config(trainer: Mapping[str, Any]) -> None:
    """A clear error for the Trainer options that manual optimisation replaces (Lightning's own error
    names the Trainer argument, not this project's config key).

    Raises:
        ValueError: if ``trainer.gradient_clip_val`` or ``trainer.accumulate_grad_batches`` is set.
    """
    clip = trainer.get("gradient_clip_val")
    if clip:
        raise ValueError(
            f"trainer.gradient_clip_val={clip}: the module clips (manual optimisation); set "
            "model.accumulation.gradient_clip_val instead and leave trainer.gradient_clip_val null"
        )
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate not in (None, 1):
        raise ValueError(
            f"trainer.accumulate_grad_batches={accumulate}: the module accumulates per modality (manual "
            "optimisation); set model.accumulation.steps (e.g. {image: 2, video: 4}) instead"
        )


__all__ = [
    "ACCUMULATION_KEY",
    "DEFAULT_STEPS",
    "ModalityAccumulation",
    "ModalityLookahead",
    "Window",
    "check_trainer_config",
]
