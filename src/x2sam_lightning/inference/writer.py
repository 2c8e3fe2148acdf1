"""Write ``predict`` outputs as JSON lines: one line per predicted sample, masks as COCO compressed RLE.

A prompted stage-2 sample (interactive, visual grounded) is predicted once per evaluation prompt type, so
its key has one line per type; ``prompt_type`` (and ``template``) tell them apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from x2sam_lightning.data.rle import encode_masks


class PredictionWriter(BasePredictionWriter):
    """Appends each predicted batch to ``<output_dir>/predictions.rank<k>.jsonl``.

    Each line: ``{"key", "source", "task", "objects": [{"score", "label", "masks": [RLE per frame]}]}``;
    stage 2 adds the conversation's ``"prompt_type"`` (null unless the task is prompted) and
    ``"template"``, the generated ``"reply"`` and, per object, the ``"condition"`` text it segments.
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Sequence[dict[str, Any]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"predictions.rank{trainer.global_rank}.jsonl"
        with path.open("a") as handle:
            for sample in prediction:
                masks = sample["masks"].cpu().numpy()
                objects = [
                    {"score": float(score), "label": int(label), "masks": encode_masks(track)}
                    for score, label, track in zip(
                        sample["scores"].tolist(), sample["labels"].tolist(), masks
                    )
                ]
                for obj, condition in zip(objects, sample.get("conditions", [])):
                    obj["condition"] = condition
                fields = ("key", "source", "task", "prompt_type", "template", "reply")
                record = {k: sample[k] for k in fields if k in sample}
                handle.write(json.dumps({**record, "objects": objects}) + "\n")
