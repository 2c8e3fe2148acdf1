"""A data source: one dataset split as a list of WebDataset shards (built by Hydra from ``conf/data``)."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from x2sam_lightning.data.schema import SampleError, validate_index


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


class ShardSource:
    """One dataset split: its shards, size, task, modality and vocabulary.

    Give either ``index`` (a ``<dataset>-<split>.index.json``; relative shard urls are resolved against
    its folder) or ``urls`` plus the metadata an index would hold.

    Args:
        name: source name, as in ``conf/data`` (becomes ``SegBatch.source``).
        index: path of the index json.
        urls: shard urls (local paths or anything WebDataset opens) when there is no index.
        num_samples: number of samples (needed for mixing when only ``urls`` are given).
        task: task id (e.g. ``img_genseg``) when only ``urls`` are given.
        modality: ``"image"`` or ``"video"`` when only ``urls`` are given.
        weight: multiplies this source's mixing probability (1.0 = plain temperature balancing).
    """

    def __init__(
        self,
        name: str,
        index: str | os.PathLike | None = None,
        urls: list[str] | None = None,
        num_samples: int | None = None,
        task: str | None = None,
        modality: str | None = None,
        weight: float = 1.0,
    ) -> None:
        if (index is None) == (urls is None):
            raise ValueError(f"source {name!r}: give exactly one of 'index' or 'urls'")
        if weight < 0:
            raise ValueError(f"source {name!r}: weight must be >= 0, got {weight}")
        self.name = name
        self.index_path = None if index is None else str(index)
        self._urls = None if urls is None else [str(u) for u in urls]
        self._num_samples, self._task, self._modality = num_samples, task, modality
        self.weight = float(weight)

    def __repr__(self) -> str:
        where = self.index_path or f"{len(self._urls or [])} urls"
        return f"ShardSource(name={self.name!r}, {where}, weight={self.weight})"

    def __getstate__(self) -> dict[str, Any]:
        # Parse the index once in the main process; DataLoader workers get the parsed copy.
        if self.index_path is not None:
            _ = self.index
        return self.__dict__

    @cached_property
    def index(self) -> dict[str, Any]:
        """The parsed, validated index json (an empty dict for url-only sources)."""
        if self.index_path is None:
            return {}
        path = Path(self.index_path)
        if not path.is_file():
            raise FileNotFoundError(f"source {self.name!r}: index {path} does not exist")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SampleError(str(path), "", f"index is not valid json: {error}") from error
        return validate_index(raw, path=str(path))

    @property
    def urls(self) -> list[str]:
        """Shard urls, resolved to absolute paths where the index holds relative ones."""
        if self._urls is not None:
            return list(self._urls)
        folder = Path(self.index_path).parent
        return [s["url"] if _is_remote(s["url"]) else str(folder / s["url"]) for s in self.index["shards"]]

    @property
    def num_samples(self) -> int:
        value = self.index.get("num_samples", self._num_samples)
        if value is None:
            raise ValueError(f"source {self.name!r}: 'num_samples' is unknown (no index); set it for mixing")
        return int(value)

    @property
    def task(self) -> str:
        return self.index.get("task", self._task) or "unknown"

    @property
    def modality(self) -> str:
        """``"image"`` or ``"video"`` (from the index, else the argument, else the task prefix)."""
        value = self.index.get("modality", self._modality)
        return value or ("video" if self.task.startswith("vid_") else "image")

    @property
    def categories(self) -> list[dict[str, Any]]:
        return list(self.index.get("categories", []))
