"""Training progress in data terms: samples consumed per source, logged beside the loss.

The training loader's epochs are a sample count (``data.epoch_samples``, see
:class:`~x2sam_lightning.data.mixing.MixedBatchLoader`), so the progress bar already shows the real
number of batches per epoch; this callback adds what each source has given so far.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class DataProgress(L.Callback):
    """Logs ``data/samples/<source>`` (samples of the global batches consumed so far, all ranks) and
    ``data/samples`` (their sum) every ``trainer.log_every_n_steps`` steps.

    The counts come from the training plan, which every rank holds whole, so they are the same on every
    rank and need no reduction. A no-op with a datamodule that does not count them.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        counts = getattr(trainer.datamodule, "samples_seen", None) if trainer.datamodule is not None else None
        if counts is None or trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return
        seen = counts()
        if not seen:
            return
        values = {f"data/samples/{source}": float(n) for source, n in seen.items()}
        values["data/samples"] = float(sum(seen.values()))
        pl_module.log_dict(values, on_step=True, on_epoch=False, sync_dist=False)
