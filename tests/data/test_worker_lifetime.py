"""A killed run leaves no DataLoader worker behind (Linux: the workers die with their parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from torch.utils.data import DataLoader, IterableDataset
    from x2sam_lightning.data.worker_lifetime import with_parent_death

    class Forever(IterableDataset):
        def __iter__(self):
            with open(os.path.join(sys.argv[1], str(os.getpid())), "w"):
                pass
            while True:  # a worker that always has a batch to hand over: its queue fills, then it waits
                yield list(range(100_000))

    loader = DataLoader(Forever(), batch_size=None, num_workers=2, **with_parent_death({}))
    batches = iter(loader)  # kept: the workers live as long as the iterator
    next(batches)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for init to reap it counts as gone
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = [int(name) for name in os.listdir(tmp_path)]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a DataLoader worker outlived its killed parent"
