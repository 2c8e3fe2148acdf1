"""Reading one WebDataset tar shard strictly: every structural defect is a :class:`ShardError`.

Python's ``tarfile`` (and WebDataset on top of it) stops *silently* at a corrupt or truncated member header
after the first member, and WebDataset skips members it cannot name, so a damaged shard reads as a shorter
one. This reader records why ``tarfile`` stopped and accepts only a proper end: the end-of-archive zero
blocks followed by nothing but zeros. It also refuses absolute member names, ``..`` components, names that
are not UTF-8, links and devices, members that are not ``<key>.<ext>``, a member name twice, a key whose
members are not together (a key repeated anywhere in the shard), and, when the index gives one, a sample
count different from the index.

Local shards (paths and ``file://`` urls) are checked as a whole (member headers only: a seek per member)
before their first sample is returned, so a bad local shard gives no sample at all. Streamed shards
(``http(s)://``, fsspec urls, ``pipe:`` ..., opened by :mod:`x2sam_lightning.data.remote` with time-outs and
bounded retries) are checked as they are read: one found bad part-way has already given the samples before
the defect.

Samples are WebDataset dicts: ``{"__key__", "__url__", "<ext>": bytes, ...}`` (extensions lower-cased,
split at the first dot of the file name, as WebDataset does).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import IO, Any

from x2sam_lightning.data.errors import ShardError
from x2sam_lightning.data.remote import RemoteError, RemoteOptions, is_remote, local_path, open_stream

#: WebDataset's split of a member name into key and extension (at the first dot of the file name).
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
#: Members WebDataset treats as metadata and skips.
_META = re.compile(r"__[^/]*__($|/)")
_CHUNK = 1 << 16


class _RecordingTarInfo(tarfile.TarInfo):
    """Records on the TarFile why it stopped reading headers (``tarfile`` swallows the reason)."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as error:
            tar.__dict__["_x2sam_stop"] = error
            raise


def _open_error(url: str, error: BaseException) -> ShardError:
    text = str(error)
    # tarfile.open("r:*") lists every method it tried; the plain-tar reason is the telling one.
    found = re.search(r"- method tar: ReadError\('([^']*)'\)", text)
    reason = found.group(1) if found else (text.splitlines()[0] if text else type(error).__name__)
    if reason == "empty file":
        return ShardError(url, "is an empty file, not a tar shard")
    return ShardError(url, f"is not a tar file ({reason})")


def _member_key(url: str, info: tarfile.TarInfo) -> tuple[str, str] | None:
    """``(key, ext)`` of a member, None for one to skip (directories, WebDataset metadata)."""
    name = info.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ShardError(url, f"member name {name!r} is not valid UTF-8") from None
    if not name:
        raise ShardError(url, "a member has an empty name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        raise ShardError(url, f"member name {name!r} is absolute")
    if ".." in re.split(r"[\\/]", name):
        raise ShardError(url, f"member name {name!r} has a '..' component")
    if info.isdir():
        return None
    if not info.isreg():
        kind = "link" if info.issym() or info.islnk() else "device or special file"
        raise ShardError(url, f"member {name!r} is a {kind}, not a regular file")
    if _META.match(name) or name.rsplit("/", 1)[-1].startswith("."):
        return None  # WebDataset metadata, hidden files (.DS_Store, macOS ._* AppleDouble members)
    match = _KEY_EXT.match(name)
    if match is None:
        raise ShardError(url, f"member name {name!r} is not '<key>.<extension>'")
    return match.group(1), match.group(2).lower()


def _check_end(url: str, tar: tarfile.TarFile, stream: IO[bytes] | Any, last: str) -> None:
    """After ``tarfile`` stopped: accept only the end-of-archive marker followed by zeros."""
    stop = tar.__dict__.get("_x2sam_stop")
    after = f"after member {last!r}" if last else "before the first member"
    where = f"at byte {tar.offset}"
    if isinstance(stop, tarfile.EOFHeaderError):
        position = tar.offset + tarfile.BLOCKSIZE
        while chunk := stream.read(_CHUNK):
            if chunk.count(0) != len(chunk):
                first = position + len(chunk) - len(chunk.lstrip(b"\0"))
                raise ShardError(
                    url,
                    f"has data after the end-of-archive marker {where} (non-zero byte at {first}): a zeroed "
                    f"or overwritten member header {after}?",
                )
            position += len(chunk)
        return
    if isinstance(stop, tarfile.EmptyHeaderError):
        raise ShardError(url, f"is truncated: it ends {after} {where} without the end-of-archive marker")
    if isinstance(stop, tarfile.TruncatedHeaderError):
        raise ShardError(url, f"is truncated inside a member header {where} ({after})")
    if isinstance(stop, tarfile.InvalidHeaderError):
        raise ShardError(url, f"has a corrupt member header {where} ({after}): {stop}")
    if stop is not None:
        raise ShardError(url, f"cannot read the member header {where} ({after}): {stop}")


class _Grouper:
    """Groups members into samples by key and refuses repeated names and keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done: set[str] = set()
        self.key: str | None = None
        self.names: set[str] = set()
        self.count = 0

    def add(self, key: str, ext: str, name: str) -> bool:
        """Register a member; True when it starts a new sample."""
        if key == self.key:
            if ext in self.names:
                raise ShardError(self.url, f"member {name!r} appears twice", key)
            self.names.add(ext)
            return False
        if key in self.done:
            raise ShardError(
                self.url,
                f"key appears again at member {name!r} (a sample's members must be together, once)",
                key,
            )
        if self.key is not None:
            self.done.add(self.key)
        self.key, self.names = key, {ext}
        self.count += 1
        return True


def _one_line(error: BaseException) -> str:
    text = str(error)
    if status := re.search(r"\): exit (-?\d+) \(read\)", text):  # webdataset's Pipe
        return f"the command exited with status {status.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _check_count(url: str, count: int, expected: int | None) -> None:
    if count == 0:
        raise ShardError(url, "holds no samples (a well-formed but empty tar)")
    if expected is not None and count != expected:
        raise ShardError(url, f"holds {count} samples but the index says {expected}")


def _open_tar(url: str, fileobj: Any, mode: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fileobj, mode=mode, tarinfo=_RecordingTarInfo)
    except Exception as error:  # tarfile, gzip, bz2, lzma and zlib each raise their own types
        raise _open_error(url, error) from None


def _read_error(url: str, error: Exception, last: str) -> ShardError:
    """A ShardError for an error raised while reading members (``last``: the member read before)."""
    if isinstance(error, ShardError):
        return error
    if str(error) == "unexpected end of data":
        return ShardError(url, f"is truncated inside the data of member {last!r}")
    if isinstance(error, TimeoutError):  # a remote stream whose server stopped answering
        return ShardError(url, f"stopped answering after member {last!r} (read timed out)")
    return ShardError(url, f"cannot be read after member {last!r}: {type(error).__name__}: {error}")


def _read_local(url: str, expected: int | None) -> Iterator[dict[str, Any]]:
    path = local_path(url) or url
    try:
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done
    except OSError as error:
        raise ShardError(url, f"cannot be opened: {error.strerror or error}") from None
    with handle:
        if size == 0:
            raise ShardError(url, "is an empty file, not a tar shard")
        tar = _open_tar(url, handle, "r:*")
        with tar:
            members = _check_local(url, tar, expected)
            sample: dict[str, Any] = {}
            for key, ext, info in members:
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                if not sample:
                    sample = {"__key__": key, "__url__": url}
                sample[ext] = _member_data(url, tar, info)
            if sample:
                yield sample


def _check_local(
    url: str, tar: tarfile.TarFile, expected: int | None
) -> list[tuple[str, str, tarfile.TarInfo]]:
    """Every member header of a local shard checked (a seek per member): ``(key, ext, info)`` in order."""
    members: list[tuple[str, str, tarfile.TarInfo]] = []
    grouper = _Grouper(url)
    try:
        for info in tar:
            if (named := _member_key(url, info)) is not None:
                grouper.add(*named, info.name)
                members.append((*named, info))
        _check_end(url, tar, tar.fileobj, tar.members[-1].name if tar.members else "")
    except Exception as error:
        raise _read_error(url, error, tar.members[-1].name if tar.members else "") from None
    _check_count(url, grouper.count, expected)
    return members


@dataclass(frozen=True)
class ShardTable:
    """Where each sample of an uncompressed local shard lies, for random access (exact resume).

    Attributes:
        url: the shard.
        samples: per sample, in stored order, ``(key, ((ext, data offset, size), ...))``.
    """

    url: str
    samples: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]

    def read(self, handle: IO[bytes], index: int, exts: Container[str] | None = None) -> dict[str, Any]:
        """Sample ``index`` as a WebDataset dict, read from ``handle`` (the shard opened ``rb``); with
        ``exts``, only those members (e.g. ``{"json"}`` to peek at a sample)."""
        key, members = self.samples[index]
        sample: dict[str, Any] = {"__key__": key, "__url__": self.url}
        for ext, offset, size in members:
            if exts is not None and ext not in exts:
                continue
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise ShardError(self.url, f"member '{key}.{ext}' is truncated ({len(data)} of {size} bytes)")
            sample[ext] = data
        return sample


def local_shard_table(url: str, expected_samples: int | None = None) -> ShardTable | None:
    """The :class:`ShardTable` of a local shard, checked as a whole like :func:`read_shard` does; None
    for a compressed shard (its offsets are not file offsets: it can only be read in order).

    Raises:
        ShardError: as :func:`read_shard`.
    """
    path = local_path(url) or url
    try:
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise ShardError(url, f"cannot be opened: {error.strerror or error}") from None
    with handle:
        if size == 0:
            raise ShardError(url, "is an empty file, not a tar shard")
        with _open_tar(url, handle, "r:*") as tar:
            members = _check_local(url, tar, expected_samples)
            if tar.fileobj is not handle:  # gzip, bz2, xz: offsets inside the decompressed stream
                return None
    samples: list[tuple[str, list[tuple[str, int, int]]]] = []
    for key, ext, info in members:
        if not samples or samples[-1][0] != key:
            samples.append((key, []))
        samples[-1][1].append((ext, info.offset_data, info.size))
    return ShardTable(url, tuple((key, tuple(parts)) for key, parts in samples))


def _member_data(url: str, tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    try:
        data = tar.extractfile(info).read()
    except Exception as error:  # tarfile, gzip, bz2, lzma and zlib each raise their own types
        if str(error) == "unexpected end of data":
            raise ShardError(url, f"is truncated inside the data of member {info.name!r}") from None
        raise ShardError(url, f"cannot read member {info.name!r}: {type(error).__name__}: {error}") from None
    if len(data) != info.size:
        raise ShardError(url, f"member {info.name!r} is truncated ({len(data)} of {info.size} bytes)")
    return data


def _read_remote(url: str, expected: int | None, options: RemoteOptions | None) -> Iterator[dict[str, Any]]:
    try:
        handle = open_stream(url, options)
    except RemoteError as error:
        raise ShardError(url, f"cannot be opened: {error}") from None
    opened = finished = False
    try:
        tar = _open_tar(url, handle, "r|*")
        opened = True
        grouper = _Grouper(url)
        sample: dict[str, Any] = {}
        last = ""
        try:
            for info in tar:
                last = info.name
                named = _member_key(url, info)
                if named is None:
                    continue
                key, ext = named
                if grouper.add(key, ext, info.name) and sample:
                    yield sample
                    sample = {}
                if not sample:
                    sample = {"__key__": key, "__url__": url}
                sample[ext] = _member_data(url, tar, info)
                tar.members = []  # a stream may be long: do not keep every header
            _check_end(url, tar, tar.fileobj, last)
        except Exception as error:
            raise _read_error(url, error, last) from None
        _check_count(url, grouper.count, expected)
        finished = True
    finally:
        try:
            handle.close()  # a pipe reports its command's failure here (e.g. a download that stopped)
        except Exception as error:
            # The command's failure explains an empty or unreadable stream better than tarfile does.
            if finished or not opened:
                raise ShardError(url, f"cannot be read: {_one_line(error)}") from None
    if sample:
        yield sample


def read_shard(
    url: str, expected_samples: int | None = None, remote: RemoteOptions | None = None
) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard, in stored order.

    Args:
        url: a local path or ``file://`` url, an ``http(s)://`` url, any fsspec url, or ``pipe:cmd``.
        expected_samples: the shard's sample count from the index (checked), or None.
        remote: time-out and retries for remote shards (defaults of :class:`RemoteOptions` when None).

    Raises:
        ShardError: naming the shard (and the key where there is one) and the defect (for a remote
            shard that cannot be opened: what failed, e.g. ``HTTP 404 Not Found`` or ``connection
            refused (3 attempts, timeout 60 s each)``).
    """
    if is_remote(url):
        return _read_remote(url, expected_samples, remote)
    return _read_local(url, expected_samples)
