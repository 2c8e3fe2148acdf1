"""What goes wrong with data, and how often: the error types of the data path and the skip counters.

Every data error is a :class:`SampleError` (so ``except SampleError`` catches them all) whose message
names the file, the sample key where there is one, and the problem:

- :class:`SampleError`: one sample cannot be used (bad json, media, masks, prompts ...).
- :class:`ShardError`: a whole shard cannot be used (not a tar, truncated, corrupt header, unsafe or
  repeated member names, sample count different from the index).
- :class:`SourceError`: a whole source cannot be used (bad or unreadable index, duplicated shards, or
  nothing usable read for too long).

The errors survive a DataLoader worker with their type, message and fields: PyTorch re-creates an error
raised in a worker as ``type(error)(text)`` where ``text`` is the worker's formatted traceback; the
one-argument form of the constructor recovers the original message and fields from that text.
"""

from __future__ import annotations

import ast
import logging
import re

log = logging.getLogger(__name__)

# A Python string repr: '...' or "..." with backslash escapes.
_REPR = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
_MESSAGE = re.compile(rf"^(?:shard )?(?P<url>{_REPR})(?:, sample (?P<key>{_REPR}))?: (?P<problem>.*)$", re.S)
_WORKER_PREFIX = "Caught "


def _literal(text: str | None) -> str:
    return "" if text is None else str(ast.literal_eval(text))


class SampleError(ValueError):
    """Unusable input, with where it is and what is wrong (the base of every data error).

    Args:
        url: the shard (or index file) the record came from; alone, a whole message to parse (see below).
        key: the WebDataset sample key (``""`` when the problem is not one sample's).
        problem: what is wrong.

    Attributes:
        url, key, problem: as given (or as recovered from a message).

    ``SampleError(message)`` with one argument (what a DataLoader does when it re-raises an error from a
    worker, with the worker's traceback as the message) recovers ``url``, ``key`` and ``problem`` from
    the last line of that traceback, so the error reads the same with 0 or N workers.
    """

    _where = "shard"

    def __init__(self, url: str, key: str | None = None, problem: str | None = None) -> None:
        if key is None and problem is None:
            url, key, problem = self._parse(url)
        self.url, self.key, self.problem = str(url), str(key or ""), str(problem)
        super().__init__(self._format())

    def _format(self) -> str:
        if not self.url:
            return self.problem
        where = f"{self._where} {self.url!r}" if self._where else repr(self.url)
        return f"{where}, sample {self.key!r}: {self.problem}" if self.key else f"{where}: {self.problem}"

    @classmethod
    def _parse(cls, message: str) -> tuple[str, str, str]:
        """``(url, key, problem)`` from a message (or a DataLoader worker's traceback ending in one)."""
        message = str(message)
        if message.startswith(_WORKER_PREFIX) and "Traceback" in message:
            # The traceback ends with "<module>.<Class>: <our message>"; our messages are one line.
            marker = f"{cls.__name__}: "
            for line in reversed(message.rstrip().splitlines()):
                head, sep, rest = line.partition(marker)
                if sep and not head.strip(" .").count(" ") and (not head or head.endswith(".")):
                    message = rest
                    break
        match = _MESSAGE.match(message)
        if match is None:
            return "", "", message
        try:
            return _literal(match["url"]), _literal(match["key"]), match["problem"]
        except (ValueError, SyntaxError):
            return "", "", message

    def __reduce__(self):  # keeps the three fields when the error is pickled (multiprocessing, queues)
        return (type(self), (self.url, self.key, self.problem))


class ShardError(SampleError):
    """A shard that cannot be read as a whole: ``ShardError(url, problem)`` or ``(url, problem, key)``.

    With ``on_error="skip"`` the shard is skipped (once per reader: a shard found bad is not read again),
    logged and counted in :class:`SkipStats`.
    """

    def __init__(self, url: str, problem: str | None = None, key: str | None = None) -> None:
        if problem is None and key is None:
            super().__init__(url)
        else:
            super().__init__(url, key or "", problem or "")

    def __reduce__(self):
        return (type(self), (self.url, self.problem, self.key))


class SourceError(SampleError):
    """A data source that cannot be used: ``SourceError(path, problem)`` (index file, or the source's
    shards when it has no index)."""

    _where = ""

    def __init__(self, url: str, problem: str | None = None) -> None:
        if problem is None:
            super().__init__(url)
        else:
            super().__init__(url, "", problem)

    def __reduce__(self):
        return (type(self), (self.url, self.problem))


class SkipStats:
    """Counters of skipped samples and shards of one source, shared by the DataLoader workers.

    The counts live in a small shared-memory tensor, one row per reader process (the main process and
    each DataLoader worker write their own row, so no locks are needed); reading sums the rows. Counts
    are per process group rank: under DDP log them with ``sync_dist=True`` (a sum) to get the total.

    Attributes:
        rows: maximum number of readers kept apart (workers beyond it share rows, still counted).
    """

    FIELDS = ("samples_skipped", "shards_skipped")
    rows = 64

    def __init__(self) -> None:
        import torch  # here, not at module level: the errors and the schema stay importable without torch

        self.counts = torch.zeros(self.rows, len(self.FIELDS), dtype=torch.int64).share_memory_()

    @staticmethod
    def _row() -> int:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (SkipStats.rows - 1)

    def add(self, field: str, n: int = 1) -> None:
        self.counts[self._row(), self.FIELDS.index(field)] += n

    def as_dict(self) -> dict[str, int]:
        """``{"samples_skipped": n, "shards_skipped": m}`` summed over the readers."""
        total = self.counts.sum(0).tolist()
        return dict(zip(self.FIELDS, (int(v) for v in total)))

    def reset(self) -> None:
        self.counts.zero_()

    def __repr__(self) -> str:
        return f"SkipStats({self.as_dict()})"


def warn_skip(error: SampleError, what: str = "sample") -> None:
    """The one log line of a skip (``on_error="skip"``)."""
    log.warning("skipping bad %s: %s", what, error)
