"""``predict`` records of a prompted sample (yielded once per prompt type) say which prompt type and template
they are, so the lines of one key can be told apart."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from x2sam_lightning.inference.writer import PredictionWriter
from x2sam_lightning.models.x2sam import DecodeInstance, X2SAMOutput
from x2sam_lightning.models.x2sam_postprocess import reply_predictions
from x2sam_lightning.types import Conversation, SegBatch, TrackTargets


class _Tokenizer:
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "<SEG>"


def _prompted_batch() -> SegBatch:
    """The same interactive sample twice, as the evaluation stream yields it: once per prompt type."""
    masks = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 2:10, 2:10] = True
    targets = TrackTargets(
        masks, torch.zeros(1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), torch.arange(1),
        torch.zeros(1, dtype=torch.bool),
    )  # fmt: skip
    conversations = [
        Conversation(
            [
                {"role": "user", "content": "<image>\n<p><region></p>"},
                {"role": "assistant", "content": "<SEG>"},
            ],
            "set",
            [[0]],
            [-1],
            prompt_type=kind,
            template="img_intseg/q0/a0",
        )  # fmt: skip
        for kind in ("point", "box")
    ]
    return SegBatch(
        torch.zeros(2, 1, 3, 16, 16), [targets, targets], torch.tensor([[16, 16]] * 2),
        torch.tensor([[16, 16]] * 2), ["int/1", "int/1"], ["img_intseg"] * 2, "coco_interactive",
        conversations=conversations,
    )  # fmt: skip


def _output() -> X2SAMOutput:
    return X2SAMOutput(
        lm_logits=torch.zeros(2, 1, 1),
        lm_loss=None,
        input_ids=torch.zeros(2, 8, dtype=torch.long),
        condition_spans=[[(0, 1)], [(0, 1)]],
        instances=[DecodeInstance(0, 5, [(0, 0)]), DecodeInstance(1, 5, [(1, 0)])],
        seg={"pred_logits": torch.tensor([[[5.0, -5.0]]] * 2), "pred_masks": torch.zeros(2, 1, 1, 4, 4)},
    )


def test_prompted_predictions_name_their_prompt_type_and_template(tmp_path):
    batch = _prompted_batch()
    predictions = reply_predictions(batch, _output(), [[1], [1]], _Tokenizer())
    assert [(p["key"], p["prompt_type"], p["template"]) for p in predictions] == [
        ("int/1", "point", "img_intseg/q0/a0"),
        ("int/1", "box", "img_intseg/q0/a0"),
    ]

    writer = PredictionWriter(tmp_path)
    writer.write_on_batch_end(SimpleNamespace(global_rank=0), None, predictions, None, batch, 0, 0)
    lines = [json.loads(line) for line in (tmp_path / "predictions.rank0.jsonl").read_text().splitlines()]
    assert [(r["key"], r["prompt_type"], r["template"]) for r in lines] == [
        ("int/1", "point", "img_intseg/q0/a0"),
        ("int/1", "box", "img_intseg/q0/a0"),
    ]
    assert all(r["reply"] == "<SEG>" and len(r["objects"]) == 1 for r in lines)


def test_stage1_records_stay_as_they_were(tmp_path):
    prediction = {
        "key": "a/1",
        "source": "s",
        "task": "img_genseg",
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([0]),
        "masks": torch.zeros(1, 1, 4, 4, dtype=torch.bool),
    }
    PredictionWriter(tmp_path).write_on_batch_end(
        SimpleNamespace(global_rank=0), None, [prediction], None, None, 0, 0
    )
    (record,) = [json.loads(line) for line in (tmp_path / "predictions.rank0.jsonl").read_text().splitlines()]
    assert set(record) == {"key", "source", "task", "objects"}
