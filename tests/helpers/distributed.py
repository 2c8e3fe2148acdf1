"""Run a function in two CPU processes (gloo) to check metrics reduce across ranks like one process."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        # Both ranks done before either tears the group down: a rank leaving while the other's gloo work
        # (e.g. DDP's last all-reduce) is still in flight aborted the process now and then ("terminate
        # called without an active exception", exit code -6).
        dist.barrier()
        queue.put((rank, result))
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], *args: Any, world_size: int = 2) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes; return the results by rank.

    ``fn`` must be importable (module level) and return picklable values (e.g. floats or tensors).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(rank, world_size, port, fn, args, queue))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        if proc.exitcode != 0:
            raise RuntimeError(f"distributed worker exited with code {proc.exitcode}")
    results = dict(queue.get() for _ in range(world_size))
    return [results[rank] for rank in range(world_size)]
