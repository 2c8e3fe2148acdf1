"""The progress bar: Lightning's, without the bogus epoch total of a run bounded by steps.

A run bounded by ``trainer.max_steps`` has ``max_epochs = -1``, and Lightning's Rich bar then titles every
epoch "Epoch 0/-2". The epoch's length (batches) is real here (``MixedBatchLoader.__len__``, an epoch is
``data.epoch_samples`` samples), so the bar shows "Epoch 0" and the true batch total of the epoch.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


class StepBoundRichProgressBar(RichProgressBar):
    """Rich progress bar that names no epoch total when the number of epochs is unbounded."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        return f"{description:{len(self.validation_description)}}"


def progress_bar() -> ProgressBar:
    """Rich when it is installed (as Lightning chooses), else tqdm (whose title has no total anyway)."""
    return StepBoundRichProgressBar() if _RICH_AVAILABLE else TQDMProgressBar()
