"""A callback that writes what each training step saw (source, sample keys, loss) to a JSON-lines file
per rank, so tests can compare runs made in other processes (DDP ranks, a killed and resumed run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class BatchLog(L.Callback):
    """Appends ``{"event": "start", "step"}`` before and ``{"event": "end", "step", "source", "keys",
    "loss"}`` after each training batch to ``<path>.rank<R>.jsonl`` (``step`` = optimizer steps done
    before the batch). A ``start`` line for step ``s`` means every checkpoint of step ``s - 1`` is
    written (Lightning's ModelCheckpoint runs at the end of the previous batch)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._step = 0

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        file = Path(f"{self.path}.rank{trainer.global_rank}.jsonl")
        with file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step
        self._write(trainer, {"event": "start", "step": self._step})

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        record = {"event": "end", "step": self._step, "source": batch.source, "keys": list(batch.keys)}
        self._write(trainer, {**record, "loss": float(loss)})


def read_log(path: str | Path, rank: int = 0) -> list[dict[str, Any]]:
    """The ``end`` records of one rank's log, in order."""
    lines = Path(f"{path}.rank{rank}.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "end"]
