"""The contract between a dataset converter and the shard-set writer.

A :class:`Recipe` knows one dataset's on-disk layout. The writer (:mod:`data_recipes.framework.writer`)
asks it to check the layout of a split, to ``plan`` the split (its category vocabulary and a deterministic
sequence of small, picklable work items, read from the annotation file only) and, in worker processes, to
``convert`` each item into zero or more :class:`ConvertedSample` s. Everything else (shards, resume,
validation, the index, the summary, the progress bar, the command line) is the writer's, so every recipe
behaves the same.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LayoutError(ValueError):
    """The raw dataset does not have the documented layout: names what was expected and where."""


class SkipItem(Exception):
    """A work item yields no sample for a known, counted reason (``reason`` is short and stable, e.g.
    ``"no annotations"``: the summary counts skips per reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ConvertedSample:
    """One sample as a recipe makes it.

    Args:
        id: the dataset's own id of the sample; the key becomes ``<dataset>/<id>`` (dots and slashes in
            the id become ``_``: WebDataset splits member names at the first dot).
        json: the sample json (docs/data.md) without ``schema``, ``dataset``, ``task`` and ``modality``,
            which the writer fills from the recipe.
        media: members besides the json: ``{"jpg": bytes}`` / ``{"png": bytes}`` for an image (the source
            file's bytes, not re-encoded), ``{"0000.jpg": ..., "0001.jpg": ...}`` for a video stored as
            its frame files, or ``{"mp4": bytes}``.
    """

    id: str
    json: dict[str, Any]
    media: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Plan:
    """What :meth:`Recipe.plan` returns for one split.

    Args:
        items: work items in a deterministic order (a list or a lazy iterator); each must pickle.
        num_items: how many there are, when known without reading them all (the progress bar's total).
        categories: the split's category vocabulary (the index's ``categories``; None when class-agnostic).
    """

    items: Iterable[Any]
    num_items: int | None = None
    categories: list[dict[str, Any]] | None = None


_UNSAFE_KEY = re.compile(r"[./\\\s]")


def sample_key(dataset: str, sample_id: str) -> str:
    """``<dataset>/<id>`` with the id's dots, slashes and spaces turned into ``_``."""
    return f"{dataset}/{_UNSAFE_KEY.sub('_', str(sample_id))}"


class Recipe:
    """One dataset's converter. Subclasses set the class attributes and implement the three methods.

    Attributes:
        name: the dataset name written into keys, shard names and the index (``coco_panoptic``).
        task, modality: what every sample of the dataset is (``TASKS``; ``image`` / ``video``).
        splits: the splits the dataset has, by the names shards get (``train``, ``val``, ...).
        layout: the expected folder layout below ``--root``, one short paragraph (errors and docs).
        items_per_shard: work items per shard (a shard is also the unit of resume).
        version: bump when the output for the same input changes (an old partial run is then restarted).
    """

    name: str = ""
    task: str = ""
    modality: str = "image"
    splits: tuple[str, ...] = ("train", "val")
    layout: str = ""
    items_per_shard: int = 1000
    version: int = 1

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Options of this recipe's own (besides the common ones)."""

    def configure(self, args: argparse.Namespace) -> None:
        """Read the options :meth:`add_arguments` added."""

    def options(self) -> dict[str, Any]:
        """The settings that change the output (part of the resume fingerprint and the index)."""
        return {}

    def check_layout(self, root: Path, split: str) -> None:
        """Raise :class:`LayoutError` unless ``root`` holds ``split`` in the documented layout."""
        raise NotImplementedError

    def plan(self, root: Path, split: str) -> Plan:
        """Read the split's annotation file(s) into work items (in the main process)."""
        raise NotImplementedError

    def convert(self, item: Any) -> Iterator[ConvertedSample] | Iterable[ConvertedSample]:
        """Turn one work item into samples (in a worker process); raise :class:`SkipItem` to skip it."""
        raise NotImplementedError

    def describe(self, item: Any) -> str:
        """How an item is named in an error message (override to name its file)."""
        text = repr(item)
        return text if len(text) <= 200 else text[:197] + "..."
