"""A data source: one dataset split as a list of WebDataset shards (built by Hydra from ``conf/data``).

Shards and the index may be anywhere :mod:`x2sam_lightning.data.remote` opens: local paths, ``file://``,
``http(s)://``, fsspec urls (``s3://`` ...), ``pipe:``. Before training or evaluation starts,
:meth:`ShardSource.check_shards` looks for every shard (a stat, an HTTP HEAD), so a missing or unreachable
one is named at start-up, not hours later in a worker.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from x2sam_lightning.data.errors import SampleError, ShardError, SkipStats, SourceError
from x2sam_lightning.data.remote import (
    RemoteError,
    RemoteOptions,
    is_remote,
    join,
    local_path,
    probe,
    read_bytes,
)
from x2sam_lightning.data.schema import DEFAULT_MAX_PIXELS, MODALITIES, TASKS, parse_json, validate_index

log = logging.getLogger(__name__)

#: Default for ``ShardSource(max_consecutive_failures=...)``.
MAX_CONSECUTIVE_FAILURES = 1000
#: Shards probed at once by :meth:`ShardSource.check_shards` (HTTP HEADs wait on the network, not the CPU).
_PROBE_THREADS = 16

MissingShards = Literal["raise", "skip"]


def expand_urls(urls: str | list[str]) -> list[str]:
    """Shard urls with WebDataset's brace patterns expanded (``"coco-{000000..000127}.tar"``: 128 urls).

    Args:
        urls: one url or pattern, or a list of them.
    """
    from braceexpand import braceexpand  # a WebDataset dependency

    patterns = [urls] if isinstance(urls, str) else list(urls)
    return [url for pattern in patterns for url in braceexpand(str(pattern))]


class ShardSource:
    """One dataset split: its shards, size, task, modality and vocabulary.

    Give either ``index`` (a ``<dataset>-<split>.index.json``, local or remote; relative shard urls are
    resolved against its folder or url) or ``urls`` plus the metadata an index would hold.

    Args:
        name: source name, as in ``conf/data`` (becomes ``SegBatch.source``).
        index: path or url of the index json.
        urls: shard urls when there is no index: local paths, ``file://``, ``http(s)://``, fsspec urls,
            ``pipe:`` commands; a string or a list, each may be a brace pattern (``shard-{000..127}.tar``).
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
        missing_shards: what :meth:`check_shards` (run at start-up) does with a shard that is not there
            or cannot be reached: ``"raise"`` a :class:`~x2sam_lightning.data.errors.ShardError` naming the
            source, the url and what failed, or ``"skip"`` it (a warning, counted in ``shards_skipped``).
            A source none of whose shards can be reached is a ``SourceError`` either way.
        timeout: seconds allowed for connecting and for each read of a remote (HTTP) shard or index.
        retries: further attempts after a transient failure to open a remote url (refused, reset, timed
            out, HTTP 408/429/5xx); 404 and other definite answers fail at once.

    Attributes:
        stats: :class:`~x2sam_lightning.data.errors.SkipStats`, the samples and shards skipped
            (``on_error="skip"``), summed over this process's DataLoader workers.
    """

    def __init__(
        self,
        name: str,
        index: str | os.PathLike | None = None,
        urls: str | list[str] | None = None,
        num_samples: int | None = None,
        task: str | None = None,
        modality: str | None = None,
        weight: float = 1.0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
        variant: str | None = None,
        max_objects: int | None = None,
        missing_shards: MissingShards = "raise",
        timeout: float = 60.0,
        retries: int = 2,
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
        if urls is not None:
            urls = expand_urls(urls)
            if not urls:
                raise ValueError(f"source {name!r}: 'urls' is empty")
        if missing_shards not in ("raise", "skip"):
            raise ValueError(
                f"source {name!r}: missing_shards must be 'raise' or 'skip', got {missing_shards!r}"
            )
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
        try:
            self.remote = RemoteOptions(float(timeout), int(retries))
        except ValueError as error:
            raise ValueError(f"source {name!r}: {error}") from None
        self.missing_shards = missing_shards
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
        #: url -> why it cannot be opened, for shards :meth:`check_shards` dropped (None: not checked).
        self.missing: dict[str, str] | None = None

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
        if is_remote(self.index_path):
            try:
                data = read_bytes(self.index_path, self.remote)
            except RemoteError as error:
                raise SourceError(
                    self.index_path, f"source {self.name!r}: index cannot be read: {error}"
                ) from None
            return self._parse_index(data, self.index_path)
        path = Path(local_path(self.index_path) or self.index_path)
        if not path.exists():
            raise FileNotFoundError(f"source {self.name!r}: index {path} does not exist")
        if not path.is_file():
            raise SourceError(str(path), f"source {self.name!r}: the index is not a file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise SourceError(str(path), f"index cannot be read: {error.strerror or error}") from None
        return self._parse_index(data, str(path))

    @staticmethod
    def _parse_index(data: bytes, where: str) -> dict[str, Any]:
        try:
            raw = parse_json(data, what="index")
        except SampleError as error:
            raise SourceError(where, error.problem) from None
        return validate_index(raw, path=where)

    @property
    def urls(self) -> list[str]:
        """Shard urls, resolved against the index's folder or url where the index holds relative ones,
        without the shards :meth:`check_shards` dropped (``missing_shards="skip"``).

        Raises:
            SourceError: the same shard listed twice (after resolving).
        """
        missing = self.missing or {}
        return [url for url in self._resolved_urls if url not in missing]

    @cached_property
    def _resolved_urls(self) -> list[str]:
        if self._urls is not None:
            urls = list(self._urls)
        else:
            urls = [join(self.index_path, s["url"]) for s in self.index["shards"]]
        seen: dict[str, int] = {}
        for n, url in enumerate(urls):
            path = local_path(url)
            same = url if path is None else os.path.normpath(os.path.abspath(path))
            if same in seen:
                raise SourceError(
                    self.where, f"source {self.name!r} lists shard {url!r} twice ({seen[same]}, {n})"
                )
            seen[same] = n
        return urls

    @property
    def shard_sizes(self) -> dict[str, int]:
        """Resolved url -> sample count from the index (empty without an index; dropped shards left out)."""
        if self.index_path is None:
            return {}
        missing = self.missing or {}
        sizes = zip(self._resolved_urls, self.index["shards"])
        return {url: s["num_samples"] for url, s in sizes if url not in missing}

    @property
    def num_samples(self) -> int:
        """Samples of the source (with an index: of the shards still used after :meth:`check_shards`)."""
        if self.index_path is not None and self.missing:
            return sum(self.shard_sizes.values())
        value = self.index.get("num_samples", self._num_samples)
        if value is None:
            raise ValueError(f"source {self.name!r}: 'num_samples' is unknown (no index); set it for mixing")
        return int(value)

    def check_shards(self) -> dict[str, str]:
        """Look for every shard before reading starts (a stat, an HTTP HEAD, an fsspec ``exists``; remote
        ones in parallel, each bounded by ``timeout`` and ``retries``). Runs once; later calls return
        the first result.

        Returns:
            url -> why it cannot be opened, for the shards dropped (``missing_shards="skip"``).

        Raises:
            ShardError: a shard is missing or unreachable and ``missing_shards="raise"`` (the message
                names the source, the url and what failed).
            SourceError: no shard at all can be reached (whatever ``missing_shards`` says).
        """
        if self.missing is not None:
            return dict(self.missing)
        urls = self._resolved_urls
        remote = sum(map(is_remote, urls))
        with ThreadPoolExecutor(max_workers=max(1, min(_PROBE_THREADS, remote))) as pool:
            reasons = list(pool.map(lambda url: probe(url, self.remote), urls))
        missing = {url: reason for url, reason in zip(urls, reasons) if reason is not None}
        if missing and len(missing) == len(urls):
            url, reason = next(iter(missing.items()))
            raise SourceError(
                self.where,
                f"source {self.name!r}: none of its {len(urls)} shards can be opened (first: {url!r}: {reason})",
            )
        if missing and self.missing_shards == "raise":
            url, reason = next(iter(missing.items()))
            more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise ShardError(
                url,
                f"source {self.name!r} cannot open this shard: {reason}{more}; checked at start-up "
                "(the source's missing_shards=skip drops such shards instead)",
            )
        for url, reason in missing.items():
            log.warning("source %r: skipping shard %r, it cannot be opened: %s", self.name, url, reason)
        if missing and _is_first_rank():  # every rank drops the same shards: count them once
            self.stats.add("shards_skipped", len(missing))
        self.missing = missing
        return dict(missing)

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


def _is_first_rank() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
