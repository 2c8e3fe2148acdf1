"""Typed samples and batches that cross module boundaries.

Images are videos with ``T == 1`` everywhere: every pixel tensor carries a time axis, and every object is
a *track* with one mask per frame. Shapes use ``B`` batch, ``T`` frames, ``N`` objects, ``Q`` queries,
``H, W`` model input size, ``h, w`` mask-prediction size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor


def _move(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, TrackTargets):
        return value.to(device)
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    return value


@dataclass
class TrackTargets:
    """Ground truth of one sample: ``N`` object tracks over ``T`` frames.

    Attributes:
        masks: ``[N, T, H, W]`` bool, at the model input size (padding is False).
        labels: ``[N]`` long, index into the sample's ``categories`` (0 for class-agnostic data).
        valid: ``[N, T]`` bool, False where the shard stores ``null`` (object absent or not annotated).
        object_ids: ``[N]`` long, the ``id`` of each object in the shard json.
        iscrowd: ``[N]`` bool.
    """

    masks: Tensor
    labels: Tensor
    valid: Tensor
    object_ids: Tensor
    iscrowd: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> TrackTargets:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class SegSample:
    """One decoded, resized training example (before collation).

    Attributes:
        pixel_values: ``[T, 3, H, W]`` float32, normalised, padded to ``H x W``.
        targets: the object tracks of this sample.
        image_size: ``(h, w)`` of the un-padded content inside ``H x W``.
        original_size: ``(height, width)`` of the source media.
        key: ``<dataset>/<original id>``, the WebDataset sample key.
        source: name of the data source (as in ``conf/data``) the sample came from.
        task: task id, e.g. ``img_genseg`` or ``vid_refseg``.
        categories: the sample's vocabulary, ``[{"id", "name", "isthing"}]``.
        shard: url of the shard the sample was read from (for error messages).
        meta: the rest of the sample json (expressions, captions, prompts) for later stages.
    """

    pixel_values: Tensor
    targets: TrackTargets
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    key: str
    source: str
    task: str
    categories: list[dict[str, Any]] = field(default_factory=list)
    shard: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegBatch:
    """A collated batch: always one source and one clip length (so ``T`` is shared).

    Attributes:
        pixel_values: ``[B, T, 3, H, W]`` float32.
        targets: ``B`` :class:`TrackTargets` (``N`` differs per sample).
        image_sizes: ``[B, 2]`` long, un-padded ``(h, w)`` per sample.
        original_sizes: ``[B, 2]`` long, source ``(height, width)`` per sample.
        keys, tasks, categories, meta: per-sample lists (see :class:`SegSample`).
        source: the one source every sample of the batch came from.
    """

    pixel_values: Tensor
    targets: list[TrackTargets]
    image_sizes: Tensor
    original_sizes: Tensor
    keys: list[str]
    tasks: list[str]
    source: str
    categories: list[list[dict[str, Any]]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.pixel_values.shape[1])

    @property
    def modality(self) -> str:
        """``"video"`` or ``"image"``, read from the task prefix as the authors' sampler does."""
        return "video" if self.tasks and self.tasks[0].startswith("vid_") else "image"

    def to(self, device: torch.device | str) -> SegBatch:
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})
