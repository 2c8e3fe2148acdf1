"""A data source: one dataset split as a list of WebDataset shards (built by Hydra from ``conf/data``)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from x2sam_lightning.data.errors import SampleError, SkipStats, SourceError
from x2sam_lightning.data.schema import DEFAULT_MAX_PIXELS, MODALITIES, TASKS, parse_json, validate_index
from x2sam_lightning.data.tars import is_remote

#: Default for ``ShardSource(max_consecutive_failures=...)``.
MAX_CONSECUTIVE_FAILURES = 1000


class ShardSource:
    """One dataset split: its shards, size, task, modality and vocabulary.

    Give either ``index`` (a ``<dataset>-<split>.index.json``; relative shard urls are resolved against
    its folder) or ``urls`` plus the metadata an index would hold.

    Args:
        name: source name, as in ``conf/data`` (becomes ``SegBatch.source``).
        index: path of the index json.
        urls: shard urls (local paths or anything WebDataset opens) when there is no index.
        num_samples: number of samples (needed for mixing when only ``urls`` are given).
        task: task id (e.g. ``img_genseg``) when only ``urls`` are given (samples are checked against it).
        modality: ``"image"`` or ``"video"`` when only ``urls`` are given (checked likewise).
        weight: multiplies this source's mixing probability (1.0 = plain temperature balancing).
        max_pixels: largest frame (height x width) read; checked from the json and the image header
            before decoding (None: no limit of ours; PIL's own guard still refuses > 2 x 89.5 Mpx).
        max_consecutive_failures: reads in a row (samples, shards, or training epochs in which a reader
            had no readable shard) without a usable sample before the source is given up with a
            :class:`~x2sam_lightning.data.errors.SourceError`, in ``raise`` and ``skip`` mode alike.
        variant: the benchmark variant whose rules score this source (``grefcoco``: an entry
            ``task:variant`` of ``conf/model/metrics/tasks.yaml``); None for the task's own metrics.
        max_objects: in training, a sample with more objects (on its clip) keeps a random subset of this
            many, chosen before any mask is decoded (SA-1B images hold ~100 masks). Evaluation always
            reads every object. None: no limit.

    Attributes:
        stats: :class:`~x2sam_lightning.data.errors.SkipStats`, the samples and shards skipped
            (``on_error="skip"``), summed over this process's DataLoader workers.
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
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
        variant: str | None = None,
        max_objects: int | None = None,
    ) -> None:
        if (index is None) == (urls is None):
            raise ValueError(f"source {name!r}: give exactly one of 'index' or 'urls'")
        if weight < 0:
            raise ValueError(f"source {name!r}: weight must be >= 0, got {weight}")
        if max_pixels is not None and max_pixels <= 0:
            raise ValueError(f"source {name!r}: max_pixels must be positive or None, got {max_pixels}")
        if max_consecutive_failures < 1:
            raise ValueError(f"source {name!r}: max_consecutive_failures must be >= 1")
        if max_objects is not None and max_objects < 1:
            raise ValueError(f"source {name!r}: max_objects must be >= 1 or None, got {max_objects}")
        if urls is not None and not urls:
            raise ValueError(f"source {name!r}: 'urls' is empty")
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"source {name!r}: modality must be one of {MODALITIES}, got {modality!r}")
        if task is not None and task not in TASKS:
            raise ValueError(f"source {name!r}: unknown task {task!r} (known: {', '.join(TASKS)})")
        if (
            task is not None
            and modality is not None
            and task[:4] != {"image": "img_", "video": "vid_"}[modality]
        ):
            raise ValueError(f"source {name!r}: task {task!r} does not fit modality {modality!r}")
        self.name = name
        self.index_path = None if index is None else str(index)
        self._urls = None if urls is None else [str(u) for u in urls]
        self._num_samples, self._task, self._modality = num_samples, task, modality
        self.weight = float(weight)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.variant = variant
        self.max_objects = None if max_objects is None else int(max_objects)
        self.stats = SkipStats()
        #: Shards this process found bad (``on_error="skip"``): not read again.
        self.known_bad_shards: set[str] = set()

    def __repr__(self) -> str:
        where = self.index_path or f"{len(self._urls or [])} urls"
        return f"ShardSource(name={self.name!r}, {where}, weight={self.weight})"

    def __getstate__(self) -> dict[str, Any]:
        # Parse the index once in the main process; DataLoader workers get the parsed copy.
        if self.index_path is not None:
            _ = self.index, self._resolved_urls
        return self.__dict__

    @property
    def where(self) -> str:
        """The index path, or the shard urls (abbreviated), for error messages."""
        if self.index_path is not None:
            return self.index_path
        urls = self._urls or []
        return ",".join(urls[:3]) + (",..." if len(urls) > 3 else "")

    @cached_property
    def index(self) -> dict[str, Any]:
        """The parsed, validated index json (an empty dict for url-only sources).

        Raises:
            FileNotFoundError: no index at ``index_path``.
            SourceError: an unreadable, non-UTF-8, invalid json or schema-breaking index.
        """
        if self.index_path is None:
            return {}
        path = Path(self.index_path)
        if not path.exists():
            raise FileNotFoundError(f"source {self.name!r}: index {path} does not exist")
        if not path.is_file():
            raise SourceError(str(path), f"source {self.name!r}: the index is not a file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SourceError(str(path), f"index cannot be read: {error.strerror or error}") from None
        try:
            raw = parse_json(data, what="index")
        except SampleError as error:
            raise SourceError(str(path), error.problem) from None
        return validate_index(raw, path=str(path))

    @property
    def urls(self) -> list[str]:
        """Shard urls, resolved to absolute paths where the index holds relative ones.

        Raises:
            SourceError: the same shard listed twice (after resolving).
        """
        return list(self._resolved_urls)

    @cached_property
    def _resolved_urls(self) -> list[str]:
        if self._urls is not None:
            urls = list(self._urls)
        else:
            folder = Path(self.index_path).parent
            urls = [s["url"] if is_remote(s["url"]) else str(folder / s["url"]) for s in self.index["shards"]]
        seen: dict[str, int] = {}
        for n, url in enumerate(urls):
            same = url if is_remote(url) else os.path.normpath(os.path.abspath(url))
            if same in seen:
                raise SourceError(
                    self.where, f"source {self.name!r} lists shard {url!r} twice ({seen[same]}, {n})"
                )
            seen[same] = n
        return urls

    @property
    def shard_sizes(self) -> dict[str, int]:
        """Resolved url -> sample count from the index (empty without an index)."""
        if self.index_path is None:
            return {}
        return {url: s["num_samples"] for url, s in zip(self.urls, self.index["shards"])}

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
    def declared_modality(self) -> str | None:
        """The modality the index or the arguments state (None: not stated, samples are not checked)."""
        return self.index.get("modality", self._modality)

    @property
    def categories(self) -> list[dict[str, Any]]:
        return list(self.index.get("categories", []))
