"""Opening shards and index files wherever they are: a local path, ``file://``, HTTP(S), any fsspec URL
(``s3://``, ``gs://``, ``memory://``, ``simplecache::https://`` ...), or WebDataset's ``pipe:``.

Why our own HTTP opener and not WebDataset's ``gopen``: ``gopen`` runs ``curl --connect-timeout 30 --retry
30 --retry-delay 2``, so a dead host keeps a DataLoader worker busy for many minutes and the error that
finally comes is an exit status. Here every attempt has a timeout (connect and each read), transient
failures (connection refused or reset, timeouts, HTTP 408/429/5xx) are retried a bounded number of times
with a doubling back-off, and a definite answer (HTTP 404, 403 ...) fails at once, as one line that says
what happened. Nothing here can block for longer than ``attempts x (timeout + back-off)``.

Schemes other than ``http``/``https``/``file``/``pipe`` go to fsspec when it is installed (Lightning
depends on it) and knows the protocol, with that backend's own time-outs; otherwise to WebDataset's
``gopen`` handlers (``ais``, ``gs`` via gsutil, ``hf`` ...).
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

#: HTTP statuses worth another attempt (the server may answer differently a moment later).
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "x2sam-lightning"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RemoteError(OSError):
    """A url that cannot be opened or read; the message is one line (the reason, with the attempts)."""


@dataclass(frozen=True)
class RemoteOptions:
    """How remote shards and index files are opened.

    Args:
        timeout: seconds allowed for connecting and for each read of an HTTP(S) stream; a server that
            stops answering fails the read instead of hanging it.
        retries: further attempts after a transient failure to open (connection refused or reset,
            timeout, HTTP 408/429/5xx). Definite answers (HTTP 404, 403 ...) are not retried.
        backoff: seconds before the first retry, doubled for each further one.
    """

    timeout: float = 60.0
    retries: int = 2
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0, got {self.retries} and {self.backoff}")

    @property
    def attempts(self) -> int:
        return 1 + int(self.retries)


def scheme(url: str) -> str:
    """The url's scheme: ``""`` for a plain path, ``"pipe"`` for ``pipe:cmd``, else e.g. ``"https"``.

    Chained fsspec urls (``simplecache::s3://...``) give the first protocol.
    """
    if url.startswith("pipe:"):
        return "pipe"
    if "::" in url:
        return url.split("::", 1)[0].lower()
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def is_remote(url: str) -> bool:
    """True for anything that is not a local file (a path or a ``file://`` url)."""
    return local_path(url) is None


def local_path(url: str) -> str | None:
    """The file system path of a local url (a plain path or ``file://``), None for a remote one."""
    kind = scheme(url)
    if kind == "":
        return url
    if kind == "file" and "::" not in url:
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return None


def join(base: str, relative: str) -> str:
    """``relative`` (a shard url in an index) resolved against the index url ``base``.

    Absolute paths and urls are returned as they are.
    """
    if scheme(relative) or os.path.isabs(relative):
        return relative
    path = local_path(base)
    if path is not None:
        return os.path.join(os.path.dirname(path), relative)
    if scheme(base) in ("http", "https"):
        return urllib.parse.urljoin(base, relative)
    return posixpath.join(posixpath.dirname(base), relative)


def open_stream(url: str, options: RemoteOptions | None = None) -> IO[bytes]:
    """A binary stream of ``url`` (read sequentially).

    Raises:
        RemoteError: the url cannot be opened (after the retries its kind allows); one-line message.
    """
    options = options or RemoteOptions()
    path = local_path(url)
    if path is not None:
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as error:
            raise RemoteError(error.strerror or str(error)) from None
    kind = scheme(url)
    if kind in ("http", "https"):
        return _http(url, options)
    if kind != "pipe" and (fs := _fsspec_filesystem(url)) is not None:
        return _retry(lambda: fs[0].open(fs[1], "rb"), options, _fsspec_reason)
    return _gopen(url, kind)


def read_bytes(url: str, options: RemoteOptions | None = None) -> bytes:
    """The whole content of ``url`` (an index file); errors as :func:`open_stream`, reads included."""
    with open_stream(url, options) as stream:
        try:
            return stream.read()
        except (OSError, urllib.error.URLError) as error:
            raise RemoteError(f"reading failed: {_reason(error)}") from None


def probe(url: str, options: RemoteOptions | None = None) -> str | None:
    """Why ``url`` cannot be opened, or None when it is there (a cheap check: a stat, an HTTP HEAD).

    ``pipe:`` urls (and schemes only ``gopen`` knows) cannot be checked without running them: None.
    """
    options = options or RemoteOptions()
    path = local_path(url)
    if path is not None:
        if os.path.isfile(path):
            return None if os.access(path, os.R_OK) else "not readable (permission denied)"
        return "is a folder, not a file" if os.path.isdir(path) else "no such file"
    kind = scheme(url)
    try:
        if kind in ("http", "https"):
            try:
                _http(url, options, method="HEAD").close()
            except RemoteError as error:
                if not str(error).startswith(("HTTP 405", "HTTP 501")):
                    raise
                _http(url, options).close()  # a server (or a signed url) that refuses HEAD: open it
            return None
        if kind != "pipe" and (fs := _fsspec_filesystem(url)) is not None:
            found = _retry(lambda: fs[0].exists(fs[1]), options, _fsspec_reason)
            return None if found else "not found"
    except RemoteError as error:
        return str(error)
    return None


def _reason(error: BaseException) -> str:
    """One line for a network error (urllib wraps the socket error it hit in ``reason``)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    inner = getattr(error, "reason", None)
    if isinstance(inner, BaseException):
        error = inner
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "no answer (timed out)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"host not found ({error.strerror or error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(inner if inner is not None and not isinstance(inner, BaseException) else error)
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _retry(call: Any, options: RemoteOptions, reason: Any) -> Any:
    """``call()`` with bounded retries of transient failures; ``reason(error)`` -> (text, transient)."""
    for attempt in range(options.attempts):
        try:
            return call()
        except Exception as error:  # network stacks raise many types; each is classified below
            text, transient = reason(error)
        if not transient:
            raise RemoteError(text)
        if attempt + 1 < options.attempts:
            time.sleep(options.backoff * 2**attempt)
    raise RemoteError(f"{text} ({options.attempts} attempts, timeout {options.timeout:g} s each)")


def _http_reason(error: BaseException) -> tuple[str, bool]:
    if isinstance(error, urllib.error.HTTPError):
        error.close()
        return _reason(error), error.code in _RETRY_STATUS
    if isinstance(error, (urllib.error.URLError, OSError)):
        return _reason(error), True
    return f"{type(error).__name__}: {error}", False  # a malformed url, an unknown url type ...


def _http(url: str, options: RemoteOptions, method: str = "GET") -> IO[bytes]:
    request = urllib.request.Request(url, method=method, headers={"User-Agent": _USER_AGENT})
    # The timeout bounds the connect and every later socket read of the returned response.
    return _retry(lambda: urllib.request.urlopen(request, timeout=options.timeout), options, _http_reason)


def _fsspec_filesystem(url: str) -> tuple[Any, str] | None:
    """``(filesystem, path)`` for a url fsspec can open, None when fsspec is absent or lacks the scheme."""
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        return None
    if scheme(url) not in fsspec.available_protocols():
        return None
    try:
        return url_to_fs(url)
    except ImportError as error:  # a known protocol whose backend (s3fs, gcsfs ...) is not installed
        raise RemoteError(f"fsspec needs a backend for {scheme(url)}:// urls: {error}") from None
    except Exception as error:
        raise RemoteError(f"fsspec cannot open it: {type(error).__name__}: {error}") from None


def _fsspec_reason(error: BaseException) -> tuple[str, bool]:
    if isinstance(error, FileNotFoundError):
        return "not found", False
    if isinstance(error, PermissionError):
        return f"permission denied ({error})", False
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": "), True


def _gopen(url: str, kind: str) -> IO[bytes]:
    from webdataset.gopen import gopen, gopen_schemes

    if kind != "pipe" and kind not in gopen_schemes:
        raise RemoteError(
            f"no opener for {kind}:// urls (install fsspec and its backend for this scheme, e.g. s3fs for s3://)"
        )
    try:
        return gopen(url, "rb")
    except Exception as error:  # gopen raises many types (IOError, ValueError, subprocess errors)
        raise RemoteError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
