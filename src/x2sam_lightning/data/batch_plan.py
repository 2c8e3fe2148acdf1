"""Which samples make up every global training batch: planned from counters, the same in every reader.

A *global batch* is the batch of one training step over all ranks: ``world_size x`` the per-rank batch
size of its source, the same source on every rank (the schedule draws it from a counter-based generator).
The plan of global batch ``i`` is its source and the stream positions (see
:mod:`~x2sam_lightning.data.sample_order`) of its samples, in order; rank ``r`` of ``R`` takes the
``r``-th of ``R`` equal slices. The planner's state is, per source, the next stream position and the
positions waiting for a batch of their clip length (temporal-aware grouping: a batch holds one ``T``);
it is small, saved in checkpoints, and every reader (each DataLoader worker of each rank, and the main
process for the checkpoint) advances its own copy through every batch, so all agree on every batch
without talking to each other. Planning reads nothing for image sources (``T = 1``) and only the json
of each video sample (its frame count gives ``T``).

Consequences (the contract the tests check):

- the samples of global batch ``i`` do not depend on the number of DataLoader workers;
- ``R`` ranks with per-rank batch size ``B`` see at step ``i`` exactly the samples one process sees at
  step ``i`` with batch size ``R x B`` (the union over ranks, in rank order, is that batch), and the
  ranks' samples are disjoint;
- a run resumed from the state saved after batch ``i`` plans batches ``i + 1, ...`` exactly as the
  uninterrupted run: no sample repeated, none skipped. Resuming with another world size continues the
  same per-source sample sequences (positions are counted in samples, not batches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlannedBatch:
    """Global batch ``index``: its ``source`` and the stream positions of its samples (all ranks)."""

    index: int
    source: str
    positions: tuple[int, ...]

    def rank_slice(self, rank: int, world_size: int) -> tuple[int, ...]:
        """The positions rank ``rank`` of ``world_size`` decodes (slot ``rank * B .. (rank + 1) * B``)."""
        size = len(self.positions) // world_size
        return self.positions[rank * size : (rank + 1) * size]


class BatchPlanner:
    """Plans global batches in order from the source schedule and per-source stream counters.

    Args:
        source_at: global batch index -> source name (``SourceSchedule.source_at``).
        global_sizes: source -> samples per global batch (``world_size x`` per-rank batch size).
        clip_length_of: source -> ``(position -> T)`` for sources whose clip length varies (videos);
            sources not in it always have ``T = 1``.
        start: global index of the first batch to plan.
        max_wait_batches: a clip length that stays rare (a few videos shorter than the clip) would hold
            its samples back for ever: once the longest-waiting position of a source has seen this many
            global batches' worth of later positions go by, its group leaves as a smaller batch of its own
            length (a multiple of ``world_size``, so every rank gets a share; None: wait for ever).
            Nothing is padded and nothing is dropped.
        world_size: ranks sharing each global batch.
    """

    def __init__(
        self,
        source_at: Callable[[int], str],
        global_sizes: Mapping[str, int],
        clip_length_of: Mapping[str, Callable[[int], int]] | None = None,
        start: int = 0,
        max_wait_batches: int | None = None,
        world_size: int = 1,
    ) -> None:
        bad = {name: n for name, n in global_sizes.items() if int(n) < 1}
        if bad:
            raise ValueError(f"global batch sizes must be >= 1, got {bad}")
        self.source_at = source_at
        self.global_sizes = {name: int(n) for name, n in global_sizes.items()}
        self.clip_length_of = dict(clip_length_of or {})
        if max_wait_batches is not None and int(max_wait_batches) < 1:
            raise ValueError(f"max_wait_batches must be >= 1 or None, got {max_wait_batches}")
        self.max_wait_batches = None if max_wait_batches is None else int(max_wait_batches)
        self.world_size = int(world_size)
        self.index = int(start)
        self.positions = dict.fromkeys(self.global_sizes, 0)
        self.waiting: dict[str, dict[int, list[int]]] = {name: {} for name in self.global_sizes}
        self.samples = dict.fromkeys(self.global_sizes, 0)  # samples planned per source (for logs)

    def next(self) -> PlannedBatch:
        """Plan the next global batch and advance."""
        name = self.source_at(self.index)
        size = self.global_sizes[name]
        clip_length = self.clip_length_of.get(name)
        if clip_length is None:
            first = self.positions[name]
            positions = tuple(range(first, first + size))
            self.positions[name] = first + size
        else:
            groups = self.waiting[name]
            while True:
                position = self.positions[name]
                self.positions[name] = position + 1
                length = int(clip_length(position))
                group = groups.setdefault(length, [])
                group.append(position)
                if len(group) >= size:  # > only after resuming with a smaller world size
                    positions = self._take(groups, length, size)
                    break
                overdue = self._overdue(groups, position, size)
                if overdue is not None:
                    positions = self._take(
                        groups, overdue, len(groups[overdue]) // self.world_size * self.world_size
                    )
                    break
        batch = PlannedBatch(self.index, name, positions)
        self.index += 1
        self.samples[name] += len(positions)
        return batch

    def _overdue(self, groups: dict[int, list[int]], position: int, size: int) -> int | None:
        """The clip length whose oldest position has waited ``max_wait_batches`` global batches' worth of
        later positions, if its group can be shared by every rank."""
        if self.max_wait_batches is None or not groups:
            return None
        length = min(groups, key=lambda t: groups[t][0])
        waited = position - groups[length][0]
        if waited >= self.max_wait_batches * size and len(groups[length]) >= self.world_size:
            return length
        return None

    @staticmethod
    def _take(groups: dict[int, list[int]], length: int, count: int) -> tuple[int, ...]:
        group = groups[length]
        positions = tuple(group[:count])
        if len(group) == count:
            del groups[length]
        else:
            del group[:count]
        return positions

    def advance_to(self, index: int) -> None:
        """Plan (and drop) batches until the next one to plan is ``index``."""
        if index < self.index:
            raise ValueError(f"the planner is at batch {self.index}; it cannot go back to {index}")
        while self.index < index:
            self.next()

    def state_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "positions": dict(self.positions),
            "waiting": {name: {int(t): list(p) for t, p in g.items()} for name, g in self.waiting.items()},
            "samples": dict(self.samples),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state; sources the state does not know start at position 0."""
        self.index = int(state["index"])
        for name in self.global_sizes:
            self.positions[name] = int(state["positions"].get(name, 0))
            groups = state.get("waiting", {}).get(name, {})
            self.waiting[name] = {int(t): [int(p) for p in g] for t, g in groups.items()}
            self.samples[name] = int(state.get("samples", {}).get(name, 0))
