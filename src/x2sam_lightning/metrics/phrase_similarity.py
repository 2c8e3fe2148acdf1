"""Phrase similarity for GCG recall: a pluggable protocol, an offline default and GLaMM's BERT scorer.

GLaMM (``mbzuai-oryx/groundingLMM``, ``eval/gcg/evaluate.py::text_similarity_bert``) compares a predicted
and a ground-truth phrase by the cosine of their ``bert-base-uncased`` embeddings, each the mean of the last
hidden states over all tokens ([CLS] and [SEP] included); a pair counts when the cosine is >= 0.5.
:class:`BertPhraseSimilarity` reproduces it and needs ``transformers`` and the model weights (a download,
or a local copy). The default, :class:`LexicalPhraseSimilarity`, needs nothing: the cosine of character
trigram counts. It is deterministic and offline, but it is not GLaMM's number: mean-pooled BERT vectors
of two short English phrases usually have a cosine above 0.5 (almost every IoU-matched pair passes
GLaMM's text test), while trigrams reject paraphrases that share few letters.
Report which similarity a recall was computed with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PhraseSimilarity(Protocol):
    """Scores every pair of two phrase lists: returns a ``(len(a), len(b))`` float array."""

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray: ...


def _trigrams(text: str) -> Counter[str]:
    padded = f"  {' '.join(text.lower().split())} "
    return Counter(padded[i : i + 3] for i in range(len(padded) - 2))


class LexicalPhraseSimilarity:
    """Cosine of character-trigram count vectors of lower-cased, whitespace-normalised phrases (offline)."""

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        grams_a = [_trigrams(text) for text in a]
        grams_b = [_trigrams(text) for text in b]
        out = np.zeros((len(a), len(b)), dtype=np.float64)
        for i, ga in enumerate(grams_a):
            norm_a = np.sqrt(sum(v * v for v in ga.values()))
            for j, gb in enumerate(grams_b):
                norm_b = np.sqrt(sum(v * v for v in gb.values()))
                dot = sum(count * gb[gram] for gram, count in ga.items() if gram in gb)
                out[i, j] = dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0
        return out


class ConstantPhraseSimilarity:
    """Every pair scores ``value``: recall then matches by IoU alone (``value=1.0``)."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.full((len(a), len(b)), self.value, dtype=np.float64)


class BertPhraseSimilarity:
    """GLaMM's similarity: cosine of mean-pooled ``bert-base-uncased`` last hidden states.

    Args:
        model: model name or local folder (loaded lazily with ``transformers``; set ``HF_HUB_OFFLINE=1`` and
            a cached copy to stay offline).
        device: torch device of the model.
    """

    def __init__(self, model: str = "bert-base-uncased", device: str = "cpu") -> None:
        self.model_name = model
        self.device = device
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, np.ndarray] = {}

    def _embed(self, text: str) -> np.ndarray:
        import torch

        if self._model is None:
            from x2sam_lightning.imports import require

            transformers = require("transformers")
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name)
            self._model = transformers.AutoModel.from_pretrained(self.model_name).to(self.device).eval()
        if text not in self._cache:
            inputs = self._tokenizer(text, return_tensors="pt", max_length=512, truncation=True).to(
                self.device
            )
            with torch.no_grad():
                hidden = self._model(**inputs).last_hidden_state[0]
            self._cache[text] = torch.mean(hidden, dim=0).cpu().numpy()
        return self._cache[text]

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(a), len(b)), dtype=np.float64)
        for i, text_a in enumerate(a):
            ea = self._embed(text_a).astype(np.float64)
            for j, text_b in enumerate(b):
                eb = self._embed(text_b).astype(np.float64)
                out[i, j] = ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))
        return out
