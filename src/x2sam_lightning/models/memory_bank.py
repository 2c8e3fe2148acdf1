"""The mask memory's state: a FIFO bank of the guided features of the last ``capacity`` frames.

The bank is a value, not module state: :class:`~x2sam_lightning.models.mask_memory.MaskMemory` reads it
and returns a new one after each frame, so

- a training clip keeps every entry in the autograd graph (the last frame's loss reaches the first frames'
  memory encoder and features), and nothing leaks from one batch into the next;
- streaming inference carries the bank from one chunk of frames to the next (``detach=True`` drops the
  graph of every pushed entry), and its size never exceeds ``capacity`` entries, whatever the video's
  length.

Frame indices are absolute (``next_frame`` counts the frames pushed since the bank was empty), so the
temporal distance of an entry to the frame being decoded stays right across chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import Tensor


@dataclass(frozen=True)
class MemoryEntry:
    """The guided features of one frame.

    Attributes:
        frame: absolute index of the frame they were encoded from.
        features: one map ``[N, C, h_l, w_l]`` per memory level (``N`` decoding instances).
    """

    frame: int
    features: tuple[Tensor, ...]


@dataclass(frozen=True)
class MemoryBank:
    """FIFO of :class:`MemoryEntry`, oldest first.

    Attributes:
        capacity: most entries kept (``K``); pushing onto a full bank drops the oldest.
        detach: detach pushed features from the autograd graph (bounded streaming inference).
        entries: the kept entries, oldest first.
        next_frame: absolute index of the next frame to be decoded (and pushed).
    """

    capacity: int
    detach: bool = False
    entries: tuple[MemoryEntry, ...] = ()
    next_frame: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"a memory bank holds at least one frame, not capacity={self.capacity}")

    @property
    def is_empty(self) -> bool:
        return not self.entries

    @property
    def num_instances(self) -> int | None:
        """``N`` of the stored features (None while empty)."""
        return int(self.entries[0].features[0].shape[0]) if self.entries else None

    def gaps(self) -> list[int]:
        """Temporal distance of each entry (oldest first) to the frame being decoded, ``>= 1``."""
        return [self.next_frame - entry.frame for entry in self.entries]

    def push(self, features: Sequence[Tensor]) -> MemoryBank:
        """A new bank with ``features`` of frame ``next_frame`` appended (the oldest dropped when full).

        Raises:
            ValueError: the features do not match the stored ones (level count, instances, size).
        """
        features = tuple(f.detach() if self.detach else f for f in features)
        if self.entries:
            stored = self.entries[-1].features
            got = [tuple(f.shape) for f in features]
            want = [tuple(f.shape) for f in stored]
            if got != want:
                raise ValueError(
                    f"memory bank at frame {self.next_frame} holds features of shapes {want} "
                    f"(per level [instances, channels, h, w]); the frame pushed has {got}"
                )
        entries = (*self.entries, MemoryEntry(self.next_frame, features))[-self.capacity :]
        return replace(self, entries=entries, next_frame=self.next_frame + 1)

    def detached(self) -> MemoryBank:
        """The same bank cut from the autograd graph (and detaching whatever is pushed from now on)."""
        entries = tuple(MemoryEntry(e.frame, tuple(f.detach() for f in e.features)) for e in self.entries)
        return replace(self, entries=entries, detach=True)
