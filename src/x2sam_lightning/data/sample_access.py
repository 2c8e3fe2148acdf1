"""Raw training samples of one source by stream position (see :mod:`~x2sam_lightning.data.sample_order`).

Each reader (the main process or a DataLoader worker, on each rank) reads only the samples it decodes:

- an uncompressed local shard is checked as a whole once (member headers, as ``read_shard`` does), then
  each sample is read by seeking to its members (``tars.ShardTable``): no sample is read twice and none
  that another reader decodes;
- a shard that can only be read in order (``http://``, ``pipe:``, other urls WebDataset opens, and
  compressed tars) is read one shuffle window at a time: the samples of the window holding the wanted
  position are read in shard order and kept until a position of another window is asked for (memory: one
  window of raw samples, as a shuffle buffer holds). Each reader that needs a sample of such a window
  reads the window, so remote bytes are read up to once per reader (rank x worker): local or mounted
  storage reads exactly what is used.

A shard found bad is remembered with its error (``ShardError``): asking again raises the same error
at once, without reading the shard again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container
from typing import IO, Any

from x2sam_lightning.data.errors import ShardError
from x2sam_lightning.data.remote import RemoteOptions, local_path
from x2sam_lightning.data.sample_order import SampleOrder
from x2sam_lightning.data.tars import ShardTable, is_remote, local_shard_table, read_shard


class SampleAccess:
    """The raw samples (WebDataset dicts) of one source's training stream, by position.

    Args:
        order: the source's :class:`SampleOrder`.
        expected: url -> sample count from the index (checked when a shard is first read).
        max_open: local shards kept open (and their tables kept) at once.
        remote: time-out and retries for remote shards (the source's).
    """

    def __init__(
        self,
        order: SampleOrder,
        expected: dict[str, int] | None = None,
        max_open: int = 8,
        remote: RemoteOptions | None = None,
    ) -> None:
        self.order = order
        self.expected = dict(expected or {})
        self.remote = remote
        self.max_open = int(max_open)
        self._tables: OrderedDict[str, tuple[ShardTable, IO[bytes]]] = OrderedDict()
        self._sequential: set[str] = set()  # shards read in order (remote, compressed)
        self._bad: dict[str, ShardError] = {}
        self._window: tuple[int, int] | None = None
        self._window_samples: dict[int, dict[str, Any] | ShardError] = {}

    def bad(self, url: str) -> ShardError | None:
        """The error of a shard found bad by this reader, None otherwise."""
        return self._bad.get(url)

    def get(self, position: int, exts: Container[str] | None = None) -> dict[str, Any]:
        """The raw sample at stream ``position`` (with ``exts``: at least those members; local shards
        then read only them).

        Raises:
            ShardError: its shard cannot be used (raised again, without reading, on every later call).
        """
        url, index = self.order.locate(position)
        if url in self._bad:
            raise self._bad[url]
        if url not in self._sequential and not is_remote(url):
            table = self._table(url)
            if table is not None:
                table_, handle = table
                try:
                    return table_.read(handle, index, exts)
                except OSError as error:
                    self._fail(url, ShardError(url, f"cannot be read: {error.strerror or error}"))
        return self._from_window(position)

    def close(self) -> None:
        for _, handle in self._tables.values():
            handle.close()
        self._tables.clear()

    def _fail(self, url: str, error: ShardError) -> None:
        self._bad[url] = error
        raise error

    def _table(self, url: str) -> tuple[ShardTable, IO[bytes]] | None:
        if url in self._tables:
            self._tables.move_to_end(url)
            return self._tables[url]
        try:
            table = local_shard_table(url, self.expected.get(url))
        except ShardError as error:
            self._fail(url, error)
        if table is None:
            self._sequential.add(url)
            return None
        try:
            handle = open(local_path(url) or url, "rb")  # noqa: SIM115 - kept open while the table is cached; closed on eviction
        except OSError as error:
            self._fail(url, ShardError(url, f"cannot be opened: {error.strerror or error}"))
        self._tables[url] = (table, handle)
        while len(self._tables) > self.max_open:
            _, (_, old) = self._tables.popitem(last=False)
            old.close()
        return self._tables[url]

    def _from_window(self, position: int) -> dict[str, Any]:
        window = self.order.window_of(position)
        if window != self._window:
            self._window, self._window_samples = window, self._read_window(*window)
        found = self._window_samples[position]
        if isinstance(found, ShardError):
            raise found
        return found

    def _read_window(self, first: int, end: int) -> dict[int, dict[str, Any] | ShardError]:
        """Every sample of positions ``first .. end - 1``, reading each shard involved once, in order."""
        wanted: dict[str, dict[int, int]] = {}
        for position in range(first, end):
            url, index = self.order.locate(position)
            wanted.setdefault(url, {})[index] = position
        found: dict[int, dict[str, Any] | ShardError] = {}
        for url, positions in wanted.items():
            if url in self._bad:
                found.update(dict.fromkeys(positions.values(), self._bad[url]))
                continue
            last = max(positions)
            try:
                for index, sample in enumerate(read_shard(url, self.expected.get(url), self.remote)):
                    if index in positions:
                        found[positions[index]] = sample
                    if index >= last:
                        break
                else:
                    raise ShardError(url, f"holds fewer samples than the {last + 1} the source counts")
            except ShardError as error:
                self._bad[url] = error
                for position in positions.values():
                    found.setdefault(position, error)
        return found
