"""Data-quality counters in the logged metrics: samples and shards skipped per source (``on_error=skip``)."""

from __future__ import annotations

import lightning as L


def log_skip_stats(module: L.LightningModule) -> None:
    """Log ``data/<source>/samples_skipped`` and ``shards_skipped`` (summed over processes) when the
    datamodule counts them; a no-op otherwise."""
    trainer = module._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    stats = getattr(datamodule, "skip_stats", None)
    if stats is None:
        return
    values = {
        f"data/{source}/{name}": float(n) for source, counts in stats().items() for name, n in counts.items()
    }
    if values:
        module.log_dict(values, sync_dist=True, reduce_fx="sum")
