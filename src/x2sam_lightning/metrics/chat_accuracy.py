"""Exact-match accuracy of short chat answers (the synthetic chat task's score; defined here).

Answers are compared after normalisation: lower case, punctuation and articles removed, whitespace
collapsed, number words as digits ("Three." == "3"). Real chat benchmarks (LLaVA-Bench, MMBench,
VideoChatGPT) have their own scorers and are run outside this package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """The comparable form of an answer (see the module docstring)."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


class ChatAccuracy(Metric):
    """Share of answers equal to the reference after :func:`normalize_answer`."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} answers for {len(target)} references")
        self.correct += sum(normalize_answer(p) == normalize_answer(t) for p, t in zip(preds, target))
        self.total += len(preds)

    def compute(self) -> dict[str, Tensor]:
        """``{"accuracy"}`` (NaN before any update)."""
        return {"accuracy": self.correct / self.total if self.total > 0 else self.total * float("nan")}
