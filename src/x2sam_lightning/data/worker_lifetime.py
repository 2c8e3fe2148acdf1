"""DataLoader workers that end with their process: none is left behind when a run is killed.

A run killed with SIGKILL cannot stop its DataLoader workers; PyTorch's workers poll for their parent
only between batches, and a worker blocked on its result queue (whose reader died with the parent) waits
for ever, holding its memory. On Linux each worker asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere this is a no-op and PyTorch's own polling remains.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(worker_id: int) -> None:
    """``worker_init_fn``: SIGKILL this worker when the process that started it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here: PyTorch's own parent polling still applies
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def with_parent_death(kwargs: dict[str, Any]) -> dict[str, Any]:
    """DataLoader keyword arguments whose ``worker_init_fn`` also calls :func:`die_with_parent`."""
    user: Callable[[int], None] | None = kwargs.get("worker_init_fn")
    if user is None:
        return {**kwargs, "worker_init_fn": die_with_parent}
    return {**kwargs, "worker_init_fn": _Chained(user)}


class _Chained:
    """Picklable ``worker_init_fn``: :func:`die_with_parent`, then the caller's own."""

    def __init__(self, user: Callable[[int], None]) -> None:
        self.user = user

    def __call__(self, worker_id: int) -> None:
        die_with_parent(worker_id)
        self.user(worker_id)
