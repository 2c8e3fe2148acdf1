"""Real local network endpoints for the remote-shard tests: an HTTP file server, a closed port, a server
that accepts connections and never answers."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve_folder(folder: str | Path, handler_class: type = _QuietHandler) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base url."""
    handler = functools.partial(handler_class, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def silent_server() -> Iterator[str]:
    """A listening socket that never accepts: connections succeed (the kernel's backlog), and then
    nothing is ever answered. Yields its base url."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class _NoHeadHandler(_QuietHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - the base class's name
        self.send_error(405, "Method Not Allowed")


def serve_folder_without_head(folder: str | Path):
    """As :func:`serve_folder`, but HEAD requests get 405 (as some object stores and signed urls do)."""
    return serve_folder(folder, _NoHeadHandler)
